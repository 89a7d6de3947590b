"""Correlation structures beyond the chapter's corExp, against nlme 3.1-162 (tests/fixtures/correlation_reference.json,
made by tests/fixtures/make_correlation_reference.R): nuggets, corAR1, and the identities that tie corCAR1 and
corAR1 with a nugget (which nlme lacks) to corExp with one."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from paths import FIXTURES

import hierlmm
from hierlmm.design.subject_batches import subject_batches
from hierlmm.engines.reml.correlated_likelihood import profile
from hierlmm.engines.reml.finite_differences import central_hessian
from hierlmm.structures.serial_correlation import parse_correlation

REFERENCE = json.loads((FIXTURES / "correlation_reference.json").read_text())
MODEL_I = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (1 | patient)"


def _fit(data, correlation: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary fits (corExp with a nugget: D -> 0) warn, as they should
        return hierlmm.fit(MODEL_I, data, correlation=correlation)


def test_gaussian_correlation_with_a_nugget_matches_nlme(chapter_data):
    ref = REFERENCE["aids_corgaus_nugget_ri"]
    fit = _fit(chapter_data("aids"), "corGaus(form = ~ obstime | patient, nugget = TRUE)")
    assert fit.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], atol=1e-3)
    np.testing.assert_allclose(fit.fixef()["Std.Error"], ref["fixef"]["se"], rtol=1e-3)
    assert fit.correlation_parameters["range"] == pytest.approx(ref["range"], rel=1e-3)
    assert fit.correlation_parameters["nugget"] == pytest.approx(ref["nugget"], rel=1e-3)
    assert fit.D[0][0, 0] == pytest.approx(ref["D"][0][0], rel=1e-3)
    intervals = fit.correlation_intervals()  # nlme's with .relStep = 1e-4 (its default step is too small here)
    np.testing.assert_allclose(intervals["range"], ref["range_ci"], rtol=1e-2)  # measured 4.9e-3 (nlme's fdHess)
    np.testing.assert_allclose(intervals["nugget"], ref["nugget_ci"], rtol=1e-2)  # measured 4.7e-3


def test_interval_standard_errors_are_those_of_the_exact_reml_hessian(chapter_data):
    """hierlmm profiles sigma out; the Hessian of the full REML log-likelihood in nlme's parameters (log sd, log
    range, logit nugget, log sigma), by finite differences at two steps, gives the same standard errors (nlme's
    default fdHess step gives ~10% smaller ones here: the fixture records both of nlme's)."""
    fit = _fit(chapter_data("aids"), "corGaus(form = ~ obstime | patient, nugget = TRUE)")
    n_minus_p = fit.design.n_obs - fit.design.p

    def negative_reml(x: np.ndarray) -> float:
        log_sd, u_range, u_nugget, log_sigma = x
        loglik, _, sigma2_hat, _ = profile(fit.design, fit.batches, fit.structure,
                                           np.array([log_sd - log_sigma, u_range, u_nugget]), True)
        ratio = sigma2_hat / np.exp(2 * log_sigma)
        return -(loglik + 0.5 * n_minus_p * (np.log(ratio) + 1 - ratio))

    theta = fit.theta
    x = np.array([theta[0] + np.log(fit.sigma), theta[1], theta[2], np.log(fit.sigma)])
    for h in (1e-3, 1e-4):
        se = np.sqrt(np.diag(np.linalg.inv(central_hessian(negative_reml, x, h=h))))
        np.testing.assert_allclose(se[1:3], np.sqrt(np.diag(fit.cov_theta))[1:3], rtol=2e-3)


def test_exponential_correlation_with_a_nugget_matches_nlme(chapter_data):
    """A boundary fit (D -> 0: the long-range correlation takes the random intercepts' place), as in nlme."""
    ref = REFERENCE["aids_corexp_nugget_ri"]
    fit = _fit(chapter_data("aids"), "corExp(form = ~ obstime | patient, nugget = TRUE)")
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], atol=1e-3)
    assert fit.correlation_parameters["range"] == pytest.approx(ref["range"], rel=2e-5)  # measured 1.2e-6
    assert fit.correlation_parameters["nugget"] == pytest.approx(ref["nugget"], rel=1e-5)  # measured 9.5e-7
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)


def test_car1_and_ar1_with_a_nugget_are_corexp_with_one(chapter_data):
    """phi = exp(-1 / range): the same profiled likelihood at every parameter (corAR1 at the integer times 0, 2, 6,
    12, 18), and fits that reach nlme's corExp-with-nugget maximum."""
    data = chapter_data("aids")
    design = hierlmm.build_design(hierlmm.model_spec(MODEL_I), data)
    structures = {kind: parse_correlation(f"{kind}(form = ~ obstime | patient, nugget = TRUE)")
                  for kind in ("corExp", "corCAR1", "corAR1")}
    batches = subject_batches(design, data, structures["corExp"])
    rng = np.random.default_rng(7)
    for _ in range(5):
        log_delta, log_range, u_nugget = rng.normal(0, 0.5), rng.uniform(-1.0, 2.0), rng.normal(0, 1.0)
        phi = np.exp(-np.exp(-log_range))
        thetas = {"corExp": [log_delta, log_range, u_nugget],
                  "corCAR1": [log_delta, np.log(phi / (1 - phi)), u_nugget],
                  "corAR1": [log_delta, np.arctanh(phi), u_nugget]}
        logliks = {k: profile(design, batches, s, np.array(thetas[k]), True)[0] for k, s in structures.items()}
        assert logliks["corCAR1"] == pytest.approx(logliks["corExp"], rel=1e-10)
        assert logliks["corAR1"] == pytest.approx(logliks["corExp"], rel=1e-10)
    ref = REFERENCE["aids_corexp_nugget_ri"]
    for kind in ("corCAR1", "corAR1"):
        fit = _fit(data, f"{kind}(form = ~ obstime | patient, nugget = TRUE)")
        assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
        assert fit.correlation_parameters["phi"] == pytest.approx(np.exp(-1 / ref["range"]), rel=1e-3)
        assert fit.correlation_parameters["nugget"] == pytest.approx(ref["nugget"], rel=1e-5)  # measured 9.5e-7


def test_ar1_by_position_matches_nlme(chapter_data):
    ref = REFERENCE["aids_corar1_ri"]
    fit = _fit(chapter_data("aids"), "corAR1(form = ~ 1 | patient)")
    assert fit.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], atol=1e-3)
    assert fit.correlation_parameters["phi"] == pytest.approx(ref["Phi"], rel=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)


def test_ar1_at_gapped_times_leaves_the_stationary_point_where_nlme_stops(chapter_data):
    """At the times 0, 2, 6, 12, 18 no lag is 1, so d(phi^lag)/d(phi) = 0 at phi = 0, nlme's start: nlme stays there
    (phi = 0). hierlmm starts at phi = 0.2 and reaches the maximum, which is corCAR1's (the lags are the times)."""
    data = chapter_data("aids")
    ref = REFERENCE["aids_corar1_obstime_ri"]
    assert ref["Phi1"] == 0.0
    ar1 = _fit(data, "corAR1(form = ~ obstime | patient)")
    car1 = _fit(data, "corCAR1(form = ~ obstime | patient)")
    assert ar1.converged
    assert ar1.loglik > ref["logLik"] + 10
    assert ar1.loglik == pytest.approx(car1.loglik, abs=1e-4)
    assert ar1.correlation_parameters["phi"] == pytest.approx(car1.correlation_parameters["phi"], rel=1e-3)
