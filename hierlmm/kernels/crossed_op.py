"""The crossed-factor marginalised log-likelihood with scalar random effects, as one Numba kernel with its analytic
gradient and a PyTensor Op (the crossed counterpart of :mod:`hierlmm.kernels.marginalised_op`).

:func:`hierlmm.kernels.crossed_loglik.crossed_loglik` uses it when every block has one effect per level (glaucoma's
``(1 | id) + (1 | field)``); other crossed designs keep the PyTensor expression (automatic gradient). The kernel's
graph is a single node, so PyTensor compiles it in a fraction of the time the expression's gradient graph takes,
and the kernel is cached on disk. Written by hand because no library differentiates this block elimination.

Notation
--------
As in :mod:`hierlmm.kernels.crossed_loglik`, with ``Lambda = diag(lam)`` (``lam_l = l_e`` for the M eliminated levels,
``lam_r`` for the Q_r others), ``c = Z'r``, ``u = Lambda c``, ``A = I + Lambda Z'Z Lambda / s2`` and
``w = A^-1 u``. Because ``Lambda Z'Z Lambda = s2 (A - I)`` the gradient needs only ``w`` and the diagonal of
``A^-1``::

    dl/dlam_i = ( w_i^2 / s2^2 - (1 - (A^-1)_ii) ) / lam_i
    dl/dbeta  = ( X'r - (Z'X)' Lambda w / s2 ) / s2
    dl/ds2    = -1/2 [ N / s2 - (M + Q_r - tr A^-1) / s2 - r'r / s2^2 + (u'w + w'w) / s2^3 ]

With ``t_e = l_e^2 / s2``, ``a_l = 1 + t_e n_l`` and ``C = R_c R_c'`` the Schur complement:
``w_r = C^-1 (u_r - A_re A_ee^-1 u_e)``, ``w_l = (u_l - l_e (s_l . (lam_r w_r)) / s2) / a_l``,
``diag(A^-1)_r = diag(C^-1)`` and ``sum_l (A^-1)_ll = sum_l 1/a_l + tr(C^-1 Lambda_r G_2 Lambda_r)`` with
``G_2 = sum_l l_e^2 s_l s_l' / (s2^2 a_l^2)`` (grouped by ``n_l`` like the value's Gram matrix).
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

from hierlmm.kernels.numba_cache import source_version
from hierlmm.kernels.small_linalg import LOG_2PI, cholesky_lower, lower_inverse

_SOURCE_VERSION = source_version(__file__)  # the Numba cache key (hierlmm.kernels.numba_cache)



@numba.njit(cache=True)
def crossed_loglik_and_grad(beta, lam_e, lam_r, sigma, n_values, grams, n_l, S_er, S_rr, Zy_e, ZX_e, Zy_r,
                            ZX_r, XtX, Xty, yty, n_total):
    """Value and gradient (``beta``, ``lam_e``, ``lam_r``, ``sigma``) of the marginalised log-likelihood (module
    notation). ``n_values`` (G,) and ``grams`` (G, Q_r, Q_r) are :attr:`CrossedStats.gram_groups`, ``n_l`` (M,)
    the eliminated levels' counts, ``S_er`` (M, Q_r)."""
    M, Q = S_er.shape
    G, p = n_values.shape[0], beta.shape[0]
    s2 = sigma * sigma
    s4 = s2 * s2
    t_e = lam_e * lam_e / s2
    XtXb = XtX @ beta
    rr = yty + beta @ (XtXb - 2.0 * Xty)
    c_e = Zy_e - ZX_e @ beta
    c_r = Zy_r - ZX_r @ beta
    # C = I + Lambda_r (S_rr / s2 - sum_g omega_g H_g) Lambda_r and G_2 = sum_g omega2_g H_g (lower triangles)
    C = np.zeros((Q, Q))
    g2 = np.zeros((Q, Q))
    for g in range(G):
        d = 1.0 + t_e * n_values[g]
        omega = t_e / (s2 * d)
        omega2 = omega / d
        for i in range(Q):
            for j in range(i + 1):
                h = grams[g, i, j]
                C[i, j] -= omega * h
                g2[i, j] += omega2 * h
    for i in range(Q):
        for j in range(i + 1):
            C[i, j] = lam_r[i] * (C[i, j] + S_rr[i, j] / s2) * lam_r[j]
        C[i, i] += 1.0
    a = 1.0 + t_e * n_l
    t = c_r.copy()  # lam_r * (c_r - t_e S_er' (c_e / a))
    for m in range(M):
        f = t_e * c_e[m] / a[m]
        for i in range(Q):
            t[i] -= S_er[m, i] * f
    t *= lam_r
    # Cholesky C = R R' (lower), its inverse, z = R^-1 t, w_r = R'^-1 z
    R = np.zeros((Q, Q))
    logdet = cholesky_lower(C, R)  # hierlmm.kernels.small_linalg
    if math.isnan(logdet):  # C = I + Lambda_r (...) Lambda_r is positive definite but for rounding
        return math.nan, np.zeros(p), math.nan, np.zeros(Q), math.nan
    Rinv = np.zeros((Q, Q))
    lower_inverse(R, Rinv)
    z = np.zeros(Q)
    for i in range(Q):
        acc = 0.0
        for k in range(i + 1):
            acc += Rinv[i, k] * t[k]
        z[i] = acc
    w_r = np.zeros(Q)
    for i in range(Q):
        acc = 0.0
        for k in range(i, Q):
            acc += Rinv[k, i] * z[k]
        w_r[i] = acc
    # C^-1 = Rinv' Rinv: its diagonal, and tr(C^-1 Lambda_r G_2 Lambda_r) from the lower triangles
    diag_r = np.zeros(Q)
    tr_g2 = 0.0
    for i in range(Q):
        for j in range(i + 1):
            acc = 0.0
            for k in range(i, Q):
                acc += Rinv[k, i] * Rinv[k, j]
            term = acc * lam_r[i] * g2[i, j] * lam_r[j]
            tr_g2 += term if i == j else 2.0 * term
            if i == j:
                diag_r[i] = acc
    vv = 0.0
    tr_e = tr_g2
    for m in range(M):
        logdet += math.log(a[m])
        vv += c_e[m] * c_e[m] / a[m]
        tr_e += 1.0 / a[m]
    vv *= lam_e * lam_e
    uw = vv + z @ z
    value = -0.5 * (n_total * (LOG_2PI + math.log(s2)) + logdet + (rr - uw / s2) / s2)
    lw_r = lam_r * w_r
    w_e = np.zeros(M)
    d_beta = (Xty - XtXb) / s2
    for m in range(M):
        acc = 0.0
        for i in range(Q):
            acc += S_er[m, i] * lw_r[i]
        w_e[m] = lam_e * (c_e[m] - acc / s2) / a[m]
        for b in range(p):
            d_beta[b] -= ZX_e[m, b] * lam_e * w_e[m] / s4
    for i in range(Q):
        for b in range(p):
            d_beta[b] -= ZX_r[i, b] * lw_r[i] / s4
    ww = w_e @ w_e + w_r @ w_r
    d_lam_e = (w_e @ w_e / s4 - (M - tr_e)) / lam_e
    d_lam_r = (w_r * w_r / s4 - (1.0 - diag_r)) / lam_r
    tr_all = tr_e + np.sum(diag_r)
    d_s2 = -0.5 * (n_total / s2 - (M + Q - tr_all) / s2 - rr / s4 + (uw + ww) / (s4 * s2))
    return value, d_beta, d_lam_e, d_lam_r, 2.0 * sigma * d_s2


