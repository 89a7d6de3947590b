"""PSIS-LOO per subject and per observation, and compare_bayes (hierlmm.inference.loo)."""

from __future__ import annotations

import dataclasses
import re
import warnings

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scipy.special import logsumexp
from simulated import simulate

import hierlmm
from hierlmm.errors import DataError, NotSupportedError, ParetoKWarning, SpecError
from hierlmm.inference.loo import compare_bayes, loo

FAST = dict(chains=2, draws=200, tune=200, progressbar=False)
TRUE = "y ~ t + x + (t | id)"  # the model simulate() draws from
WRONG = "y ~ x + (1 | id)"  # no time trend, no random slope
N_SUBJECTS = 100


@pytest.fixture(scope="module")
def data():
    return simulate(7, n_subjects=N_SUBJECTS)


def design_of(formula, data):
    return hierlmm.build_design(hierlmm.model_spec(formula), data)


@pytest.fixture(scope="module")
def fits(data):
    """The true model (with the per-observation log-likelihood) and a wrong one (without it)."""
    return {"true": hierlmm.fit_bayes(design_of(TRUE, data), seed=3, **FAST),
            "wrong": hierlmm.fit_bayes(design_of(WRONG, data), seed=3, pointwise=False, **FAST)}


def test_subject_loo_is_psis_of_the_marginalised_loglik(fits):
    fit = fits["true"]
    result = loo(fit, pointwise=True)
    ll = fit.tree["log_likelihood"]["y_subject"]  # (chain, draw, subject), b integrated out
    S = ll.sizes["chain"] * ll.sizes["draw"]
    flat = ll.values.reshape(S, -1)
    assert result.n_data_points == N_SUBJECTS and result.n_samples == S
    assert list(result.pareto_k["subject"].values) == list(fit.design.blocks[0].levels)
    # in-sample lppd = sum_i log mean_s p(y_i | theta_s); elpd_loo <= lppd and p_loo is their difference
    lppd = float(np.sum(logsumexp(flat, axis=0) - np.log(S)))
    assert result.elpd <= lppd
    assert result.p == pytest.approx(lppd - result.elpd, abs=1e-9)
    # PSIS by hand from ArviZ's smoothing of the weights 1 / p(y_i | theta_s), with the documented r_eff
    # (mean over the posterior's variables of ESS / S)
    ess = fit.tree["posterior"].to_dataset().azstats.ess(method="mean")
    r_eff = np.hstack([ess[v].values.ravel() for v in ess.data_vars]).mean() / S
    log_w, k = ll.azstats.psislw(r_eff=r_eff, dim=["chain", "draw"])
    log_w = log_w.transpose(*ll.dims)  # ArviZ puts the sample dims last
    elpd_i = logsumexp(log_w.values + ll.values, axis=(0, 1))  # normalised log weights
    np.testing.assert_allclose(result.elpd_i.values, elpd_i, atol=1e-10)
    np.testing.assert_allclose(result.pareto_k.values, k.values, atol=1e-12)
    assert result.elpd == pytest.approx(elpd_i.sum(), abs=1e-8)
    assert result.se == pytest.approx(np.sqrt(N_SUBJECTS * np.var(elpd_i, ddof=1)), rel=1e-8)
    # with every k low, plain importance sampling (the harmonic mean of p(y_i | theta_s)) agrees closely
    assert result.pareto_k.values.max() < result.good_k
    raw = float(np.sum(-(logsumexp(-flat, axis=0) - np.log(S))))
    assert abs(raw - result.elpd) < 0.5, (raw, result.elpd)


@pytest.mark.slow
def test_subject_loo_agrees_with_exact_leave_one_subject_out(data, fits):
    """Refit without each of three subjects and predict it: log mean_s N(y_i | X_i beta_s, V_i(s)) against PSIS."""
    design = design_of(TRUE, data)
    full = loo(hierlmm.fit_bayes(design, seed=3, chains=4, draws=1000, tune=500, progressbar=False),
               pointwise=True)
    for subject in ("s0", "s1", "s2"):
        held = data[data["id"] == subject]
        refit = hierlmm.fit_bayes(design_of(TRUE, data[data["id"] != subject]), seed=3, chains=4, draws=1000,
                                  tune=500, progressbar=False)
        X = np.column_stack([np.ones(len(held)), held["t"], held["x"]])
        Z = np.column_stack([np.ones(len(held)), held["t"]])
        beta = refit.tree["posterior"]["beta"].values.reshape(-1, 3)
        D = refit._D_draws()[0]
        sigma = refit.tree["posterior"]["sigma"].values.ravel()
        lp = [scipy.stats.multivariate_normal(X @ b, Z @ d @ Z.T + s**2 * np.eye(len(held))).logpdf(held["y"])
              for b, d, s in zip(beta, D, sigma, strict=True)]
        exact = logsumexp(lp) - np.log(len(lp))
        assert full.elpd_i.sel(subject=subject).item() == pytest.approx(exact, abs=0.03)


def test_observation_level_warns_and_recommends_the_subject_level(fits):
    fit = fits["true"]
    with warnings.catch_warnings():  # the subject level is clean on this fit
        warnings.simplefilter("error")
        loo(fit)
    with pytest.warns(ParetoKWarning, match=r"level='observation'.*use level='subject'") as record:
        result = loo(fit, "observation", pointwise=True)
    assert result.n_data_points == fit.design.n_obs
    message = str(record[0].message)
    high = int(np.sum(result.pareto_k.values > result.good_k))
    assert high > 0 and re.search(rf"\b{high} of {fit.design.n_obs} observations ha(s|ve) Pareto k", message)
    assert "b_i" in message and "importance sampling breaks down" in message
    assert re.search(r"data row \d+ \(id s\d+\)", message)  # the worst ones, named
    # without pointwise the result keeps the totals only
    with pytest.warns(ParetoKWarning):
        short = loo(fit, "observation")
    assert short.elpd_i is None and short.pareto_k is None and short.elpd == pytest.approx(result.elpd)


