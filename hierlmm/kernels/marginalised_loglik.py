"""The exact marginalised log-likelihood of a linear mixed model, per subject, in PyTensor and in NumPy.

This is what the marginalised sampler runs NUTS on: the random effects are integrated out analytically, so the
posterior of ``theta = (beta, D, sigma)`` has no funnel. Both versions read only per-subject sufficient
statistics (:mod:`hierlmm.design.sufficient_stats`), so a gradient costs O(M Q^3), independent of the number of rows.
Written by hand because no PyMC distribution integrates out continuous random effects this way.

Notation
--------
With the stacked absolute factor ``L`` (``D = L L'`` block by block; for nested blocks repeated per slot) and
``A_i = I + L' Z_i'Z_i L / sigma^2``, ``r_i = y_i - X_i beta`` and ``u_i = L' Z_i' r_i``::

    log|V_i|         = n_i log sigma^2 + log|A_i|
    r_i' V_i^-1 r_i  = ( r_i'r_i - u_i' A_i^-1 u_i / sigma^2 ) / sigma^2
    log p(y_i)       = -1/2 ( n_i log 2 pi + log|V_i| + r_i' V_i^-1 r_i )

with ``r_i'r_i = y_i'y_i - 2 beta'X_i'y_i + beta'X_i'X_i beta`` and ``Z_i'r_i = Z_i'y_i - Z_i'X_i beta``. 1x1 and 2x2
``A_i`` use closed forms (elementwise, vectorised over subjects); larger ones a batched Cholesky factorisation.

The sampler itself runs the compiled kernel of :mod:`hierlmm.kernels.marginalised_op` (value and analytic gradient in
one loop); the PyTensor expression here is the independent implementation its gradient is tested against (by automatic
differentiation), and the NumPy one computes per-subject values for LOO and the exact draws of ``b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor.linalg import block_diag

from hierlmm.design.design import Design
from hierlmm.design.sufficient_stats import SubjectStats, _group_sum, stack_factors, subject_stats


@dataclass(frozen=True, eq=False)
class MarginalisedStats:
    """Per-subject statistics the marginalised likelihood needs, beyond :class:`SubjectStats`."""

    subject: SubjectStats
    XtX_i: np.ndarray  # (M, p, p)
    Xty_i: np.ndarray  # (M, p)
    yty_i: np.ndarray  # (M,)

    @classmethod
    def of(cls, design: Design, stats: SubjectStats | None = None) -> MarginalisedStats:
        """Compute them from a design."""
        stats = stats if stats is not None else subject_stats(design)
        X, y, M = design.X, design.y, stats.M
        return cls(
            stats,
            _group_sum(X[:, :, None] * X[:, None, :], stats.subject_index, M),
            _group_sum(X * y[:, None], stats.subject_index, M),
            _group_sum(y**2, stats.subject_index, M),
        )


def stacked_factor(stats: SubjectStats, factors: list) -> object:
    """The stacked (Q x Q) factor from each block's factor; works for NumPy arrays and PyTensor tensors."""

    if not any(isinstance(f, pt.TensorVariable) for f in factors):
        return stack_factors(stats, factors)

    # block_diag rather than set_subtensor into a constant: Numba (nutpie) refuses to write into constants.
    pieces = [pt.as_tensor(factors[lay.block]) for lay in stats.layouts for _ in range(lay.n_slots)]
    return pieces[0] if len(pieces) == 1 else block_diag(*pieces)


