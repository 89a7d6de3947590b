"""Every kind of fit through the whole interface (hierlmm.FitResult, hierlmm.BayesResult): plain, ML, nested, crossed,
serially correlated, heteroscedastic, marginal model by REML; hierarchical, correlated and marginal model by NUTS.

Each quantity is checked against what it must equal (AIC from logLik, fitted values from beta and the random effects,
predictions on training rows against fitted values, the JSON contract against the fit), and every refusal is a
hierlmm error that says why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from simulated import every_kind

import hierlmm
import hierlmm.engines.reml.refit
from hierlmm.report.summaries import to_dict

FIXED = "y ~ t + x"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return every_kind()


REML_KINDS = {
    "plain": lambda d, f=FIXED: hierlmm.fit(f"{f} + (t | id)", d),
    "ml": lambda d, f=FIXED: hierlmm.fit(f"{f} + (t | id)", d, method="ML"),
    "nested": lambda d, f=FIXED: hierlmm.fit(f"{f} + (1 | id/eye)", d),
    "crossed": lambda d, f=FIXED: hierlmm.fit(f"{f} + (1 | id) + (1 | rater)", d),
    "correlated": lambda d, f=FIXED: hierlmm.fit(f"{f} + (1 | id)", d, correlation="corExp(form = ~ t | id)"),
    "heteroscedastic": lambda d, f=FIXED: hierlmm.fit(f"{f} + (t | id)", d, weights="varIdent(form = ~ 1 | g)"),
    "marginal": lambda d, f=FIXED: hierlmm.fit(f"{f} + (t | id)", d, kind="marginal"),
}
FAST = {"chains": 2, "draws": 150, "tune": 150, "progressbar": False, "seed": 3}
BAYES_KINDS = {
    "hierarchical": lambda d: hierlmm.fit_bayes(_design(d, f"{FIXED} + (t | id)"), **FAST),
    "correlated": lambda d: hierlmm.fit_bayes(_design(d, f"{FIXED} + (1 | id)"), data=d,
                                              correlation="corExp(form = ~ t | id)", **FAST),
    "marginal": lambda d: hierlmm.fit_bayes(_design(d, f"{FIXED} + (t | id)"), kind="marginal", **FAST),
}


def _design(d: pd.DataFrame, formula: str) -> hierlmm.Design:
    return hierlmm.build_design(hierlmm.model_spec(formula), d)


def _quiet(make, d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(d)


@pytest.fixture(scope="module", params=list(REML_KINDS))
def reml_fit(request, data):
    return request.param, _quiet(REML_KINDS[request.param], data)


@pytest.fixture(scope="module", params=list(BAYES_KINDS))
def bayes_fit(request, data):
    return request.param, _quiet(BAYES_KINDS[request.param], data)


def _zb(fit, design: hierlmm.Design) -> np.ndarray:
    """Every block's Z b on the training rows, from ranef() (means: a DataFrame or the ML ``.mean``)."""
    out = np.zeros(design.n_obs)
    for block, effects in zip(design.blocks, fit.ranef().values(), strict=True):
        frame = effects.mean if hasattr(effects, "mean") and isinstance(effects.mean, pd.DataFrame) else effects
        if isinstance(frame.columns, pd.MultiIndex):  # a posterior table: (effect, statistic)
            frame = frame.xs("mean", axis=1, level=1)
        b = frame.loc[list(block.levels), list(block.effect_names)].to_numpy()
        out += np.einsum("nq,nq->n", block.Z, b[block.group_index])
    return out


