"""hierlmm.simulate(fit, nsim, seed): responses drawn from any fitted model (hierlmm.inference.simulation).

Each kind is checked against what its draws must follow: the mean ``X beta`` and, subject by subject, the implied
covariance ``V_i`` the fit reports (hierlmm.implied_covariance; serial correlation and variance functions included),
with the standard errors of a sample mean and a sample covariance (5 SE: a false failure is rare). A Bayesian fit's
draws follow the mixture over the posterior draws each simulation picks: mean ``E_s[X beta_s]``, covariance
``E_s[V_s] + Cov_s(X_i beta_s)``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from simulated import every_kind
from test_fit_interface import REML_KINDS as INTERFACE_KINDS

import hierlmm
from hierlmm.engines.bayes.posterior_result import flat_draws
from hierlmm.inference.simulation import simulate_fit

FIXED = "y ~ t + x"
NSIM = 4000
REML_KINDS = {**INTERFACE_KINDS,  # every kind of tests/test_fit_interface.py, and a variance covariate
              "variance_covariate": lambda d: hierlmm.fit(f"{FIXED} + (1 | id)", d, weights="varExp(form = ~ t)")}


@pytest.fixture(scope="module")
def data():
    return every_kind()


def _quiet(make, d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(d)


def check_moments(Y: np.ndarray, mean: np.ndarray, fit, subjects=("s0", "s3", "s7")) -> None:
    """Y (nsim, N): the mean of every row and the covariance of a few subjects' rows."""
    nsim = Y.shape[0]
    design = fit.design
    block = design.blocks[0]
    for subject in subjects:
        idx = np.flatnonzero(block.group_index == block.levels.index(subject))
        V = hierlmm.implied_covariance(fit, subject=subject).V[0]
        emp = np.cov(Y[:, idx], rowvar=False).reshape(idx.size, idx.size)
        se = np.sqrt((V**2 + np.outer(np.diag(V), np.diag(V))) / nsim)
        assert np.all(np.abs(emp - V) < 5 * se), (subject, emp, V)
        assert np.all(np.abs(Y[:, idx].mean(axis=0) - mean[idx]) < 5 * np.sqrt(np.diag(V) / nsim))


@pytest.mark.parametrize("kind", list(REML_KINDS))
def test_draws_have_the_fits_mean_and_implied_covariance(kind, data):
    fit = _quiet(REML_KINDS[kind], data)
    Y = hierlmm.simulate(fit, NSIM, seed=1)
    assert Y.shape == (NSIM, fit.design.n_obs)
    check_moments(Y, fit.design.X @ fit.beta, fit)


def test_crossed_factors_correlate_rows_of_different_subjects(data):
    fit = _quiet(REML_KINDS["crossed"], data)
    Y = simulate_fit(fit, NSIM, seed=2)
    rater = fit.design.blocks[1]
    subject = fit.design.blocks[0]
    a = 0  # a row, and a row of another subject with the same rater
    b = next(j for j in range(len(rater.group_index)) if rater.group_index[j] == rater.group_index[a]
             and subject.group_index[j] != subject.group_index[a])
    expected = fit.D[1][0, 0]
    se = np.sqrt((expected**2 + Y[:, a].var() * Y[:, b].var()) / NSIM)
    assert abs(np.cov(Y[:, a], Y[:, b])[0, 1] - expected) < 5 * se


def test_draws_are_reproducible_and_dispatch_on_the_first_argument(data):
    fit = _quiet(REML_KINDS["plain"], data)
    a = hierlmm.simulate(fit, 3, seed=4)
    np.testing.assert_array_equal(a, simulate_fit(fit, 3, seed=4))
    np.testing.assert_array_equal(a, hierlmm.simulate(fit, nsim=3, seed=4))
    assert not np.allclose(a, hierlmm.simulate(fit, 3, seed=5))
    assert hierlmm.simulate(fit, seed=1).shape == (1, fit.design.n_obs)
    with pytest.raises(hierlmm.SpecError, match="data= and kind= do not apply"):
        hierlmm.simulate(fit, 3, data)
    with pytest.raises(hierlmm.SpecError, match="twice"):
        hierlmm.simulate(fit, 3, nsim=3)
    with pytest.raises(hierlmm.SpecError, match="positive whole number"):
        simulate_fit(fit, 0)
    with pytest.raises(hierlmm.SpecError, match="applies to simulate"):
        hierlmm.simulate("y ~ t + (1 | id)", {"beta": [1, 1], "D": [[1.0]], "sigma": 1.0}, data, nsim=2)
    with pytest.raises(hierlmm.SpecError, match="takes a fit, or a model"):
        hierlmm.simulate("y ~ t + (1 | id)")