@dataclass(frozen=True, eq=False)
class DrawPieces:
    """``A_i``, its Cholesky factor, ``u_i / sigma^2`` and ``r_i'r_i`` for a batch of draws: (S, M, ...)."""

    A: np.ndarray
    R: np.ndarray
    u: np.ndarray
    rr: np.ndarray

    @classmethod
    def of(cls, ms: MarginalisedStats, beta: np.ndarray, L: np.ndarray, sigma: np.ndarray) -> DrawPieces:
        """Compute them for draws ``beta`` (S, p), stacked ``L`` (S, Q, Q), ``sigma`` (S,)."""
        s = ms.subject
        S, M, p = beta.shape[0], s.M, beta.shape[1]
        s2 = sigma**2
        A = congruence(L, s.ZtZ) / s2[:, None, None, None] + np.eye(s.Q)
        Ztr = s.Zty[None] - np.moveaxis(np.tensordot(s.ZtX, beta, axes=([2], [1])), -1, 0)
        u = times(np.swapaxes(L, -1, -2), Ztr) / s2[:, None, None]
        XtXb = (beta @ np.moveaxis(ms.XtX_i, 1, 0).reshape(p, M * p)).reshape(S, M, p)
        rr = ms.yty_i[None] - 2 * beta @ ms.Xty_i.T + (XtXb * beta[:, None, :]).sum(-1)
        return cls(A, cholesky_lower(A), u, rr)

    def loglik(self, ms: MarginalisedStats, sigma: np.ndarray) -> np.ndarray:
        """Per-subject marginalised log-likelihood (S, M) (see the module notation)."""
        s2 = (sigma**2)[:, None]
        w = solve_lower(self.R, self.u)  # R^-1 u / sigma^2
        logdet = 2 * np.log(np.diagonal(self.R, axis1=-2, axis2=-1)).sum(-1)
        quad = (self.rr - s2 * (w**2).sum(-1)) / s2
        n = ms.subject.n_per_subject[None]
        return -0.5 * (n * np.log(2 * np.pi * s2) + logdet + quad)


SMALL = 3
"""Up to this size, batches of small matrices are multiplied and factorised entry by entry (each entry one vector
operation over all draws and subjects): NumPy's batched ``matmul``/``cholesky`` on millions of 2x2 matrices were
the slowest steps of a fit."""