def test_reml_interface(reml_fit, data):
    name, fit = reml_fit
    design = fit.design
    assert isinstance(fit, hierlmm.FitResult)
    assert fit.method == ("ML" if name == "ml" else "REML")
    assert fit.kind == ("marginal" if name == "marginal" else "hierarchical")
    p = design.p
    assert fit.beta.shape == (p,) and fit.cov_beta.shape == (p, p)
    np.testing.assert_allclose(fit.cov_beta, fit.cov_beta.T, rtol=1e-10, atol=1e-14)
    assert isinstance(fit.D, tuple) and len(fit.D) == len(design.blocks)
    for block, D in zip(design.blocks, fit.D, strict=True):
        assert D.shape == (block.q, block.q)
        np.testing.assert_allclose(D, D.T, atol=1e-12)
    assert fit.sigma > 0 and math.isfinite(fit.loglik)
    assert isinstance(fit.converged, bool)
    k = fit.n_params
    n = design.n_obs - (p if fit.method == "REML" else 0)
    assert fit.aic == pytest.approx(-2 * fit.loglik + 2 * k, rel=1e-12)
    assert fit.bic == pytest.approx(-2 * fit.loglik + np.log(n) * k, rel=1e-12)

    table = fit.fixef()
    assert list(table.columns) == ["Value", "Std.Error", "DF", "t-value", "p-value"]
    assert list(table.index) == list(design.fixef_names)
    np.testing.assert_allclose(table["Value"], fit.beta)
    np.testing.assert_allclose(table["Std.Error"], np.sqrt(np.diag(fit.cov_beta)))

    vc = fit.varcorr()
    assert list(vc) == [b.factor for b in design.blocks] + ["Residual"]
    for block, D in zip(design.blocks, fit.D, strict=True):
        np.testing.assert_allclose(vc[block.factor]["Variance"], np.diag(D))
    assert vc["Residual"]["StdDev"].iloc[0] == pytest.approx(fit.sigma)

    np.testing.assert_allclose(fit.fitted(0), design.X @ fit.beta)
    np.testing.assert_allclose(fit.residuals(0), design.y - design.X @ fit.beta)
    rows = data.iloc[design.rows[:9]]
    population = hierlmm.predict(fit, rows, level=0)
    np.testing.assert_allclose(population["fit"], fit.fitted(0)[:9])
    assert (population["lower"] < population["fit"]).all() and (population["fit"] < population["upper"]).all()
    new_outcome = hierlmm.predict(fit, rows, level=0, interval="prediction")
    assert (new_outcome["y_se"] > population["se"]).all()
    with pytest.raises(hierlmm.DataError, match="level"):
        fit.fitted(2)

    if name == "marginal":
        for call in (fit.ranef, lambda: fit.fitted(1), lambda: fit.residuals(1),
                     lambda: hierlmm.predict(fit, rows, level=1)):
            with pytest.raises(hierlmm.NotSupportedError, match="no random effects"):
                call()
    else:
        ranef = fit.ranef()
        assert list(ranef) == [b.factor for b in design.blocks]
        for block, effects in zip(design.blocks, ranef.values(), strict=True):
            assert effects.mean.shape == (block.n_levels, block.q)
            assert list(effects.mean.index) == list(block.levels)
            # the prediction-error covariance is a covariance, and no larger than D
            assert np.linalg.eigvalsh(effects.cov_prediction).min() > -1e-8
        np.testing.assert_allclose(fit.fitted(1), design.X @ fit.beta + _zb(fit, design), atol=1e-10)
        np.testing.assert_allclose(fit.residuals(1), design.y - fit.fitted(1))
        subject = hierlmm.predict(fit, rows, level=1)
        np.testing.assert_allclose(subject["fit"], fit.fitted(1)[:9], atol=1e-10)
        assert (subject["lower"] < subject["fit"]).all() and (subject["se"] > 0).all()
        history = data if name == "correlated" else None  # new outcomes condition on the past errors: their times
        later = rows.assign(t=rows["t"] + 0.37)  # (at an observed time, a new outcome is the observed one)
        outcome = hierlmm.predict(fit, later, level=1, interval="prediction", history=history)
        np.testing.assert_allclose(outcome["fit"], hierlmm.predict(fit, later, level=1)["fit"], atol=1e-8)
        assert (outcome["y_se"] > 0).all() and (outcome["lower"] < outcome["y_fit"]).all()


def test_reml_summary_and_json(reml_fit):
    name, fit = reml_fit
    text = fit.summary("simulated")
    assert text == hierlmm.summary(fit, "simulated")
    assert "AIC" in text and "BIC" in text and f"{fit.aic:10.3f}" in text and f"{fit.bic:10.3f}" in text
    assert ("D (grouping" if name == "marginal" else "Random effects:") in text
    assert "Fixed effects:" in text and "Data: simulated" in text
    if name == "correlated":
        assert "Correlation Structure: Exponential spatial correlation" in text and "range" in text
    if name == "heteroscedastic":
        assert "Variance function:" in text
    out = json.loads(json.dumps(to_dict(fit), default=float))
    assert out["aic"] == pytest.approx(fit.aic) and out["bic"] == pytest.approx(fit.bic)
    assert out["loglik"] == pytest.approx(fit.loglik) and out["kind"] == fit.kind
    assert list(out["random"]) == [b.factor for b in fit.design.blocks]
    np.testing.assert_allclose(out["random"][fit.design.blocks[0].factor]["cov"], fit.D[0])
    np.testing.assert_allclose(out["fixef"]["estimate"], fit.beta)
    if name == "marginal":
        assert out["ranef"] is None and out["min_eigen_D"] == pytest.approx(fit.min_eigen_D)
    else:
        first = fit.design.blocks[0]
        np.testing.assert_allclose(out["ranef"][first.factor]["mean"], fit.ranef()[first.factor].mean.to_numpy())