def test_high_k_at_the_subject_level_names_the_subject(data):
    """One wildly outlying subject: leaving it out changes the posterior a lot, its k is high."""
    outlier = data.copy()
    outlier.loc[outlier["id"] == "s5", "y"] += 40.0
    fit = hierlmm.fit_bayes(design_of("y ~ t + x + (1 | id)", outlier), seed=3, pointwise=False, **FAST)
    with pytest.warns(ParetoKWarning, match=r"level='subject': \d+ of 100 subjects .*s5 \(k = ") as record:
        loo(fit)
    assert "influential" in str(record[0].message)


def test_refusals(data, fits):
    reml = hierlmm.fit_ml(design_of(TRUE, data), "REML")
    with pytest.raises(NotSupportedError, match="aic.*bic.*lrt"):
        loo(reml)
    with pytest.raises(DataError):
        loo(fits["true"].tree)
    with pytest.raises(SpecError, match="level"):
        loo(fits["true"], "patient")
    with pytest.raises(NotSupportedError, match=r"pointwise=True"):
        loo(fits["wrong"], "observation")
    # crossed factors store no per-subject log-likelihood (here: the group removed from a fit's tree)
    tree = fits["true"].tree.copy()
    tree["log_likelihood"] = xr.DataTree(tree["log_likelihood"].to_dataset()[["y"]])
    with pytest.raises(NotSupportedError, match="crossed"):
        loo(dataclasses.replace(fits["true"], tree=tree))


def test_compare_ranks_the_true_model_first(fits):
    table = compare_bayes({"true": fits["true"], "wrong": fits["wrong"]})
    assert list(table.index) == ["true", "wrong"] and table.attrs["level"] == "subject"
    true, wrong = loo(fits["true"], pointwise=True), loo(fits["wrong"], pointwise=True)
    assert table.loc["true", "elpd"] == pytest.approx(true.elpd)
    assert table.loc["wrong", "elpd_diff"] == pytest.approx(wrong.elpd - true.elpd)
    diff = wrong.elpd_i.values - true.elpd_i.values  # paired per subject
    assert table.loc["wrong", "dse"] == pytest.approx(np.sqrt(N_SUBJECTS * np.var(diff)), rel=1e-6)
    assert table.loc["wrong", "elpd_diff"] < -4 * table.loc["wrong", "dse"]
    named = compare_bayes(fits["wrong"], fits["true"])  # unnamed: by formula
    assert named.index[0] == TRUE


@pytest.mark.filterwarnings("ignore:PSIS-LOO.* at level='subject'")  # 400 draws: a subject's k may pass 0.62
def test_every_bayesian_kind(data, fits):
    design = design_of(TRUE, data)
    kinds = {"marginal model": hierlmm.fit_bayes(design, kind="marginal", seed=3, **FAST),
             "corExp": hierlmm.fit_bayes(design, correlation="corExp(form = ~ t | id)", data=data, seed=3, **FAST),
             "joint": hierlmm.fit_bayes(design, sampler="joint", seed=3, **FAST)}
    for name, fit in kinds.items():
        result = loo(fit)
        assert result.n_data_points == N_SUBJECTS and np.isfinite(result.elpd), name
    for name in ("marginal model", "corExp"):
        with pytest.raises(NotSupportedError, match="level='subject'"):
            loo(kinds[name], "observation")
    with pytest.warns(ParetoKWarning, match="level='subject'"):
        assert loo(kinds["joint"], "observation").n_data_points == design.n_obs
    table = compare_bayes({"hierarchical": fits["true"], **kinds})
    assert len(table) == 4
    for name, fit in kinds.items():
        assert table.loc[name, "elpd"] == pytest.approx(loo(fit).elpd)
    # the same model four ways (D is positive definite here): differences below ArviZ's "similar predictions" mark
    assert np.all(np.abs(table["elpd_diff"]) < 4)
    with pytest.raises(NotSupportedError, match="per-observation"):
        compare_bayes(fits["true"], kinds["marginal model"], level="observation")


def test_compare_refuses_fits_of_different_data(data, fits):
    fit = fits["true"]

    def with_design(new_data, formula=TRUE):
        model = dataclasses.replace(fit.bayes_model, design=design_of(formula, new_data))
        return dataclasses.replace(fit, bayes_model=model)

    renamed = data.assign(y2=data["y"])
    with pytest.raises(DataError, match="different responses"):
        compare_bayes(fit, with_design(renamed, "y2 ~ t + x + (t | id)"))
    with pytest.raises(DataError, match="different data rows"):
        compare_bayes(fit, with_design(data[data["id"] != "s0"]))
    with pytest.raises(DataError, match="different values of the response"):
        compare_bayes(fit, with_design(data.assign(y=data["y"] + 1)))
    regrouped = data.assign(patient="p" + data["id"])
    with pytest.raises(DataError, match="different units"):
        compare_bayes(fit, with_design(regrouped, "y ~ t + x + (t | patient)"))
    with pytest.raises(NotSupportedError, match="aic"):
        compare_bayes(fit, hierlmm.fit_ml(fit.design, "REML"))
    with pytest.raises(SpecError, match="two or more"):
        compare_bayes(fit)
    with pytest.raises(SpecError, match="one mapping"):
        compare_bayes({"a": fit}, fits["wrong"])
    with pytest.raises(SpecError, match="level"):
        compare_bayes(fit, fits["wrong"], level="subjects")
