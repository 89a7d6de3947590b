"""The marginalised log-likelihood and its analytic gradient, as one compiled kernel and one PyTensor Op.

The marginal sampler spends nearly all its time in this function, so it is written once as a Numba loop over
subjects (cached on disk: compiled once per machine) and handed to PyTensor as an Op whose gradient is the kernel's
own. PyTensor then only differentiates the small graph of priors and transforms around it. Written by hand because
no library offers the gradient of a Gaussian marginalised likelihood from per-subject sufficient statistics; autodiff of
the elementwise graph in :mod:`hierlmm.kernels.marginalised_loglik` gives the same numbers at several times the cost
per call.

Notation
--------
As in :mod:`hierlmm.kernels.marginalised_loglik`: ``S_i = Z_i'Z_i``, ``c_i = Z_i'r_i``, ``A_i = I + L'S_iL / s2`` with
``s2 = sigma^2``, ``u_i = L'c_i`` and ``w_i = A_i^-1 u_i``. With ``l = sum_i log p(y_i)``::

    dl/dbeta = ( X'r - sum_i (Z_i'X_i)' L w_i / s2 ) / s2
    dl/dL    = sum_i [ -S_i L A_i^-1 / s2 + ( c_i w_i' - S_i L w_i w_i' / s2 ) / s2^2 ]
    dl/ds2   = -1/2 [ N / s2 - sum_i (Q - tr A_i^-1) / s2 - r'r / s2^2 + sum_i (u_i'w_i + w_i'w_i) / s2^3 ]

and ``dl/dsigma = 2 sigma dl/ds2``. ``r'r`` and ``X'r`` need only the global ``X'X``, ``X'y``, ``y'y``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

from hierlmm.kernels.marginalised_loglik import MarginalisedStats
from hierlmm.kernels.numba_cache import source_version
from hierlmm.kernels.small_linalg import LOG_2PI, cholesky_lower, inverse_from_lower_inverse, lower_inverse

_SOURCE_VERSION = source_version(__file__)  # the Numba cache key (hierlmm.kernels.numba_cache)



@numba.njit(cache=True, fastmath=False)
def marginalised_loglik_and_grad(beta, L, sigma, ZtZ, ZtX, Zty, XtX, Xty, yty, n_total):
    """Total marginalised log-likelihood and its gradient with respect to ``beta``, ``L`` and ``sigma``.

    Parameters
    ----------
    beta : (p,) array
    L : (Q, Q) array
        The stacked lower-triangular factor (``D = L L'`` block by block); only its lower triangle is read.
    sigma : float
    ZtZ, ZtX, Zty : (M, Q, Q), (M, Q, p), (M, Q) arrays
        Per-subject sufficient statistics.
    XtX, Xty, yty, n_total
        Global ``X'X``, ``X'y``, ``y'y`` and number of rows.

    Returns
    -------
    value, d_beta (p,), d_L (Q, Q), d_sigma
        ``d_L`` is the gradient with respect to every entry of ``L`` (the upper triangle's is meaningless).
    """
    M, Q, p = ZtX.shape
    s2 = sigma * sigma
    XtXb = np.zeros(p)
    for a in range(p):
        acc = 0.0
        for b in range(p):
            acc += XtX[a, b] * beta[b]
        XtXb[a] = acc
    rr = yty
    d_beta = np.zeros(p)
    for a in range(p):
        rr += beta[a] * (XtXb[a] - 2.0 * Xty[a])
        d_beta[a] = (Xty[a] - XtXb[a]) / s2
    d_L = np.zeros((Q, Q))
    c = np.zeros(Q)
    u = np.zeros(Q)
    w = np.zeros(Q)
    Lw = np.zeros(Q)
    SLw = np.zeros(Q)
    SL = np.zeros((Q, Q))
    A = np.zeros((Q, Q))
    R = np.zeros((Q, Q))  # lower Cholesky factor of A
    Ainv = np.zeros((Q, Q))
    Rinv = np.zeros((Q, Q))
    logdet = 0.0
    uw_sum = 0.0
    ww_sum = 0.0
    tr_sum = 0.0
    s4 = s2 * s2
    for i in range(M):
        for a in range(Q):
            acc = Zty[i, a]
            for b in range(p):
                acc -= ZtX[i, a, b] * beta[b]
            c[a] = acc
        for a in range(Q):  # SL = S_i L (L lower triangular)
            for b in range(Q):
                acc = 0.0
                for k in range(b, Q):
                    acc += ZtZ[i, a, k] * L[k, b]
                SL[a, b] = acc
        for a in range(Q):  # A = I + L' S L / s2 ; u = L' c
            acc = 0.0
            for k in range(a, Q):
                acc += L[k, a] * c[k]
            u[a] = acc
            for b in range(a + 1):
                acc = 0.0
                for k in range(a, Q):
                    acc += L[k, a] * SL[k, b]
                A[a, b] = acc / s2 + (1.0 if a == b else 0.0)
                A[b, a] = A[a, b]
        logdet_i = cholesky_lower(A, R)  # A = R R', A^-1 = R^-T R^-1 (hierlmm.kernels.small_linalg)
        if math.isnan(logdet_i):  # A = I + L'S L / s2 is positive definite but for rounding
            return math.nan, d_beta, d_L, math.nan
        logdet += logdet_i
        lower_inverse(R, Rinv)
        inverse_from_lower_inverse(Rinv, Ainv)
        for a in range(Q):
            tr_sum += Ainv[a, a]
        for a in range(Q):
            acc = 0.0
            for b in range(Q):
                acc += Ainv[a, b] * u[b]
            w[a] = acc
        for a in range(Q):
            uw_sum += u[a] * w[a]
            ww_sum += w[a] * w[a]
            acc = 0.0
            for k in range(a + 1):
                acc += L[a, k] * w[k]
            Lw[a] = acc
            acc = 0.0
            for k in range(Q):
                acc += SL[a, k] * w[k]
            SLw[a] = acc
        for b in range(p):
            acc = 0.0
            for a in range(Q):
                acc += ZtX[i, a, b] * Lw[a]
            d_beta[b] -= acc / s4
        for a in range(Q):
            for b in range(a + 1):
                acc = 0.0
                for k in range(Q):
                    acc += SL[a, k] * Ainv[k, b]
                d_L[a, b] += -acc / s2 + (c[a] * w[b] - SLw[a] * w[b] / s2) / s4
    value = -0.5 * (n_total * (LOG_2PI + math.log(s2)) + logdet + (rr - uw_sum / s2) / s2)
    d_s2 = -0.5 * (n_total / s2 - (M * Q - tr_sum) / s2 - rr / s4 + (uw_sum + ww_sum) / (s4 * s2))
    return value, d_beta, d_L, 2.0 * sigma * d_s2


@numba.njit(cache=True)
def _global_terms(beta, XtX, Xty, yty, s2):
    """``r'r`` and ``X'r / s2`` from the global cross-products."""
    XtXb = XtX @ beta
    return yty + beta @ (XtXb - 2.0 * Xty), (Xty - XtXb) / s2


@numba.njit(cache=True)
def marginalised_loglik_and_grad_q1(beta, L, sigma, ZtZ, ZtX, Zty, XtX, Xty, yty, n_total):
    """:func:`marginalised_loglik_and_grad` written out for one random effect (Q = 1): several times faster."""
    M, _, p = ZtX.shape
    s2 = sigma * sigma
    s4 = s2 * s2
    rr, d_beta = _global_terms(beta, XtX, Xty, yty, s2)
    l00 = L[0, 0]
    g00 = logdet = uw = ww = tr = 0.0
    for i in range(M):
        c0 = Zty[i, 0]
        for b in range(p):
            c0 -= ZtX[i, 0, b] * beta[b]
        sl = ZtZ[i, 0, 0] * l00
        a = 1.0 + l00 * sl / s2
        logdet += math.log(a)
        inv = 1.0 / a
        tr += inv
        u0 = l00 * c0
        w0 = inv * u0
        uw += u0 * w0
        ww += w0 * w0
        for b in range(p):
            d_beta[b] -= ZtX[i, 0, b] * l00 * w0 / s4
        g00 += -sl * inv / s2 + (c0 * w0 - sl * w0 * w0 / s2) / s4
    value = -0.5 * (n_total * (LOG_2PI + math.log(s2)) + logdet + (rr - uw / s2) / s2)
    d_s2 = -0.5 * (n_total / s2 - (M - tr) / s2 - rr / s4 + (uw + ww) / (s4 * s2))
    d_L = np.zeros((1, 1))
    d_L[0, 0] = g00
    return value, d_beta, d_L, 2.0 * sigma * d_s2


@numba.njit(cache=True)
def marginalised_loglik_and_grad_q2(beta, L, sigma, ZtZ, ZtX, Zty, XtX, Xty, yty, n_total):
    """:func:`marginalised_loglik_and_grad` written out for two random effects (Q = 2): several times faster."""
    M, _, p = ZtX.shape
    s2 = sigma * sigma
    s4 = s2 * s2
    rr, d_beta = _global_terms(beta, XtX, Xty, yty, s2)
    l00, l10, l11 = L[0, 0], L[1, 0], L[1, 1]
    g00 = g10 = g11 = logdet = uw = ww = tr = 0.0
    for i in range(M):
        c0 = Zty[i, 0]
        c1 = Zty[i, 1]
        for b in range(p):
            c0 -= ZtX[i, 0, b] * beta[b]
            c1 -= ZtX[i, 1, b] * beta[b]
        s00, s01, s11 = ZtZ[i, 0, 0], ZtZ[i, 0, 1], ZtZ[i, 1, 1]
        sl00 = s00 * l00 + s01 * l10
        sl01 = s01 * l11
        sl10 = s01 * l00 + s11 * l10
        sl11 = s11 * l11
        a00 = 1.0 + (l00 * sl00 + l10 * sl10) / s2
        a01 = (l00 * sl01 + l10 * sl11) / s2
        a11 = 1.0 + l11 * sl11 / s2
        det = a00 * a11 - a01 * a01
        logdet += math.log(det)
        i00, i01, i11 = a11 / det, -a01 / det, a00 / det
        tr += i00 + i11
        u0 = l00 * c0 + l10 * c1
        u1 = l11 * c1
        w0 = i00 * u0 + i01 * u1
        w1 = i01 * u0 + i11 * u1
        uw += u0 * w0 + u1 * w1
        ww += w0 * w0 + w1 * w1
        lw0 = l00 * w0
        lw1 = l10 * w0 + l11 * w1
        for b in range(p):
            d_beta[b] -= (ZtX[i, 0, b] * lw0 + ZtX[i, 1, b] * lw1) / s4
        slw0 = sl00 * w0 + sl01 * w1
        slw1 = sl10 * w0 + sl11 * w1
        g00 += -(sl00 * i00 + sl01 * i01) / s2 + (c0 * w0 - slw0 * w0 / s2) / s4
        g10 += -(sl10 * i00 + sl11 * i01) / s2 + (c1 * w0 - slw1 * w0 / s2) / s4
        g11 += -(sl10 * i01 + sl11 * i11) / s2 + (c1 * w1 - slw1 * w1 / s2) / s4
    value = -0.5 * (n_total * (LOG_2PI + math.log(s2)) + logdet + (rr - uw / s2) / s2)
    d_s2 = -0.5 * (n_total / s2 - (2 * M - tr) / s2 - rr / s4 + (uw + ww) / (s4 * s2))
    d_L = np.zeros((2, 2))
    d_L[0, 0], d_L[1, 0], d_L[1, 1] = g00, g10, g11
    return value, d_beta, d_L, 2.0 * sigma * d_s2


def kernel_for(Q: int):
    """The fastest kernel for ``Q`` stacked random effects."""
    return {1: marginalised_loglik_and_grad_q1, 2: marginalised_loglik_and_grad_q2}.get(Q, marginalised_loglik_and_grad)


class MarginalisedLoglik(Op):
    """PyTensor Op ``(beta, L, sigma, *data) -> (loglik, d_beta, d_L, d_sigma)``: the marginalised log-likelihood.

    ``data`` are the sufficient statistics (constants of the graph: ``Z_i'Z_i``, ``Z_i'X_i``, ``Z_i'y_i``, ``X'X``,
    ``X'y``, ``y'y``, N). Its gradient is the kernel's own (the last three outputs), so value and gradient come from
    one call. It runs in PyTensor's Python and Numba backends; under Numba (nutpie's default) the kernel is inlined
    and the compiled graph is cached on disk.
    """

    __props__ = ("Q",)

    def __init__(self, Q: int) -> None:
        self.Q = int(Q)

    def make_node(self, beta, L, sigma, *data):
        beta = pt.as_tensor(beta).astype("float64")
        L = pt.as_tensor(L).astype("float64")
        sigma = pt.as_tensor(sigma).astype("float64")
        data = [pt.as_tensor(d).astype("float64") for d in data]
        return Apply(self, [beta, L, sigma, *data], [pt.dscalar(), beta.type(), L.type(), sigma.type()])

    def perform(self, node, inputs, outputs):
        beta, L, sigma, ZtZ, ZtX, Zty, XtX, Xty, yty, n_total = inputs
        value, d_beta, d_L, d_sigma = kernel_for(self.Q)(
            np.ascontiguousarray(beta), np.ascontiguousarray(L), float(sigma), ZtZ, ZtX, Zty, XtX, Xty,
            float(yty), float(n_total))
        outputs[0][0] = np.asarray(value)
        outputs[1][0] = d_beta
        outputs[2][0] = d_L
        outputs[3][0] = np.asarray(d_sigma)

    def pullback(self, inputs, outputs, output_grads):
        _, d_beta, d_L, d_sigma = outputs
        g = output_grads[0]
        return [g * d_beta, g * d_L, g * d_sigma] + [disconnected_type() for _ in inputs[3:]]

    def connection_pattern(self, node):
        return [[True, False, False, False]] * 3 + [[False] * 4] * (len(node.inputs) - 3)


@register_funcify_default_op_cache_key(MarginalisedLoglik)
def _numba_marginalised_loglik(op: MarginalisedLoglik, node=None, **kwargs):
    kernel = kernel_for(op.Q)

    @numba.njit
    def marginalised_loglik(beta, L, sigma, ZtZ, ZtX, Zty, XtX, Xty, yty, n_total):
        value, d_beta, d_L, d_sigma = kernel(np.ascontiguousarray(beta), np.ascontiguousarray(L), sigma.item(),
                                             ZtZ, ZtX, Zty, XtX, Xty, yty.item(), n_total.item())
        return np.asarray(value), d_beta, d_L, np.asarray(d_sigma)

    return marginalised_loglik, _SOURCE_VERSION


def marginalised_data(ms: MarginalisedStats) -> tuple[np.ndarray, ...]:
    """The sufficient statistics :class:`MarginalisedLoglik` reads, as C-contiguous float arrays."""
    s = ms.subject
    arrays = tuple(np.ascontiguousarray(a, dtype=np.float64) for a in (s.ZtZ, s.ZtX, s.Zty, s.XtX, s.Xty))
    return (*arrays, np.asarray(ms.yty_i.sum(), dtype=np.float64), np.asarray(s.n_per_subject.sum(), dtype=np.float64))


def marginalised_loglik_op(ms: MarginalisedStats, beta, L, sigma):
    """The total marginalised log-likelihood as a PyTensor scalar of ``beta`` (p,), stacked ``L`` (Q, Q) and ``sigma``,
    differentiable through the kernel's analytic gradient."""
    data = [pt.constant(d) for d in marginalised_data(ms)]
    return MarginalisedLoglik(ms.subject.Q)(beta, L, sigma, *data)[0]
