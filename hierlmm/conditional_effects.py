"""Exact draws of the random effects from their Gaussian conditional, one per posterior draw of theta.

After NUTS has sampled ``theta = (beta, D, sigma)`` on the marginal likelihood, ``b`` is recovered exactly:
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

from dataclasses import dataclass

import numpy as np

from hierlmm.marginal_loglik import MarginalStats


@dataclass(frozen=True, eq=False)
class DrawPieces:
    """``A_i``, its Cholesky factor, ``u_i / sigma^2`` and ``r_i'r_i`` for a batch of draws: (S, M, ...)."""

    A: np.ndarray
    R: np.ndarray
    u: np.ndarray
    rr: np.ndarray

    @classmethod
    def of(cls, ms: MarginalStats, beta: np.ndarray, L: np.ndarray, sigma: np.ndarray) -> DrawPieces:  # noqa: N803
        """Compute them for draws ``beta`` (S, p), stacked ``L`` (S, Q, Q), ``sigma`` (S,)."""
        s = ms.subject
        s2 = sigma**2
        A = np.einsum("sba,mbc,scd->smad", L, s.ZtZ, L) / s2[:, None, None, None] + np.eye(s.Q)  # noqa: N806
        Ztr = s.Zty[None] - np.einsum("mqp,sp->smq", s.ZtX, beta)  # noqa: N806
        u = np.einsum("sba,smb->sma", L, Ztr) / s2[:, None, None]
        rr = (ms.yty_i[None] - 2 * beta @ ms.Xty_i.T + np.einsum("sp,mpq,sq->sm", beta, ms.XtX_i, beta))
        return cls(A, np.linalg.cholesky(A), u, rr)

    def loglik(self, ms: MarginalStats, sigma: np.ndarray) -> np.ndarray:
        """Per-subject marginal log-likelihood (S, M) (see :mod:`hierlmm.marginal_loglik`)."""
        s2 = (sigma**2)[:, None]
        w = np.linalg.solve(self.R, self.u[..., None])[..., 0]  # R^-1 u / sigma^2
        logdet = 2 * np.log(np.diagonal(self.R, axis1=-2, axis2=-1)).sum(-1)
        quad = (self.rr - s2 * (w**2).sum(-1)) / s2
        n = ms.subject.n_per_subject[None]
        return -0.5 * (n * np.log(2 * np.pi * s2) + logdet + quad)


def draw_effects(
    ms: MarginalStats,
    beta: np.ndarray,
    L: np.ndarray,  # noqa: N803
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
    Rt = np.swapaxes(p.R, -1, -2)  # noqa: N806
    # A^-1 u + R^-T e = R^-T (R^-1 u + e): one triangular system per subject and draw
    w = np.linalg.solve(p.R, p.u[..., None])[..., 0]
    return np.einsum("sab,smb->sma", L, np.linalg.solve(Rt, (w + e)[..., None])[..., 0])


def conditional_moments(ms: MarginalStats, beta: np.ndarray, L: np.ndarray, sigma: float):  # noqa: N803
    """Mean (M, Q) and covariance (M, Q, Q) of ``b_i | y_i, theta`` at one parameter value (for tests/REML)."""
    s = ms.subject
    A = np.einsum("ba,mbc,cd->mad", L, s.ZtZ, L) / sigma**2 + np.eye(s.Q)  # noqa: N806
    u = (s.Zty - s.ZtX @ beta) @ L / sigma**2
    A_inv = np.linalg.inv(A)  # noqa: N806
    mean = np.einsum("ab,mbc,mc->ma", L, A_inv, u)
    cov = np.einsum("ab,mbc,dc->mad", L, A_inv, L)
    return mean, cov
