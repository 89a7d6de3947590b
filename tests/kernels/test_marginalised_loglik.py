"""The marginalised likelihood of the Bayesian engine and the exact conditional draws of b, against dense scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from simulated import random_factors, simulate

import hierlmm
from hierlmm.engines.bayes.conditional_effects import conditional_moments, draw_effects
from hierlmm.kernels.marginalised_loglik import (
    DrawPieces,
    MarginalisedStats,
    stacked_factor,
    subject_loglik_numpy,
    subject_loglik_pytensor,
)

FORMULAS = {
    1: "y ~ t + x + (1 | id)",
    2: "y ~ t + x + (t | id)",
    3: "y ~ t + x + (t + x | id)",
    "nested": "y ~ t + x + (t | id) + (1 | id:eye)",
}


def dense_subject_loglik(design, factors, beta, sigma):
    """log N(y_i | X_i beta, Z_i D Z_i' + sigma^2 I) per subject, built densely with scipy."""
    n = design.n_obs
    V = sigma**2 * np.eye(n)
    for block, L in zip(design.blocks, factors, strict=True):
        G = np.zeros((n, block.n_levels * block.q))
        for j in range(block.q):
            G[np.arange(n), block.group_index * block.q + j] = block.Z[:, j]
        V += G @ np.kron(np.eye(block.n_levels), L @ L.T) @ G.T
    subject = design.blocks[0].group_index
    out = []
    for i in range(design.blocks[0].n_levels):
        rows = np.flatnonzero(subject == i)
        out.append(scipy.stats.multivariate_normal(design.X[rows] @ beta, V[np.ix_(rows, rows)]).logpdf(design.y[rows]))
    return np.array(out)



@settings(deadline=None, max_examples=20, database=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(FORMULAS, key=str)))
def test_numpy_and_pytensor_marginalised_loglik_equal_dense_mvn(seed, kind):
    import pytensor

    nested = kind == "nested"
    data = simulate(seed, n_subjects=10, nested=nested)
    design = hierlmm.build_design(hierlmm.model_spec(FORMULAS[kind]), data)
    rng = np.random.default_rng(seed)
    factors = random_factors(design, rng)
    beta, sigma = rng.normal(0, 1, design.p), rng.uniform(0.5, 2)
    ms = MarginalisedStats.of(design)
    dense = dense_subject_loglik(design, factors, beta, sigma)
    L = stacked_factor(ms.subject, factors)
    np.testing.assert_allclose(subject_loglik_numpy(ms, beta, L, sigma), dense, atol=1e-8)
    pieces = DrawPieces.of(ms, beta[None], L[None], np.array([sigma]))
    np.testing.assert_allclose(pieces.loglik(ms, np.array([sigma]))[0], dense, atol=1e-8)
    expr = subject_loglik_pytensor(ms, pytensor.tensor.as_tensor(beta), stacked_factor(
        ms.subject, [pytensor.tensor.as_tensor(f) for f in factors]), pytensor.tensor.as_tensor(sigma))
    np.testing.assert_allclose(expr.eval(), dense, atol=1e-8)


def random_slopes_case(seed: int, n_subjects: int, sigma: float):
    """A random intercepts-and-slopes design with random parameter values (design, stats, L, beta, sigma)."""
    design = hierlmm.build_design(hierlmm.model_spec(FORMULAS[2]), simulate(seed, n_subjects=n_subjects))
    rng = np.random.default_rng(seed)
    (L,) = random_factors(design, rng)
    return design, MarginalisedStats.of(design), L, rng.normal(0, 1, design.p), sigma