class CrossedLoglik(Op):
    """PyTensor Op ``(beta, lam_e, lam_r, sigma, *data) -> (loglik, d_beta, d_lam_e, d_lam_r, d_sigma)``; its
    gradient is the kernel's own (as :class:`hierlmm.kernels.marginalised_op.MarginalisedLoglik`)."""

    __props__ = ()

    def make_node(self, beta, lam_e, lam_r, sigma, *data):
        inputs = [pt.as_tensor(v).astype("float64") for v in (beta, lam_e, lam_r, sigma, *data)]
        return Apply(self, inputs, [pt.dscalar(), inputs[0].type(), inputs[1].type(), inputs[2].type(),
                                    inputs[3].type()])

    def perform(self, node, inputs, outputs):
        beta, lam_e, lam_r, sigma, *data = inputs
        out = crossed_loglik_and_grad(np.ascontiguousarray(beta), float(lam_e), np.ascontiguousarray(lam_r),
                                      float(sigma), *data[:-2], float(data[-2]), float(data[-1]))
        for k, value in enumerate(out):
            outputs[k][0] = np.asarray(value)

    def pullback(self, inputs, outputs, output_grads):
        g = output_grads[0]
        return [g * d for d in outputs[1:]] + [disconnected_type() for _ in inputs[4:]]

    def connection_pattern(self, node):
        return [[True, False, False, False, False]] * 4 + [[False] * 5] * (len(node.inputs) - 4)


@register_funcify_default_op_cache_key(CrossedLoglik)
def _numba_crossed_loglik(op: CrossedLoglik, node=None, **kwargs):
    @numba.njit
    def crossed_loglik(beta, lam_e, lam_r, sigma, n_values, grams, n_l, S_er, S_rr, Zy_e, ZX_e, Zy_r, ZX_r,
                       XtX, Xty, yty, n_total):
        c = np.ascontiguousarray  # C-layout types for the kernel (no copy of C-ordered data): 2x faster loops
        value, d_beta, d_lam_e, d_lam_r, d_sigma = crossed_loglik_and_grad(
            c(beta), lam_e.item(), c(lam_r), sigma.item(), c(n_values), c(grams), c(n_l), c(S_er), c(S_rr), c(Zy_e),
            c(ZX_e), c(Zy_r), c(ZX_r), c(XtX), c(Xty), yty.item(), n_total.item())
        return np.asarray(value), d_beta, np.asarray(d_lam_e), d_lam_r, np.asarray(d_sigma)

    return crossed_loglik, _SOURCE_VERSION


def crossed_data(cs) -> tuple[np.ndarray, ...]:
    """The statistics :class:`CrossedLoglik` reads (from a :class:`~hierlmm.kernels.crossed_loglik.CrossedStats` whose
    blocks all have one effect per level), as C-contiguous float arrays."""
    n_values, grams = cs.gram_groups
    arrays = (n_values, grams, cs.S_ee[:, 0, 0], cs.S_er[:, 0, :], cs.S_rr, cs.Zy_e[:, 0], cs.ZX_e[:, 0, :],
              cs.Zy_r, cs.ZX_r, cs.XtX, cs.Xty, np.asarray(cs.yty), np.asarray(float(cs.n)))
    return tuple(np.asarray(a, dtype=np.float64, order="C") for a in arrays)  # (ascontiguousarray makes 0-d 1-d)


def crossed_loglik_op(cs, beta, lam_e, lam_r, sigma):
    """The log-likelihood as a PyTensor scalar of ``beta`` (p,), ``lam_e`` (scalar), ``lam_r`` (Q_r,) and
    ``sigma``, differentiable through the kernel's analytic gradient."""
    data = [pt.constant(d) for d in crossed_data(cs)]
    return CrossedLoglik()(beta, lam_e, lam_r, sigma, *data)[0]
