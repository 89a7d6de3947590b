"""Finite-difference Hessians (hierlmm.engines.reml.finite_differences) against exact ones, and the engines' shared
rule for
calling a Hessian positive definite."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hierlmm.engines.reml.finite_differences import central_hessian, clearly_positive_definite, hessian_from_gradient


@settings(deadline=None, max_examples=25, database=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5))
def test_both_hessians_of_a_smooth_function_equal_the_exact_one(seed, k):
    """f(x) = x'Ax / 2 + sum exp(b x): Hessian A + diag(b^2 exp(b x))."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(k, k))
    A, b, x = B @ B.T + np.eye(k), rng.normal(size=k) * 0.5, rng.normal(size=k)

    def value(z):
        return 0.5 * z @ A @ z + np.exp(b * z).sum()

    def value_and_gradient(z):
        return value(z), A @ z + b * np.exp(b * z)

    exact = A + np.diag(b**2 * np.exp(b * x))
    np.testing.assert_allclose(hessian_from_gradient(value_and_gradient, x), exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(central_hessian(value, x), exact, rtol=1e-5, atol=1e-5)


@settings(deadline=None, max_examples=50, database=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6), log_smallest=st.floats(-14.0, 2.0),
       sign=st.sampled_from([-1.0, 0.0, 1.0]))
def test_positive_definite_means_the_smallest_eigenvalue_clears_rounding(seed, k, log_smallest, sign):
    """A rotated diag(e) is called positive definite exactly when min(e) > 1e-9 max|e|."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(k, k)))
    e = np.exp(rng.uniform(-1.0, 1.0, size=k))
    e[0] = sign * 10.0 ** log_smallest
    H = Q @ np.diag(e) @ Q.T
    scale = np.abs(e).max()
    ratio = e.min() / scale if scale > 0 else 0.0  # H = [[0]]: not positive definite
    if abs(np.log10(abs(ratio) + 1e-300) + 9) < 0.5:  # within rounding of the threshold: either verdict is right
        return
    assert clearly_positive_definite(H) == (ratio > 1e-9)


@pytest.mark.parametrize("H", [np.array([[1.0, np.nan], [np.nan, 1.0]]), np.array([[np.inf]]),
                               np.array([[1.0, 0.0], [0.0, 1e-17]]), np.array([[1.0, 0.0], [0.0, -1e-17]])])
def test_non_finite_or_rounding_level_hessians_are_not_positive_definite(H):
    assert not clearly_positive_definite(H)