def test_bayes_interface(bayes_fit, data):
    name, fit = bayes_fit
    design = fit.design
    assert isinstance(fit, hierlmm.BayesResult)
    assert fit.method == "NUTS" and fit.kind == ("marginal" if name == "marginal" else "hierarchical")
    post = fit.tree["posterior"]
    beta_draws = post["beta"].values.reshape(-1, design.p)
    np.testing.assert_allclose(fit.beta, beta_draws.mean(axis=0))
    np.testing.assert_allclose(fit.cov_beta, np.cov(beta_draws, rowvar=False))
    np.testing.assert_allclose(fit.fixef()["mean"], fit.beta, rtol=1e-10)
    assert fit.sigma == pytest.approx(float(post["sigma"].values.mean()))
    assert isinstance(fit.D, tuple) and len(fit.D) == len(design.blocks)
    sd_rows = [i for i in fit.varcorr().index if i.startswith(("sd[", "D["))]
    assert sd_rows
    if name != "marginal":  # posterior mean of D against the posterior mean of each SD squared plus its variance
        block = design.blocks[0]
        sd = post[f"sd_{block.factor}"].values.reshape(-1, block.q)
        np.testing.assert_allclose(np.diag(fit.D[0]), (sd**2).mean(axis=0), rtol=1e-8)
    for attribute in ("loglik", "aic", "bic"):
        with pytest.raises(hierlmm.NotSupportedError, match="posterior"):
            getattr(fit, attribute)
    np.testing.assert_allclose(fit.fitted(0), design.X @ fit.beta)
    rows = data.iloc[design.rows[:9]]
    prediction = hierlmm.predict(fit, rows, level=0, ci_prob=0.9)
    np.testing.assert_allclose(prediction["fit"], fit.fitted(0)[:9], rtol=1e-10)
    assert (prediction["lower"] <= prediction["fit"]).all() and (prediction["fit"] <= prediction["upper"]).all()
    assert isinstance(fit.summary(), pd.DataFrame) and "Bayesian" in hierlmm.summary(fit)
    if name == "marginal":
        for call in (fit.ranef, lambda: fit.fitted(1), lambda: hierlmm.predict(fit, rows, level=1)):
            with pytest.raises(hierlmm.NotSupportedError, match="no random effects"):
                call()
    else:
        np.testing.assert_allclose(fit.fitted(1), design.X @ fit.beta + _zb(fit, design), atol=1e-10)
        np.testing.assert_allclose(fit.residuals(1), design.y - fit.fitted(1))
        np.testing.assert_allclose(hierlmm.predict(fit, rows, level=1)["fit"], fit.fitted(1)[:9], atol=1e-8)
        history = data if name == "correlated" else None
        outcome = hierlmm.predict(fit, rows, level=1, interval="prediction", history=history)
        assert outcome.draws["predictions"]["y"].shape[-1] == len(rows) and (outcome["y_sd"] > 0).all()


def test_summary_refuses_what_is_not_a_fit():
    with pytest.raises(hierlmm.SpecError, match="takes a hierlmm fit"):
        hierlmm.summary(object())
    with pytest.raises(hierlmm.SpecError, match="takes a hierlmm fit"):
        hierlmm.predict(object(), pd.DataFrame())


def test_varcorr_of_boundary_and_indefinite_d(data):
    """varcorr: a 0 SD has correlation 0 (as nlme prints it); a negative variance (the marginal model) has no SD."""
    fit = _quiet(REML_KINDS["marginal"], data)
    for D, sd, corr in (
        (np.array([[4.0, 0.0], [0.0, 0.0]]), [2.0, 0.0], 0.0),
        (np.array([[4.0, -0.3], [-0.3, -0.25]]), [2.0, np.nan], np.nan),
        (np.array([[4.0, 0.5], [0.5, 0.25]]), [2.0, 0.5], 0.5),
    ):
        table = dataclasses.replace(fit, D=(D,)).varcorr()["id"]
        np.testing.assert_allclose(table["Variance"], np.diag(D))
        np.testing.assert_allclose(table["StdDev"], sd)
        np.testing.assert_allclose(table.iloc[1, 2], corr)
        assert table.iloc[0, 2] == 1.0


