"""The profiled likelihoods and random-effects formulas against dense, textbook computations with scipy.

Everything here is recomputed from first principles: V_i = Z_i D Z_i' + sigma^2 I built densely, the ML
log-likelihood as a sum of scipy multivariate-normal log-densities, REML in Harville's form, and the chapter's
b_i = D Z_i' V_i^-1 (y_i - X_i beta) with its K-formula covariance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from simulated import simulate

import hierlmm
from hierlmm.design.sufficient_stats import stack_factors, subject_stats
from hierlmm.engines.reml.profiled_likelihood import evaluate


def dense_loglik(design: hierlmm.Design, D_blocks, sigma2, beta, reml: bool) -> float:
    """Sum of multivariate-normal log-densities per subject (outermost factor), built densely."""
    n = design.n_obs
    V = sigma2 * np.eye(n)
    for block, D in zip(design.blocks, D_blocks, strict=True):
        G = np.zeros((n, block.n_levels * block.q))
        for j in range(block.q):
            G[np.arange(n), block.group_index * block.q + j] = block.Z[:, j]
        V += G @ np.kron(np.eye(block.n_levels), D) @ G.T
    ll = scipy.stats.multivariate_normal(design.X @ beta, V).logpdf(design.y)
    if reml:
        XtVX = design.X.T @ np.linalg.solve(V, design.X)
        ll += -0.5 * np.linalg.slogdet(XtVX)[1] + 0.5 * design.p * np.log(2 * np.pi)
    return float(ll)


def profiled_pieces(design, theta_factors, reml):
    stats = subject_stats(design)
    state = evaluate(stats, stack_factors(stats, theta_factors), reml)
    D_blocks = [state.sigma2 * L @ L.T for L in theta_factors]
    return state, D_blocks


@settings(deadline=None, max_examples=25, database=None)
@given(
    seed=st.integers(0, 10_000),
    l11=st.floats(0.1, 3), l21=st.floats(-1, 1), l22=st.floats(0.05, 2),
    reml=st.booleans(), nested=st.booleans(),
)
def test_profiled_likelihood_equals_dense_multivariate_normal(seed, l11, l21, l22, reml, nested):
    data = simulate(seed, n_subjects=12, nested=nested)
    formula = "y ~ t + x + g + (t | id)" + (" + (1 | id:eye)" if nested else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    factors = [np.array([[l11, 0.0], [l21, l22]])] + ([np.array([[0.6]])] if nested else [])
    state, D_blocks = profiled_pieces(design, factors, reml)
    # at the profiled beta and sigma the dense log-likelihood equals -deviance / 2
    dense = dense_loglik(design, D_blocks, state.sigma2, state.beta, reml)
    assert -0.5 * state.deviance == pytest.approx(dense, abs=1e-8 * max(1.0, abs(dense)))


def test_gls_beta_is_the_dense_gls_estimate():
    data = simulate(3)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), data)
    factors = [np.array([[1.2, 0.0], [0.1, 0.3]])]
    state, (D,) = profiled_pieces(design, factors, reml=True)
    blk = design.blocks[0]
    V = state.sigma2 * np.eye(design.n_obs)
    for i in range(blk.n_levels):
        rows = np.flatnonzero(blk.group_index == i)
        V[np.ix_(rows, rows)] += blk.Z[rows] @ D @ blk.Z[rows].T
    Vinv = np.linalg.inv(V)
    beta = np.linalg.solve(design.X.T @ Vinv @ design.X, design.X.T @ Vinv @ design.y)
    np.testing.assert_allclose(state.beta, beta, rtol=1e-10)


@pytest.mark.filterwarnings("ignore::hierlmm.BoundaryWarning")  # the formulas hold on the boundary too
@pytest.mark.parametrize("nested", [False, True])
def test_ranef_and_its_covariance_match_the_chapter_formulas(nested):
    data = simulate(11, nested=nested)
    formula = "y ~ t + x + (t | id)" + (" + (1 | id:eye)" if nested else "")
    fit = hierlmm.fit(formula, data)
    design, beta = fit.design, fit.beta
    n = design.n_obs
    # dense V, G (all random effects stacked by block then level), D_all
    Gs, Ds = [], []
    for block, D in zip(design.blocks, fit.D, strict=True):
        G = np.zeros((n, block.n_levels * block.q))
        for j in range(block.q):
            G[np.arange(n), block.group_index * block.q + j] = block.Z[:, j]
        Gs.append(G)
        Ds.append(np.kron(np.eye(block.n_levels), D))
    G = np.hstack(Gs)
    from scipy.linalg import block_diag

    Dall = block_diag(*Ds)
    V = G @ Dall @ G.T + fit.sigma**2 * np.eye(n)
    Vinv = np.linalg.inv(V)
    X = design.X
    b = Dall @ G.T @ Vinv @ (design.y - X @ beta)
    K = Vinv - Vinv @ X @ np.linalg.inv(X.T @ Vinv @ X) @ X.T @ Vinv
    cov = Dall @ G.T @ K @ G @ Dall
    offset = 0
    for block, (factor, effects) in zip(design.blocks, fit.ranef().items(), strict=True):
        assert factor == block.factor
        size = block.n_levels * block.q
        np.testing.assert_allclose(effects.mean.to_numpy().ravel(), b[offset : offset + size], atol=1e-8)
        for level in range(block.n_levels):
            sl = slice(offset + level * block.q, offset + (level + 1) * block.q)
            np.testing.assert_allclose(effects.cov_estimator[level], cov[sl, sl], atol=1e-8)
        offset += size
    # fitted values at level 1 use every block
    np.testing.assert_allclose(fit.fitted(1), X @ beta + G @ b, atol=1e-8)
    # the implied marginal covariance of a subject is the dense V's diagonal block
    subject = fit.subjects()[0]
    rows = np.flatnonzero(design.blocks[fit.stats.subject_block].group_index == 0)
    np.testing.assert_allclose(fit.marginal_cov(subject).to_numpy(), V[np.ix_(rows, rows)], atol=1e-10)


def test_cov_beta_is_the_gls_covariance():
    data = simulate(5)
    fit = hierlmm.fit("y ~ t + x + (t | id)", data)
    blk = fit.design.blocks[0]
    V = fit.sigma**2 * np.eye(fit.design.n_obs)
    for i in range(blk.n_levels):
        rows = np.flatnonzero(blk.group_index == i)
        V[np.ix_(rows, rows)] += blk.Z[rows] @ fit.D[0] @ blk.Z[rows].T
    X = fit.design.X
    np.testing.assert_allclose(fit.cov_beta, np.linalg.inv(X.T @ np.linalg.solve(V, X)), rtol=1e-8)


def test_boundary_fit_is_reported():
    rng = np.random.default_rng(0)
    n_subjects, n_visits = 60, 4
    data = pd.DataFrame({
        "id": np.repeat([f"s{i}" for i in range(n_subjects)], n_visits),
        "t": np.tile(np.arange(n_visits, dtype=float), n_subjects),
    })
    noise = rng.normal(0, 1, (n_subjects, n_visits))
    noise -= 0.8 * noise.mean(axis=1, keepdims=True)  # negative within-subject correlation: REML's sd hits 0
    data["y"] = 2 + 0.3 * data["t"] + noise.ravel()
    with pytest.warns(hierlmm.BoundaryWarning, match="sd\\(id:\\(Intercept\\)\\)"):
        fit = hierlmm.fit("y ~ t + (1 | id)", data)
    assert fit.D[0][0, 0] < 1e-8
    assert fit.optimizer.boundary == ("sd(id:(Intercept))",)
    # on the boundary the model is the linear model: sigma^2 is the (REML) residual variance of OLS
    X = np.column_stack([np.ones(len(data)), data["t"]])
    resid = data["y"] - X @ np.linalg.lstsq(X, data["y"], rcond=None)[0]
    assert fit.sigma**2 == pytest.approx(resid @ resid / (len(data) - 2), rel=1e-6)


def test_crossed_factors_go_to_the_dense_engine_and_the_nested_engine_says_where():
    data = simulate(1)
    data["site"] = np.where(np.arange(len(data)) % 3 == 0, "A", np.where(np.arange(len(data)) % 3 == 1, "B", "C"))
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id) + (1 | site)"), data)
    with pytest.raises(hierlmm.NotSupportedError, match=r"(?s)crossed.*hierlmm\.fit"):
        hierlmm.fit_ml(design)
    from hierlmm.engines.reml.crossed_fit import CrossedFit

    assert isinstance(hierlmm.fit("y ~ t + (1 | id) + (1 | site)", data), CrossedFit)
