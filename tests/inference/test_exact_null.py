"""The exact finite-sample null of the (restricted) likelihood-ratio test for one variance component
(hierlmm.inference.exact_null) against R's RLRsim 3.1-8 (tests/fixtures/model_comparison_reference.json, made by
make_model_comparison_reference.R with nsim = 1e5).

Where the observed p-value is 0 (a strong random intercept) the null distribution itself is compared: its mass at 0
and its upper-tail fractions at RLRsim's quantiles, each by a z-test of two simulated proportions at 4.5 combined
standard deviations (a false failure about once in 150,000 comparisons)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from montecarlo import within_monte_carlo
from paths import ROOT

import hierlmm
from hierlmm.inference.exact_null import (
    grouped_columns,
    lambda_grid,
    null_statistics,
    simulate_null,
    spectral_null,
)

REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "model_comparison_reference.json").read_text())["exact"]


def rlrsim_loop(mu, xi, n, p, chi1, chi_rest, reml, lam):
    """RLRsim's RLRsimCpp written out draw by draw, grid point by grid point (src/RLRsim.cpp, q = 0)."""
    n0 = n - p if reml else n
    xi = mu if reml else xi
    out = np.zeros(chi1.shape[0])
    for s in range(chi1.shape[0]):
        best = 0.0
        for ig in range(lam.size):
            N = sum((lam[ig] * m) / (lam[ig] * m + 1.0) * c for m, c in zip(mu, chi1[s], strict=True))
            D = sum(1.0 / (lam[ig] * m + 1.0) * c for m, c in zip(mu, chi1[s], strict=True)) + chi_rest[s]
            LR = n0 * np.log1p(N / D) - sum(np.log1p(lam[ig] * x) for x in xi)
            if LR >= best:
                best = LR
            else:
                break
        out[s] = best
    return out


def test_grid_is_rlrsims():
    grid = lambda_grid()
    assert grid.size == 200 and grid[0] == 0.0
    np.testing.assert_allclose(grid[[1, -1]], [np.exp(-10.0), np.exp(8.0)])
    np.testing.assert_allclose(np.diff(np.log(grid[1:])), 18.0 / 198)


def test_eigenvalues_are_the_squared_singular_values_of_the_projected_design():
    rng = np.random.default_rng(1)
    n, levels = 60, 12
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    group = rng.integers(levels, size=n)
    column = rng.normal(size=n)
    Z = grouped_columns(column, group, levels)
    dense = np.zeros((n, levels))
    dense[np.arange(n), group] = column
    np.testing.assert_array_equal(Z.toarray(), dense)
    P0 = np.eye(n) - X @ np.linalg.solve(X.T @ X, X.T)
    mu = np.linalg.svd(P0 @ dense, compute_uv=False) ** 2
    xi = np.linalg.svd(dense, compute_uv=False) ** 2
    reml = spectral_null(X, Z, reml=True)
    np.testing.assert_allclose(reml.mu, mu / mu.max(), atol=1e-12)
    ml = spectral_null(X, Z, reml=False)
    np.testing.assert_allclose(ml.xi, xi / xi.max(), atol=1e-12)
    np.testing.assert_allclose(ml.mu, mu / xi.max(), atol=1e-12)


@pytest.mark.parametrize("reml", [True, False])
def test_vectorised_statistics_equal_rlrsims_loop(reml):
    rng = np.random.default_rng(7)
    n, p, K = 40, 2, 8
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    null = spectral_null(X, grouped_columns(np.ones(n), np.arange(n) % K, K), reml=reml)
    chi1 = rng.chisquare(1, (25, K))
    chi_rest = rng.chisquare(n - p - K, 25)
    expected = rlrsim_loop(null.mu, null.xi, n, p, chi1, chi_rest, reml, lambda_grid())
    np.testing.assert_allclose(null_statistics(null, chi1, chi_rest), expected, rtol=1e-12, atol=1e-12)
    assert np.mean(expected == 0) > 0.2  # the draws include the point mass at 0


def test_simulation_is_reproducible_and_non_negative():
    rng = np.random.default_rng(2)
    X = np.column_stack([np.ones(50), rng.normal(size=50)])
    null = spectral_null(X, grouped_columns(np.ones(50), np.arange(50) % 10, 10))
    a, b = simulate_null(null, 3000, 5), simulate_null(null, 3000, 5)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and 0.3 < np.mean(a == 0) < 0.8


def _aids60(aids):
    subset = aids[aids["patient"].astype(str).astype(int) <= 60].copy()
    subset["patient"] = subset["patient"].cat.remove_unused_categories()
    return subset


CASES = {  # RLRsim's m: the model with only the tested effect
    "aids60_pddiag_slope": ("aids", "CD4 ~ obstime + obstime:drug + (0 + obstime | patient)", True, 20_000),
    "aids_pddiag_slope": ("aids", "CD4 ~ obstime + obstime:drug + (0 + obstime | patient)", True, 10_000),
    "aids_ri": ("aids", "CD4 ~ obstime + obstime:drug + (1 | patient)", True, 10_000),
    "prothro_ri": ("prothro", "pro ~ time * treat + (1 | id)", True, 10_000),
    "prothro_ri_ml": ("prothro", "pro ~ time * treat + (1 | id)", False, 10_000),
}


@pytest.mark.parametrize("case", list(CASES))
def test_null_distribution_agrees_with_rlrsim(case, chapter_data):
    name, formula, reml, nsim = CASES[case]
    data = chapter_data(name)
    if case.startswith("aids60"):
        data = _aids60(data)
    design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    block = design.blocks[0]
    null = spectral_null(design.X, grouped_columns(block.Z, block.group_index, block.n_levels), reml=reml)
    sims = simulate_null(null, nsim, 11)
    ref = REFERENCE[case]
    assert within_monte_carlo(np.mean(sims == 0), nsim, ref["mass_at_zero"], ref["nsim"]), \
        (np.mean(sims == 0), ref["mass_at_zero"])
    for threshold, upper in zip(ref["thresholds"], ref["upper"], strict=True):
        ours = np.mean(sims > threshold)
        assert within_monte_carlo(ours, nsim, upper, ref["nsim"]), (threshold, ours, upper)


def test_an_effect_inside_the_fixed_effects_is_refused():
    group = np.repeat(np.arange(6), 5)
    X = np.eye(6)[group]  # one fixed effect per level: the random intercepts' columns are in col(X)
    with pytest.raises(hierlmm.NotSupportedError, match="column space"):
        spectral_null(X, grouped_columns(np.ones(30), group, 6))
