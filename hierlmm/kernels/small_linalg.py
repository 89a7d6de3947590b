"""Small dense factorisations inside hierlmm's Numba kernels (:mod:`hierlmm.kernels.marginalised_op`,
:mod:`hierlmm.kernels.crossed_op`, :mod:`hierlmm.kernels.woodbury_op`).

Written by hand because ``np.linalg`` inside a Numba kernel allocates and calls LAPACK for every subject's ``q x q``
matrix, which costs more than the arithmetic at these sizes. The kernels call these in place on preallocated arrays.

Notation
--------
``A = R R'`` with ``R`` lower triangular (only ``A``'s lower triangle is read), ``R^-1`` lower triangular, and
``A^-1 = R^-T R^-1``.
"""

from __future__ import annotations

import math

import numba

LOG_2PI = math.log(2.0 * math.pi)  # log(2 pi), the Gaussian constant of every kernel's log-density


@numba.njit(cache=True)
def cholesky_lower(A, R):
    """Fill ``R`` (lower) with ``A = R R'``; return ``log|A|``, or NaN (``R`` incomplete) if ``A`` is not positive
    definite."""
    n = A.shape[0]
    logdet = 0.0
    for j in range(n):
        acc = A[j, j]
        for k in range(j):
            acc -= R[j, k] * R[j, k]
        if not acc > 0.0:
            return math.nan
        R[j, j] = math.sqrt(acc)
        logdet += math.log(acc)
        for a in range(j + 1, n):
            acc = A[a, j]
            for k in range(j):
                acc -= R[a, k] * R[j, k]
            R[a, j] = acc / R[j, j]
    return logdet


@numba.njit(cache=True)
def lower_inverse(R, Rinv):
    """Fill ``Rinv`` with ``R^-1`` (lower triangular; its upper triangle set to 0), column by column."""
    n = R.shape[0]
    for j in range(n):
        for a in range(j):
            Rinv[a, j] = 0.0
        Rinv[j, j] = 1.0 / R[j, j]
        for a in range(j + 1, n):
            acc = 0.0
            for k in range(j, a):
                acc -= R[a, k] * Rinv[k, j]
            Rinv[a, j] = acc / R[a, a]


@numba.njit(cache=True)
def inverse_from_lower_inverse(Rinv, Ainv):
    """Fill ``Ainv`` with ``A^-1 = R^-T R^-1`` (symmetric) from ``R^-1``."""
    n = Rinv.shape[0]
    for a in range(n):
        for b in range(a + 1):
            acc = 0.0
            for k in range(a, n):
                acc += Rinv[k, a] * Rinv[k, b]
            Ainv[a, b] = acc
            Ainv[b, a] = acc
