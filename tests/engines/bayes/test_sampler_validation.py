"""Sampler options and priors are checked at the boundary, in one place each (``SamplerOptions``,
``hierlmm.spec.prior_overrides`` + ``hierlmm.engines.bayes.priors.check_priors``): every bad value is a SpecError
naming the option or prior, the value and what is allowed, raised before a model is compiled or a chain is sampled.
No test here runs NUTS: the samplers (and the REML start) are replaced by tripwires."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from simulated import simulate

import hierlmm
from hierlmm.api import fit_bayes
from hierlmm.engines.bayes import bayes_fit, correlated_fit, marginal_model
from hierlmm.engines.bayes.correlated_model import build_correlated_bayes_model
from hierlmm.engines.bayes.priors import check_priors, default_priors, prior_names, with_overrides
from hierlmm.engines.bayes.sampling import SamplerOptions
from hierlmm.errors import SpecError
from hierlmm.spec.prior_overrides import check_prior_overrides

# option, value, words the message must contain
BAD_OPTIONS = [
    ("chains", 0, ["chains", ">= 1", "0 (int)"]),
    ("chains", -2, ["chains", ">= 1"]),
    ("chains", True, ["chains", "True (bool)"]),
    ("chains", 2.0, ["chains", "2.0 (float)", "chains=2"]),
    ("draws", 0, ["draws", ">= 1"]),
    ("draws", -5, ["draws", ">= 1"]),
    ("draws", 2.5, ["draws", "2.5 (float)"]),
    ("draws", 1e3, ["draws", "draws=1000"]),
    ("draws", "100", ["draws", "'100' (str)"]),
    ("tune", -1, ["tune", ">= 0", "None for the engine's default"]),
    ("tune", 10.5, ["tune", "10.5 (float)"]),
    ("cores", 0, ["cores", ">= 1"]),
    ("cores", False, ["cores", "False (bool)"]),
    ("seed", -1, ["seed", "from 0 to 4294967295"]),
    ("seed", 2**32, ["seed", "from 0 to 4294967295"]),
    ("seed", "abc", ["seed", "'abc' (str)"]),
    ("seed", 1.5, ["seed", "1.5 (float)"]),
    ("seed", None, ["seed", "None (NoneType)"]),
    ("target_accept", 1.5, ["target_accept", "strictly between 0 and 1", "1.5"]),
    ("target_accept", 1, ["target_accept", "strictly between 0 and 1"]),
    ("target_accept", 0, ["target_accept", "strictly between 0 and 1"]),
    ("target_accept", -0.2, ["target_accept", "strictly between 0 and 1"]),
    ("target_accept", math.nan, ["target_accept", "nan"]),
    ("target_accept", "0.9", ["target_accept", "'0.9' (str)"]),
    ("target_accept", True, ["target_accept", "True (bool)"]),
    ("progressbar", "yes", ["progressbar", "True or False", "'yes' (str)"]),
    ("progressbar", 1, ["progressbar", "True or False"]),
]


def _message_has(exc: pytest.ExceptionInfo, words: list[str]) -> None:
    text = str(exc.value)
    assert "Given:" in text and "Fix:" in text, text
    for word in words:
        assert word in text, (word, text)


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS)
def test_sampler_options_refuse_bad_values(option, value, words):
    with pytest.raises(SpecError) as exc:
        SamplerOptions(**{option: value})
    _message_has(exc, words)


@pytest.mark.parametrize(("option", "value", "words"), BAD_OPTIONS[:6])
def test_replace_checks_again(option, value, words):
    with pytest.raises(SpecError) as exc:
        dataclasses.replace(SamplerOptions(), **{option: value})
    _message_has(exc, words)


def test_good_values_are_normalised():
    options = SamplerOptions(chains=np.int64(3), draws=np.int32(10), tune=0, cores=1, seed=2**32 - 1,
                             target_accept=np.float32(0.95), progressbar=np.bool_(False))
    assert (options.chains, options.draws, options.tune, options.seed) == (3, 10, 0, 2**32 - 1)
    assert type(options.chains) is int and type(options.draws) is int
    assert type(options.target_accept) is float and options.target_accept == pytest.approx(0.95)
    assert options.progressbar is False
    assert SamplerOptions().tune is None and SamplerOptions().with_default_tune(1000).tune == 1000


@pytest.fixture
def design():
    return hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), simulate(7, n_subjects=12))


@pytest.fixture
def intercept_design():
    return hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), simulate(7, n_subjects=12))


@pytest.fixture
def no_sampling(monkeypatch):
    """Every sampler and the REML start become tripwires: a refusal must come before them."""

    def tripwire(*args, **kwargs):
        raise AssertionError("sampling (or the REML start) was reached")

    monkeypatch.setattr(bayes_fit, "sample_posterior", tripwire)
    monkeypatch.setattr(bayes_fit, "_reml_start", tripwire)
    monkeypatch.setattr(bayes_fit.pm, "sample", tripwire)
    monkeypatch.setattr(marginal_model, "sample_posterior", tripwire)
    monkeypatch.setattr(correlated_fit, "sample_posterior", tripwire)
    monkeypatch.setattr(correlated_fit, "_reml", tripwire)


@pytest.mark.parametrize("route", ["marginal", "joint", "kind=marginal", "correlation"])
@pytest.mark.parametrize(("option", "value", "words"), [BAD_OPTIONS[0], BAD_OPTIONS[5], BAD_OPTIONS[13],
                                                        BAD_OPTIONS[16], BAD_OPTIONS[18], BAD_OPTIONS[25]])
def test_fit_bayes_refuses_options_before_sampling(design, no_sampling, route, option, value, words):
    data = simulate(7, n_subjects=12)
    extra = {"sampler": "joint"} if route == "joint" else {"kind": "marginal"} if route == "kind=marginal" else \
        {"correlation": "corExp(form = ~ t | id)", "data": data} if route == "correlation" else {}
    with pytest.raises(SpecError) as exc:
        fit_bayes(design, **{option: value}, **extra)
    _message_has(exc, words)


def test_the_engines_drivers_check_their_keywords_too(design, no_sampling):
    with pytest.raises(SpecError, match="chains"):
        marginal_model.fit_bayes_marginal(design, chains=0)
    with pytest.raises(SpecError, match="draws"):
        correlated_fit.fit_bayes_correlated(design, simulate(7, n_subjects=12), "corExp(form = ~ t | id)", draws=-1)
    with pytest.raises(SpecError, match="twice"):
        fit_bayes(design, options=SamplerOptions(), chains=2)


# priors: (overrides, words); the design has fixed effects (Intercept), t, x and a full (t | id) block
BAD_PRIORS = [
    ({"sigma": math.inf}, ["sigma", "finite positive number", "inf (float)"]),
    ({"sigma": math.nan}, ["sigma", "finite positive number", "nan"]),
    ({"sigma": -1.0}, ["sigma", "finite positive number"]),
    ({"sigma": 0}, ["sigma", "finite positive number"]),
    ({"sigma": "3"}, ["sigma", "'3' (str)", "positive number"]),
    ({"sigma": True}, ["sigma", "True (bool)"]),
    ({"sigma": [1.0]}, ["sigma", "positive number"]),
    ({"beta": "x"}, ["'beta'", "must be a table", "{fixed effect: [mean, sd]}"]),
    ({"beta": 2.5}, ["'beta'", "must be a table, not a float"]),
    ({"beta": {"t": 1.0}}, ["beta[t]", "pair of numbers"]),
    ({"beta": {"t": "01"}}, ["beta[t]", "pair of numbers", "'01' (str)"]),
    ({"beta": {"t": (0, 1, 2)}}, ["beta[t]", "pair of numbers"]),
    ({"beta": {"t": (0, math.inf)}}, ["beta[t] sd", "finite positive"]),
    ({"beta": {"t": (0, -1)}}, ["beta[t] sd", "finite positive"]),
    ({"beta": {"t": (math.nan, 1)}}, ["beta[t] mean", "finite number"]),
    ({"beta": {"nope": (0, 1)}}, ["No fixed effect 'nope'", "(Intercept)"]),
    ({"sd": 2.5}, ["'sd'", "must be a table, not a float", "factor:effect"]),
    ({"sd": "id"}, ["'sd'", "must be a table, not a str"]),
    ({"sd": {"id": math.inf}}, ["sd[id]", "finite positive"]),
    ({"sd": {"id:t": -0.5}}, ["sd[id:t]", "finite positive"]),
    ({"sd": {"id": []}}, ["sd[id]", "no scales"]),
    ({"sd": {"id": [1, 2, 3]}}, ["sd[id]", "1 or 2 scales"]),
    ({"sd": {"id:t": [1.0]}}, ["sd[id:t]", "a number, not a list"]),
    ({"sd": {"g": 1.0}}, ["No grouping factor", "sd[g]", "['id']"]),
    ({"sd": {"id:u": 1.0}}, ["No random effect 'u'", "(Intercept)"]),
    ({"lkj_eta": 0}, ["lkj_eta", "finite positive"]),
    ({"lkj_eta": math.inf}, ["lkj_eta", "finite positive"]),
    ({"lkj_eta": "2"}, ["lkj_eta", "'2' (str)"]),
    ({"lkj_eta": {"g": 2.0}}, ["No full (pdSymm) block 'g'", "['id']"]),
    ({"lkj_eta": {"id": -2.0}}, ["lkj_eta[id]", "finite positive"]),
    ({"tau": 1.0}, ["Unknown prior(s) ['tau']", "beta, sigma, sd, lkj_eta, range, nugget, rho"]),
    ({"range": (4.0, 1.5)}, ["Unknown prior(s) ['range'] for this model", "no", "beta, sigma, sd, lkj_eta"]),
    ("sigma = 3", ["must be a table of prior names", "'sigma = 3' (str)"]),
    ({1: 2.0}, ["Unknown prior(s) ['1']"]),
]


@pytest.mark.parametrize(("overrides", "words"), BAD_PRIORS)
def test_priors_refuse_bad_values_and_names(design, overrides, words):
    with pytest.raises(SpecError) as exc:
        with_overrides(default_priors(design), design, overrides)
    _message_has(exc, words)


def test_lkj_eta_without_correlated_random_effects_is_refused(intercept_design):
    assert prior_names(intercept_design) == ("beta", "sigma", "sd")
    with pytest.raises(SpecError) as exc:
        check_priors(intercept_design, {"lkj_eta": 2.0})
    _message_has(exc, ["Unknown prior(s) ['lkj_eta']", "LKJ prior of correlated random effects", "this model has none",
                       "beta, sigma, sd"])
    pd_diag = hierlmm.build_design(hierlmm.model_spec("y ~ t", random={"id": hierlmm.pdDiag("~ t")}),
                                   simulate(7, n_subjects=12))
    with pytest.raises(SpecError, match="lkj_eta"):
        check_priors(pd_diag, {"lkj_eta": 2.0})


def test_the_marginal_model_takes_beta_and_sigma_only(design):
    assert prior_names(design, kind="marginal") == ("beta", "sigma")
    for overrides in ({"sd": {"id": 1.0}}, {"lkj_eta": 2.0}):
        with pytest.raises(SpecError) as exc:
            check_priors(design, overrides, kind="marginal")
        _message_has(exc, ["Unknown prior(s)", "marginal model's D has fixed", "beta, sigma"])


def test_correlation_priors_depend_on_the_structure(design):
    assert prior_names(design, correlation="corExp(form = ~ t | id)")[-1] == "range"
    assert prior_names(design, correlation="corAR1(form = ~ 1 | id)")[-1] == "rho"
    assert prior_names(design, correlation="corExp(form = ~ t | id, nugget = TRUE)")[-2:] == ("range", "nugget")
    with pytest.raises(SpecError) as exc:
        check_priors(design, {"rho": (2, 2)}, correlation="corExp(form = ~ t | id)")
    _message_has(exc, ["Unknown prior(s) ['rho']", "only those of this model's structure", "range"])
    with pytest.raises(SpecError, match="nugget"):
        check_priors(design, {"nugget": (2, 2)}, correlation="corExp(form = ~ t | id)")
    data = simulate(7, n_subjects=12)
    for overrides, word in [({"range": (math.inf, 1.0)}, "range median"), ({"range": (4.0, 0)}, "range log_sd"),
                            ({"nugget": (2, math.nan)}, "nugget b"), ({"range": "4"}, "pair of numbers")]:
        text = "corExp(form = ~ t | id, nugget = TRUE)"
        with pytest.raises(SpecError, match=word):
            build_correlated_bayes_model(design, data, text, priors=overrides)


def test_good_priors_are_normalised_and_applied(design):
    table = check_prior_overrides({"beta": {"t": np.array([0, 1])}, "sd": {"id": [1, 2]}, "sigma": np.float32(2),
                                   "lkj_eta": {"id": 3}})
    assert table == {"beta": {"t": [0.0, 1.0]}, "sd": {"id": [1.0, 2.0]}, "sigma": 2.0, "lkj_eta": {"id": 3.0}}
    assert check_prior_overrides(None) is None and check_prior_overrides({}) is None
    new = with_overrides(default_priors(design), design, table)
    assert new.beta_sigma[1] == 1.0 and new.sd_scale["id"] == (1.0, 2.0) and new.lkj_eta == {"id": 3.0}


@pytest.mark.parametrize("route", ["marginal", "joint", "kind=marginal", "correlation"])
def test_fit_bayes_refuses_priors_before_any_work(design, no_sampling, route):
    data = simulate(7, n_subjects=12)
    extra = {"sampler": "joint"} if route == "joint" else {"kind": "marginal"} if route == "kind=marginal" else \
        {"correlation": "corExp(form = ~ t | id)", "data": data} if route == "correlation" else {}
    with pytest.raises(SpecError, match="sigma"):
        fit_bayes(design, priors={"sigma": math.inf}, **extra)
    with pytest.raises(SpecError, match="No fixed effect"):
        fit_bayes(design, priors={"beta": {"z": (0, 1)}}, **extra)
