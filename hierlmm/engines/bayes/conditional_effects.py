"""Exact draws of the random effects from their Gaussian conditional, one per posterior draw of theta.

After NUTS has sampled ``theta = (beta, D, sigma)`` on the marginalised likelihood, ``b`` is recovered exactly:
``p(b, theta | y) = p(theta | y) p(b | y, theta)``, and the second factor is Gaussian subject by subject.

Notation
--------
With the stacked absolute factor ``L`` (``D = L L'``), ``A_i = I + L' Z_i'Z_i L / sigma^2`` and
``u_i = L' Z_i' (y_i - X_i beta)``::

    b_i | y_i, theta ~ N( L A_i^{-1} u_i / sigma^2,  L A_i^{-1} L' )

(the chapter's ``(D^-1 + Z_i'Z_i / sigma^2)^-1`` written without inverting D, so a singular D is fine). A draw is
``L (A_i^{-1} u_i / sigma^2 + R_i^{-T} e)`` with ``A_i = R_i R_i'`` (Cholesky) and ``e ~ N(0, I)``.
"""

from __future__ import annotations

import numpy as np

from hierlmm.kernels.marginalised_loglik import (
    DrawPieces,
    MarginalisedStats,
    solve_lower,
    solve_lower_transposed,
    times,
)


def draw_effects(
    ms: MarginalisedStats,
    beta: np.ndarray,
    L: np.ndarray,
    sigma: np.ndarray,
    rng: np.random.Generator,
    pieces: DrawPieces | None = None,
) -> np.ndarray:
    """Draw every subject's stacked random effects for a batch of posterior draws.

    Parameters
    ----------
    ms
        Per-subject statistics.
    beta, L, sigma
        Posterior draws: (S, p), (S, Q, Q) stacked factors, (S,).
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        (S, M, Q) draws of the stacked b of every subject.
    """
    p = pieces if pieces is not None else DrawPieces.of(ms, beta, L, sigma)
    e = rng.standard_normal(p.u.shape)
    # A^-1 u + R^-T e = R^-T (R^-1 u + e): one triangular system per subject and draw
    v = solve_lower_transposed(p.R, solve_lower(p.R, p.u) + e)
    return times(L, v)


def conditional_moments(ms: MarginalisedStats, beta: np.ndarray, L: np.ndarray, sigma: float):
    """Mean (M, Q) and covariance (M, Q, Q) of ``b_i | y_i, theta`` at one parameter value (for tests/REML)."""
    s = ms.subject
    A = np.einsum("ba,mbc,cd->mad", L, s.ZtZ, L) / sigma**2 + np.eye(s.Q)
    u = (s.Zty - s.ZtX @ beta) @ L / sigma**2
    A_inv = np.linalg.inv(A)
    mean = np.einsum("ab,mbc,mc->ma", L, A_inv, u)
    cov = np.einsum("ab,mbc,dc->mad", L, A_inv, L)
    return mean, cov
