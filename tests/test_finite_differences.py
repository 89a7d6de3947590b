"""Finite-difference Hessians (hierlmm.finite_differences) against exact ones."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hierlmm.finite_differences import central_hessian, hessian_from_gradient


@settings(deadline=None, max_examples=25, database=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5))
def test_both_hessians_of_a_smooth_function_equal_the_exact_one(seed, k):
    """f(x) = x'Ax / 2 + sum exp(b x): Hessian A + diag(b^2 exp(b x))."""
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(k, k))  # noqa: N806
    A, b, x = B @ B.T + np.eye(k), rng.normal(size=k) * 0.5, rng.normal(size=k)  # noqa: N806

    def value(z):
        return 0.5 * z @ A @ z + np.exp(b * z).sum()

    def value_and_gradient(z):
        return value(z), A @ z + b * np.exp(b * z)

    exact = A + np.diag(b**2 * np.exp(b * x))
    np.testing.assert_allclose(hessian_from_gradient(value_and_gradient, x), exact, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(central_hessian(value, x), exact, rtol=1e-5, atol=1e-5)