def test_conditional_moments_are_the_chapter_posterior_of_b():
    design, ms, L, beta, sigma = random_slopes_case(4, 15, 0.9)
    mean, cov = conditional_moments(ms, beta, L, sigma)
    D = L @ L.T
    block = design.blocks[0]
    for i in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == i)
        Z = block.Z[rows]
        V = Z @ D @ Z.T + sigma**2 * np.eye(rows.size)
        r = design.y[rows] - design.X[rows] @ beta
        np.testing.assert_allclose(mean[i], D @ Z.T @ np.linalg.solve(V, r), atol=1e-10)
        np.testing.assert_allclose(cov[i], np.linalg.inv(np.linalg.inv(D) + Z.T @ Z / sigma**2), atol=1e-10)


def test_exact_draws_of_b_have_the_conditional_moments():
    design, ms, L, beta, sigma = random_slopes_case(8, 12, 0.7)
    rng = np.random.default_rng(2)
    S = 40_000
    draws = draw_effects(ms, np.repeat(beta[None], S, 0), np.repeat(L[None], S, 0), np.full(S, sigma), rng)
    mean, cov = conditional_moments(ms, beta, L, sigma)
    # standardised: whitened draws are N(0, I), so their mean and covariance are within Monte Carlo error
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol[None], (draws - mean)[..., None])[..., 0]
    assert np.max(np.abs(white.mean(axis=0))) < 5 / np.sqrt(S)
    emp = np.einsum("smi,smj->mij", white, white) / S
    assert np.max(np.abs(emp - np.eye(2))) < 6 * np.sqrt(2 / S)


def test_stacked_factor_of_a_nested_design_repeats_the_inner_block():
    data = simulate(2, n_subjects=8, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec(FORMULAS["nested"]), data)
    ms = MarginalisedStats.of(design)
    outer, inner = np.array([[1.0, 0], [0.2, 0.5]]), np.array([[0.7]])
    L = stacked_factor(ms.subject, [outer, inner])
    assert L.shape == (2 + ms.subject.layouts[1].n_slots, 2 + ms.subject.layouts[1].n_slots)
    np.testing.assert_array_equal(L[:2, :2], outer)
    np.testing.assert_array_equal(np.diag(L)[2:], 0.7)


@pytest.mark.parametrize("kind", [1, 2])
def test_the_pymc_marginal_model_logp_is_prior_plus_marginal_likelihood(kind):
    from hierlmm.engines.bayes.hierarchical_model import build_bayes_model

    data = simulate(5, n_subjects=10)
    design = hierlmm.build_design(hierlmm.model_spec(FORMULAS[kind]), data)
    bm = build_bayes_model(design, sampler="marginal")
    point = bm.model.initial_point()
    logp = bm.model.compile_logp(mode="FAST_COMPILE")
    priors_only = bm.model.compile_logp(vars=bm.model.free_RVs, mode="FAST_COMPILE")
    # the potential, evaluated at the point's parameter values, is the numpy marginalised log-likelihood
    model = bm.model

    def evaluate(variables):
        outs = model.replace_rvs_by_values(variables)
        return model.compile_fn(outs, inputs=model.value_vars, mode="FAST_COMPILE", on_unused_input="ignore")(point)

    from hierlmm.engines.bayes.posterior_tree import packed_to_chol

    names = [f"chol_{b.factor}" if f"chol_{b.factor}" in model.named_vars else f"sd_{b.factor}"
             for b in design.blocks]
    beta_c, sigma, *blocks = evaluate([model["beta_centred"], model["sigma"], *[model[n] for n in names]])
    beta = beta_c.copy()
    beta[0] -= beta_c @ bm.x_mean  # the uncentred intercept
    factors = [packed_to_chol(v, b.q) if n.startswith("chol_") else np.diag(np.atleast_1d(v))
               for n, v, b in zip(names, blocks, design.blocks, strict=True)]
    ms = bm.stats
    marginal = subject_loglik_numpy(ms, beta, stacked_factor(ms.subject, factors), float(sigma)).sum()
    assert logp(point) == pytest.approx(priors_only(point) + marginal, rel=1e-10)


