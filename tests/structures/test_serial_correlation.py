"""Serially correlated errors (hierlmm.structures.serial_correlation, hierlmm.engines.reml.correlated_fit)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import MODELS
from simulated import simulate

import hierlmm
from hierlmm.design.subject_batches import subject_batches
from hierlmm.engines.reml.correlated_fit import fit_correlated
from hierlmm.engines.reml.correlated_likelihood import profile
from hierlmm.structures.serial_correlation import TYPES, CorrelationStructure, parse_correlation

MODEL_I = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (1 | patient)"


def test_model_I_with_exponential_correlation_matches_nlme(chapter_data, reference):
    ref = reference("aids_corexp_ri")
    data = chapter_data("aids")
    fit = hierlmm.fit(MODEL_I, data, correlation="corExp(form = ~ obstime | patient)")
    assert fit.converged
    np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], atol=1e-3)
    np.testing.assert_allclose(fit.fixef()["Std.Error"], ref["fixef"]["se"], rtol=1e-3)
    assert list(fit.fixef()["DF"]) == ref["fixef"]["df"]
    assert fit.correlation_parameters["range"] == pytest.approx(ref["range"], rel=5e-5)  # measured 4.9e-6
    np.testing.assert_allclose(fit.correlation_intervals()["range"], ref["range_ci"], rtol=1e-3)  # 4.4e-4
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    assert fit.D[0][0, 0] == pytest.approx(ref["D"]["D"][0][0], rel=1e-3)


def test_cli_correlation_json(tmp_path, chapter_data, reference):
    from hierlmm.cli import main

    chapter_data("aids")
    out = tmp_path / "c.json"
    assert main(["fit", "--data", "aids", "--formula", MODEL_I, "--correlation",
                 "corExp(form = ~ obstime | patient)", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    corr = result["correlation"]
    assert corr["type"] == "corExp" and corr["form"] == "~ obstime | patient"
    assert corr["parameters"]["range"] == pytest.approx(reference("aids_corexp_ri")["range"], rel=5e-5)
    assert len(corr["intervals"]["range"]) == 2


@settings(deadline=None, max_examples=30, database=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(TYPES), nugget=st.booleans())
def test_profiled_likelihood_equals_the_dense_multivariate_normal(seed, kind, nugget):
    nugget = nugget and kind != "corCompSymm"
    structure = CorrelationStructure(kind, None if kind in ("corAR1", "corCompSymm") else "t", "id", nugget)
    data = simulate(seed, n_subjects=8)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (1 | id)"), data)
    batches = subject_batches(design, data, structure)
    rng = np.random.default_rng(seed)
    theta = np.concatenate([rng.normal(0, 0.5, 1), rng.normal(0, 0.7, structure.n_params)])
    if kind == "corGaus":  # a Gaussian correlation with a long range is numerically singular for close times
        theta[1] = rng.uniform(-2.0, -1.0)
    loglik, beta, sigma2, _ = profile(design, batches, structure, theta, reml=False)
    block = design.blocks[0]
    delta = np.exp(theta[0]) ** 2
    dense = 0.0
    for level in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == level)
        times = data["t"].to_numpy()[design.rows[rows]] if structure.time else np.arange(rows.size, dtype=float)
        R = structure.matrix(theta[1:], times, batches.n_max)
        V = sigma2 * (delta * np.ones((rows.size, rows.size)) + R)
        dense += scipy.stats.multivariate_normal(design.X[rows] @ beta, V).logpdf(design.y[rows])
    assert loglik == pytest.approx(dense, rel=1e-9)


def test_structures_are_correlation_matrices():
    times = np.array([0.0, 0.5, 2.0, 6.0])
    for kind in TYPES:
        R = CorrelationStructure(kind, "t", "id").matrix(np.array([0.3]), times, n_max=4)
        np.testing.assert_allclose(np.diag(R), 1.0)
        np.testing.assert_allclose(R, R.T)
        assert np.linalg.eigvalsh(R)[0] > 0
    exp = CorrelationStructure("corExp", "t", "id").matrix(np.array([np.log(2.0)]), times)
    assert exp[0, 2] == pytest.approx(np.exp(-2.0 / 2.0))
    gaus = CorrelationStructure("corGaus", "t", "id", nugget=True).matrix(np.array([np.log(2.0), 0.0]), times)
    assert gaus[0, 1] == pytest.approx(0.5 * np.exp(-0.25 ** 2))  # nugget 0.5 at u = 0


def test_parsing_nlme_syntax_and_its_errors():
    s = parse_correlation("corExp(form = ~ obstime | patient)")
    assert (s.kind, s.time, s.group, s.nugget) == ("corExp", "obstime", "patient", False)
    assert parse_correlation("corGaus(form = ~ t | id, nugget = TRUE)").nugget
    assert parse_correlation("corAR1(form = ~ 1 | id)").time is None
    with pytest.raises(hierlmm.SpecError, match="Unknown correlation"):
        parse_correlation("corSpher(form = ~ t | id)")
    with pytest.raises(hierlmm.SpecError, match="grouping"):
        parse_correlation("corExp(form = ~ t)")
    assert parse_correlation("corAR1(form = ~ 1 | id, nugget = TRUE)").nugget
    assert parse_correlation("corCAR1(form = ~ t | id, nugget = TRUE)").n_params == 2
    with pytest.raises(hierlmm.SpecError, match="cannot have a nugget"):
        parse_correlation("corCompSymm(form = ~ 1 | id, nugget = TRUE)")
    with pytest.raises(hierlmm.SpecError, match="Cannot read"):
        parse_correlation("exp(t)")
    # a structure built directly obeys the parser's rules
    with pytest.raises(hierlmm.SpecError, match="cannot have a nugget"):
        CorrelationStructure("corCompSymm", None, "id", nugget=True)
    with pytest.raises(hierlmm.SpecError, match="needs a time covariate"):
        CorrelationStructure("corExp", None, "id")
    with pytest.raises(hierlmm.SpecError, match="Unknown correlation"):
        CorrelationStructure("corSpher", "t", "id")


def test_grouping_must_match_the_random_effects():
    data = simulate(1, n_subjects=10)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    with pytest.raises(hierlmm.NotSupportedError, match="grouping"):
        fit_correlated(design, data, "corExp(form = ~ t | g)")


def test_model_III_with_gaussian_correlation_says_it_did_not_converge(chapter_data):
    """The chapter: with a Gaussian correlation Model III does not converge; hierlmm says so."""
    formula = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (obstime + I(obstime^2) | patient)"
    with pytest.warns(hierlmm.ConvergenceWarning, match="flat"):
        fit = hierlmm.fit(formula, chapter_data("aids"), correlation="corGaus(form = ~ obstime | patient)")
    assert not fit.converged


def test_model_III_with_exponential_correlation_says_its_hessian_is_not_positive_definite(chapter_data):
    """The chapter: ML struggles with Model III and corExp (phi 0.33, interval (0.02, 5.89)). hierlmm's REML says its
    Hessian is not positive definite, and gives no interval rather than a meaningless one."""
    formula = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (obstime + I(obstime^2) | patient)"
    with pytest.warns(hierlmm.ConvergenceWarning, match="Hessian of the profiled log-likelihood is not positive "
                                                        "definite"):
        fit = hierlmm.fit(formula, chapter_data("aids"), correlation="corExp(form = ~ obstime | patient)")
    assert not fit.converged
    assert fit.cov_theta is None
    assert fit.correlation_intervals() == {}


def test_model_file_with_correlation(tmp_path, chapter_data, reference):

    from hierlmm.cli import main

    chapter_data("aids")
    path = MODELS / "aids_corexp_ri.toml"
    assert hierlmm.load_spec(path).correlation == "corExp(form = ~ obstime | patient)"
    out = tmp_path / "m.json"
    assert main(["fit", str(path), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["loglik"] == pytest.approx(reference("aids_corexp_ri")["logLik"], abs=1e-3)
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nformula = "y ~ t + (1 | id)"\ncorrelation = "corFoo(form = ~ t | id)"\n'
                   '[data]\nname = "x.csv"\n')
    with pytest.raises(hierlmm.SpecError, match="Unknown correlation"):
        hierlmm.load_spec(bad)


def test_missing_times_of_the_correlation_are_reported():
    data = simulate(2, n_subjects=10)
    data["when"] = data["t"]
    data.loc[3, "when"] = np.nan
    with pytest.raises(hierlmm.DataError, match="missing or not numeric in 1 rows the model uses"):
        hierlmm.fit("y ~ t + (1 | id)", data, correlation="corExp(form = ~ when | id)")
    data["when"] = np.where(np.arange(len(data)) == 2, "soon", data["t"].astype(str))  # text: no bare numpy error
    with pytest.raises(hierlmm.DataError, match="missing or not numeric in 1 rows the model uses"):
        hierlmm.fit("y ~ t + (1 | id)", data, correlation="corExp(form = ~ when | id)")


def _with_a_repeated_time(seed: int, integer: bool = False):
    data = simulate(seed, n_subjects=20)
    if integer:  # visits 0, 2, 4, ... (corAR1's integer lags)
        data["t"] = (data.groupby("id").cumcount() * 2).astype(float)
    ids = data["id"].to_numpy()
    j = next(i for i in range(1, len(data)) if ids[i] == ids[i - 1])
    data.loc[j, "t"] = data.loc[j - 1, "t"]
    return data, ids[j]


@pytest.mark.parametrize("kind", ["corExp", "corGaus", "corCAR1", "corAR1"])
def test_rows_at_one_time_need_a_nugget(kind):
    """Without a nugget, two rows at one time are perfectly correlated (R_i singular): refused, naming the subject,
    by REML and NUTS alike; with a nugget they correlate 1 - nugget and the fit goes on."""
    from hierlmm.engines.bayes.correlated_model import build_correlated_bayes_model

    data, subject = _with_a_repeated_time(5, integer=kind == "corAR1")
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    with pytest.raises(hierlmm.DataError, match=f"1 subject has two rows at the same 't' \\(e.g. id {subject} at t = "):
        fit_correlated(design, data, f"{kind}(form = ~ t | id)")
    with pytest.raises(hierlmm.DataError, match="nugget = TRUE"):
        build_correlated_bayes_model(design, data, f"{kind}(form = ~ t | id)")
    structure = parse_correlation(f"{kind}(form = ~ t | id, nugget = TRUE)")
    batches = subject_batches(design, data, structure)
    loglik = profile(design, batches, structure, np.array([0.0, 0.0, 0.0]), reml=True)[0]
    assert np.isfinite(loglik)


def test_ar1_needs_integer_times():
    data = simulate(6, n_subjects=10)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    with pytest.raises(hierlmm.DataError, match="(?s)non-integer values in rows the model uses.*corCAR1"):
        fit_correlated(design, data, "corAR1(form = ~ t | id)")
    from hierlmm.engines.bayes.correlated_model import build_correlated_bayes_model

    with pytest.raises(hierlmm.DataError, match="non-integer values"):
        build_correlated_bayes_model(design, data, "corAR1(form = ~ t | id)")
    data["visit"] = data.groupby("id").cumcount() * 2  # integer times with gaps: lags 2, 4, ...
    fit = hierlmm.fit("y ~ t + (1 | id)", data, correlation="corAR1(form = ~ visit | id)")
    assert np.isfinite(fit.loglik)