def test_a_singular_D_is_simulated(data):
    """A boundary fit (a variance estimated as 0) still draws, from D's eigen-decomposition: the draws have the mean
    X beta and, subject by subject, the implied covariance V_i = Z_i D Z_i' + sigma^2 I of the singular D (the
    standard errors of a sample mean and covariance, 5 SE), and no variation along D's null direction."""
    frame = data.copy()
    frame["y"] = 1 + 0.5 * frame["t"] + np.random.default_rng(3).normal(size=len(frame))  # no random effects
    fit = _quiet(lambda d: hierlmm.fit(f"{FIXED} + (t | id)", d), frame)
    D = fit.D[0]
    eigenvalues, vectors = np.linalg.eigh(D)
    assert eigenvalues[0] < 1e-8 * max(1.0, np.abs(D).max()) and eigenvalues[-1] > 1e-3  # rank 1: singular, not 0
    Y = simulate_fit(fit, NSIM, seed=1)
    assert Y.shape == (NSIM, fit.design.n_obs) and np.all(np.isfinite(Y))
    check_moments(Y, fit.design.X @ fit.beta, fit)
    # nothing is drawn along D's null vector u: for w_i = Z_i (Z_i'Z_i)^-1 u (so Z_i'w_i = u and u'D u = 0),
    # w_i'(y_i - X_i beta) has the residual variance sigma^2 |w_i|^2 only; D's non-zero eigenvalue along u instead
    # would be outside the Monte Carlo error
    block = fit.design.blocks[0]
    for subject in ("s0", "s3", "s7"):
        idx = np.flatnonzero(block.group_index == block.levels.index(subject))
        Z = block.Z[idx]
        w = Z @ np.linalg.solve(Z.T @ Z, vectors[:, 0])
        expected = fit.sigma**2 * (w @ w)
        tolerance = 5 * expected * np.sqrt(2 / NSIM)
        residuals = Y[:, idx] - fit.design.X[idx] @ fit.beta
        assert abs((residuals @ w).var() - expected) < tolerance, (subject, (residuals @ w).var(), expected)
        assert eigenvalues[-1] > tolerance


# ---- Bayesian fits: one posterior draw per simulation ----------------------------------------------------------------
FAST = {"chains": 2, "draws": 100, "tune": 100, "progressbar": False, "seed": 3}


def _design(d, formula):
    return hierlmm.build_design(hierlmm.model_spec(formula), d)


def check_bayes(fit, seed: int = 6) -> None:
    Y = simulate_fit(fit, NSIM, seed=seed)
    beta = flat_draws(fit, "beta")
    pick = np.random.default_rng(seed).integers(beta.shape[0], size=NSIM)  # the draws simulate_fit picks first
    mu = beta[pick] @ fit.design.X.T
    block = fit.design.blocks[0]
    for subject in ("s0", "s3"):
        idx = np.flatnonzero(block.group_index == block.levels.index(subject))
        V = hierlmm.implied_covariance(fit, subject=subject).V[pick].mean(axis=0)
        V = V + np.cov(mu[:, idx], rowvar=False).reshape(idx.size, idx.size)
        emp = np.cov(Y[:, idx], rowvar=False).reshape(idx.size, idx.size)
        se = np.sqrt((V**2 + np.outer(np.diag(V), np.diag(V))) / NSIM)
        assert np.all(np.abs(emp - V) < 5 * se), (subject, emp, V)
        assert np.all(np.abs(Y[:, idx].mean(axis=0) - mu[:, idx].mean(axis=0)) < 5 * np.sqrt(np.diag(V) / NSIM))


def test_bayesian_hierarchical_fit(data):
    fit = _quiet(lambda d: hierlmm.fit_bayes(_design(d, f"{FIXED} + (t | id)"), **FAST), data)
    check_bayes(fit)


@pytest.mark.slow
def test_bayesian_marginal_fit(data):
    fit = _quiet(lambda d: hierlmm.fit_bayes(_design(d, f"{FIXED} + (t | id)"), kind="marginal", **FAST), data)
    check_bayes(fit)


@pytest.mark.slow
def test_bayesian_correlated_fit(data):
    fit = _quiet(lambda d: hierlmm.fit_bayes(_design(d, f"{FIXED} + (1 | id)"), data=d,
                                             correlation="corExp(form = ~ t | id)", weights="varIdent(form = ~ 1 | g)",
                                             **FAST), data)
    check_bayes(fit)