def congruence(L: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``L_s' S_m L_s`` for every draw ``s`` (L: (S, Q, Q)) and subject ``m`` (S: (M, Q, Q)): (S, M, Q, Q)."""
    Q = L.shape[-1]
    if Q > SMALL:
        return np.swapaxes(L, -1, -2)[:, None] @ S[None] @ L[:, None]
    SL = [[sum(S[None, :, c, d] * L[:, None, d, b] for d in range(Q)) for b in range(Q)] for c in range(Q)]
    out = np.empty((L.shape[0], S.shape[0], Q, Q))
    for a in range(Q):
        for b in range(a, Q):
            out[..., a, b] = sum(L[:, None, c, a] * SL[c][b] for c in range(Q))
            out[..., b, a] = out[..., a, b]
    return out


def times(L: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``L_s v_sm`` for draws ``s`` (L: (S, Q, Q)) and subjects ``m`` (v: (S, M, Q)): (S, M, Q)."""
    Q = L.shape[-1]
    if Q > SMALL:
        return (L[:, None] @ v[..., None])[..., 0]
    return np.stack([sum(L[:, None, a, c] * v[..., c] for c in range(Q)) for a in range(Q)], axis=-1)


def cholesky_lower(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a batch of symmetric positive-definite matrices (..., Q, Q) (see :data:`SMALL`)."""
    Q = A.shape[-1]
    if Q > SMALL:
        return np.linalg.cholesky(A)
    R = np.zeros_like(A)
    for j in range(Q):
        R[..., j, j] = np.sqrt(A[..., j, j] - (R[..., j, :j] ** 2).sum(-1))
        for i in range(j + 1, Q):
            R[..., i, j] = (A[..., i, j] - (R[..., i, :j] * R[..., j, :j]).sum(-1)) / R[..., j, j]
    return R


def solve_lower(R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``R^-1 b`` for lower-triangular ``R`` (..., Q, Q) and ``b`` (..., Q), by forward substitution written out
    over the Q columns (each step vectorised over draws and subjects; NumPy's batched ``solve`` on many 2x2
    systems was the slowest step of a fit)."""
    x = np.empty_like(b)
    for j in range(b.shape[-1]):
        x[..., j] = (b[..., j] - (R[..., j, :j] * x[..., :j]).sum(-1)) / R[..., j, j]
    return x


def solve_lower_transposed(R: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``R'^-1 b`` for lower-triangular ``R`` (..., Q, Q), by back substitution (see :func:`solve_lower`)."""
    x = np.empty_like(b)
    for j in reversed(range(b.shape[-1])):
        x[..., j] = (b[..., j] - (R[..., j + 1:, j] * x[..., j + 1:]).sum(-1)) / R[..., j, j]
    return x


def subject_loglik_numpy(ms: MarginalisedStats, beta: np.ndarray, L: np.ndarray, sigma: float) -> np.ndarray:
    """Per-subject marginalised log-likelihood for one parameter value (NumPy; for LOO and tests)."""
    s = np.array([sigma], dtype=float)
    return DrawPieces.of(ms, np.asarray(beta)[None], np.asarray(L)[None], s).loglik(ms, s)[0]


MAX_UNROLLED = 8
"""Largest stacked block whose Cholesky factorisation is written out elementwise (vectorised over subjects)."""


def _unrolled_cholesky(LSL, u, s2, Q: int):
    """``log|A_i|`` and ``u_i' A_i^-1 u_i`` for all subjects, with ``A_i = I + LSL_i / s2``, by a Cholesky
    factorisation written out entry by entry: each entry is one elementwise operation over the M subjects.

    Written by hand: PyTensor's batched ``cholesky``/``solve_triangular`` loop over subjects one small matrix at a
    time under Numba, which made a 3x3 model's gradient many times slower than these few vector operations.
    """

    a = [[LSL[:, i, j] / s2 + (1.0 if i == j else 0.0) for j in range(Q)] for i in range(Q)]
    low: list[list] = [[None] * Q for _ in range(Q)]
    logdet = 0.0
    w: list = []
    for j in range(Q):
        diag = a[j][j] - sum(low[j][k] ** 2 for k in range(j)) if j else a[j][j]
        low[j][j] = pt.sqrt(diag)
        logdet = logdet + pt.log(diag)
        for i in range(j + 1, Q):
            off = a[i][j] - sum(low[i][k] * low[j][k] for k in range(j)) if j else a[i][j]
            low[i][j] = off / low[j][j]
        rhs = u[:, j] - sum(low[j][k] * w[k] for k in range(j)) if j else u[:, j]
        w.append(rhs / low[j][j])
    return logdet, sum(wj**2 for wj in w)


def subject_loglik_pytensor(ms: MarginalisedStats, beta, L, sigma):
    """Per-subject marginalised log-likelihood as a PyTensor expression of ``beta`` (p,), ``L`` (Q, Q), ``sigma``."""

    s = ms.subject
    M, Q = s.M, s.Q
    s2 = sigma**2
    SL = pt.dot(pt.as_tensor(s.ZtZ.reshape(M * Q, Q)), L).reshape((M, Q, Q))
    LSL = pt.dot(SL.transpose(0, 2, 1).reshape((M * Q, Q)), L).reshape((M, Q, Q))
    Ztr = pt.as_tensor(s.Zty) - pt.dot(pt.as_tensor(s.ZtX), beta)  # (M, Q)
    u = pt.dot(Ztr, L)  # rows: (L' Z'r)'
    rr = pt.as_tensor(ms.yty_i) - 2 * pt.dot(pt.as_tensor(ms.Xty_i), beta) + (
        pt.dot(pt.dot(pt.as_tensor(ms.XtX_i), beta), beta)
    )
    if Q == 1:
        a = 1 + LSL[:, 0, 0] / s2
        logdet = pt.log(a)
        uAu = u[:, 0] ** 2 / a
    elif Q == 2:
        a = 1 + LSL[:, 0, 0] / s2
        b = LSL[:, 0, 1] / s2
        d = 1 + LSL[:, 1, 1] / s2
        det = a * d - b * b
        logdet = pt.log(det)
        uAu = (d * u[:, 0] ** 2 - 2 * b * u[:, 0] * u[:, 1] + a * u[:, 1] ** 2) / det
    elif Q <= MAX_UNROLLED:
        logdet, uAu = _unrolled_cholesky(LSL, u, s2, Q)
    else:
        A = LSL / s2 + pt.eye(Q)
        chol = pt.linalg.cholesky(A)
        logdet = 2 * pt.log(pt.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        w = pt.linalg.solve_triangular(chol, u[:, :, None], lower=True)[:, :, 0]
        uAu = (w**2).sum(axis=1)
    n = pt.as_tensor(s.n_per_subject.astype(float))
    quad = (rr - uAu / s2) / s2
    return -0.5 * (n * pt.log(2 * np.pi * s2) + logdet + quad)