def test_fit_refuses_an_unknown_kind_for_every_engine(data):
    for formula in (f"{FIXED} + (t | id)", f"{FIXED} + (1 | id) + (1 | rater)"):
        with pytest.raises(hierlmm.SpecError, match="Unknown kind"):
            hierlmm.fit(formula, data, kind="marginl")
    design = _design(data, f"{FIXED} + (1 | id)")
    with pytest.raises(hierlmm.SpecError, match="need the data"):
        hierlmm.fit_design(design, correlation="corExp(form = ~ t | id)")


def test_model_building_on_every_reml_kind(reml_fit, data):
    """F tests (three DF rules), the ML-refit likelihood-ratio test of a fixed effect, and simulate(), on every kind."""
    name, fit = reml_fit
    terms = ["(Intercept)", "t", "x"]
    for ddf in ("nlme", "satterthwaite", "kenward-roger"):
        if ddf == "kenward-roger" and fit.method == "ML":
            with pytest.raises(hierlmm.NotSupportedError, match="REML"):
                hierlmm.anova(fit, ddf=ddf)
            continue
        table = hierlmm.anova(fit, type="marginal", ddf=ddf)
        assert list(table.index) == terms
        t = fit.fixef(ddf=ddf)
        # a one-column term's marginal F test is its two-sided t test
        np.testing.assert_allclose(table["F-value"], t["t-value"] ** 2, rtol=1e-8)
        np.testing.assert_allclose(table["p-value"], t["p-value"], rtol=1e-6)
    smaller = _quiet(lambda d: REML_KINDS[name](d, "y ~ t"), data)
    test = hierlmm.lrt(smaller, fit)  # fixed effects differ: REML fits are refitted by ML, and it says so
    assert test.df == 1 and test.method == "ML" and test.refitted == (fit.method == "REML")
    assert test.loglik[1] == pytest.approx(hierlmm.engines.reml.refit.refit(fit, method="ML").loglik, abs=1e-6)
    assert test.statistic == pytest.approx(2 * (test.loglik[1] - test.loglik[0]), abs=1e-8)
    assert test.p_value == pytest.approx(scipy.stats.chi2.sf(test.statistic, 1), rel=1e-10)
    if fit.method == "REML":
        with pytest.raises(hierlmm.SpecError, match="REML"):
            hierlmm.lrt(smaller, fit, refit=False)
    draws = hierlmm.simulate(fit, nsim=400, seed=5)
    assert draws.shape == (400, fit.design.n_obs)
    np.testing.assert_array_equal(draws, hierlmm.simulate(fit, nsim=400, seed=5))  # the seed fixes the draws
    # the draws' mean is X beta, to Monte Carlo error (the rows' SDs from the draws themselves)
    z = (draws.mean(axis=0) - fit.fitted(0)) / (draws.std(axis=0) / np.sqrt(400))
    assert np.max(np.abs(z)) < 5.5


def test_model_building_on_every_bayes_kind(bayes_fit):
    """LOO per subject, contrast posteriors and variance components on every Bayesian kind; F tests and LRTs are
    refused with the reason."""
    name, fit = bayes_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hierlmm.ParetoKWarning)
        result = hierlmm.loo(fit)
    assert result.elpd < 0 and result.n_data_points == fit.design.blocks[0].n_levels
    table = hierlmm.contrast(fit, {"t + x": {"t": 1.0, "x": 1.0}})
    assert table["mean"].iloc[0] == pytest.approx(fit.beta[1] + fit.beta[2], rel=1e-10)
    components = hierlmm.variance_components(fit, prior_draws=300)
    assert len(components) >= 1
    refused = (lambda: hierlmm.anova(fit), lambda: hierlmm.lrt(fit),
               lambda: hierlmm.compare_models(fit, fit, null="mixture"))
    for call in refused:
        with pytest.raises(hierlmm.HierlmmError):
            call()
    assert hierlmm.simulate(fit, nsim=2, seed=1).shape == (2, fit.design.n_obs)