@settings(deadline=None, max_examples=12, database=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sorted(FORMULAS, key=str)))
def test_kernel_value_and_gradient_equal_autodiff_of_the_elementwise_graph(seed, kind):
    """The hand-written kernel (Q = 1, 2 written out; 3 and nested through the generic loop) against PyTensor's
    automatic gradient of the independent elementwise implementation."""
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.kernels.marginalised_op import kernel_for, marginalised_data

    data = simulate(seed, n_subjects=9, nested=kind == "nested")
    design = hierlmm.build_design(hierlmm.model_spec(FORMULAS[kind]), data)
    rng = np.random.default_rng(seed)
    ms = MarginalisedStats.of(design)
    L = stacked_factor(ms.subject, random_factors(design, rng))
    beta, sigma = rng.normal(0, 1, design.p), float(rng.uniform(0.5, 2))
    b_v, L_v, s_v = pt.dvector(), pt.dmatrix(), pt.dscalar()
    total = subject_loglik_pytensor(ms, b_v, L_v, s_v).sum()
    reference = pytensor.function([b_v, L_v, s_v], [total, *pt.grad(total, [b_v, L_v, s_v])], mode="FAST_COMPILE")
    value, d_beta, d_L, d_sigma = reference(beta, L, sigma)
    got = kernel_for(ms.subject.Q)(beta, L, sigma, *marginalised_data(ms))
    assert got[0] == pytest.approx(value, rel=1e-10)
    np.testing.assert_allclose(got[1], d_beta, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(np.tril(got[2]), np.tril(d_L), rtol=1e-8, atol=1e-8)
    assert got[3] == pytest.approx(d_sigma, rel=1e-8)


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "NUMBA"])
def test_marginal_op_gives_the_same_value_and_gradient_in_python_and_numba(mode):
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.kernels.marginalised_op import marginalised_loglik_op

    design, ms, L, beta, sigma = random_slopes_case(3, 12, 1.1)
    b_v, L_v, s_v = pt.dvector(), pt.dmatrix(), pt.dscalar()
    ours = marginalised_loglik_op(ms, b_v, L_v, s_v)
    reference = subject_loglik_pytensor(ms, b_v, L_v, s_v).sum()
    f = pytensor.function([b_v, L_v, s_v], [ours, *pt.grad(ours, [b_v, L_v, s_v])], mode=mode)
    g = pytensor.function([b_v, L_v, s_v], [reference, *pt.grad(reference, [b_v, L_v, s_v])], mode="FAST_COMPILE")
    for got, want in zip(f(beta, L, sigma), g(beta, L, sigma), strict=True):
        np.testing.assert_allclose(np.tril(np.atleast_2d(got)), np.tril(np.atleast_2d(want)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("Q", [1, 2, 3, 4])
def test_entrywise_small_matrix_helpers_equal_numpy(Q):
    from hierlmm.kernels.marginalised_loglik import (
        cholesky_lower,
        congruence,
        solve_lower,
        solve_lower_transposed,
        times,
    )

    rng = np.random.default_rng(Q)
    L = np.tril(rng.normal(size=(5, Q, Q)))
    S = rng.normal(size=(7, Q, Q))
    S = S @ np.swapaxes(S, -1, -2) + np.eye(Q)
    np.testing.assert_allclose(congruence(L, S), np.swapaxes(L, -1, -2)[:, None] @ S[None] @ L[:, None], atol=1e-12)
    A = congruence(L, S) + np.eye(Q)
    R = cholesky_lower(A)
    np.testing.assert_allclose(R, np.linalg.cholesky(A), atol=1e-12)
    v = rng.normal(size=(5, 7, Q))
    np.testing.assert_allclose(times(L, v), (L[:, None] @ v[..., None])[..., 0], atol=1e-12)
    np.testing.assert_allclose(solve_lower(R, v), np.linalg.solve(R, v[..., None])[..., 0], atol=1e-10)
    np.testing.assert_allclose(solve_lower_transposed(R, v),
                               np.linalg.solve(np.swapaxes(R, -1, -2), v[..., None])[..., 0], atol=1e-10)
