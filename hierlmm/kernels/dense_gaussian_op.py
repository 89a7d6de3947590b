"""Log-density of stacked dense Gaussian vectors, with its gradient, as one Numba kernel and one PyTensor Op.

The Bayesian model with serially correlated errors (:mod:`hierlmm.engines.bayes.correlated_model`) needs, for every
subject, ``log N(r_i | 0, V_i)`` with ``V_i`` dense. PyTensor's batched ``cholesky`` differentiates through its own
graph, part of which its Numba backend runs in object mode (measured on the chapter's Model I: about 10 ms per gradient,
nearly four minutes for 4 x 400 draws). The gradient with respect to ``V`` and ``r`` has a closed form, so it is written
here once, over subjects of one size stacked in a (k, n, n) array; PyTensor differentiates only the cheap elementwise
graph that builds ``V`` from the parameters. Hand-written because no library offers a batched Gaussian log-density with
this gradient for Numba.

Notation
--------
``V = C C'`` (Cholesky), ``a = V^-1 r``::

    l        = -1/2 sum_i [ n log(2 pi) + log|V_i| + r_i'a_i ]
    dl/dV_i  = 1/2 ( a_i a_i' - V_i^-1 )
    dl/dr_i  = -a_i

Only the lower triangle of ``V_i`` is read, and ``dl/dV_i`` is the symmetric gradient: ``V_i`` must be
built symmetric (as it is), so that the chain rule through both triangles gives the right total. A ``V_i`` that
is not positive definite gives ``l = -inf`` (the sampler rejects the proposal) and zero gradients.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import register_funcify_default_op_cache_key

from hierlmm.kernels.numba_cache import source_version
from hierlmm.kernels.small_linalg import LOG_2PI

_SOURCE_VERSION = source_version(__file__)  # the Numba cache key (hierlmm.kernels.numba_cache)



@numba.njit(cache=True)
def gaussian_loglik_and_grad(V, r):
    """``(l, dl/dV, dl/dr)`` for ``V`` (k, n, n) and ``r`` (k, n) (module notation)."""
    k, n = r.shape
    dV = np.zeros((k, n, n))
    dr = np.zeros((k, n))
    C = np.zeros((n, n))
    Ci = np.zeros((n, n))  # C^-1
    z = np.zeros(n)
    total = 0.0
    for i in range(k):
        logdet = 0.0
        for j in range(n):  # Cholesky, lower (Cholesky-Banachiewicz)
            for m in range(j + 1):
                s = V[i, j, m]
                for t in range(m):
                    s -= C[j, t] * C[m, t]
                if j == m:
                    if not s > 0.0:
                        return -np.inf, np.zeros((k, n, n)), np.zeros((k, n))
                    C[j, j] = math.sqrt(s)
                    logdet += 2.0 * math.log(C[j, j])
                else:
                    C[j, m] = s / C[m, m]
        for c in range(n):  # C^-1 by forward substitution, column by column (lower triangular)
            for j in range(n):
                if j < c:
                    Ci[j, c] = 0.0
                    continue
                s = 1.0 if j == c else 0.0
                for t in range(c, j):
                    s -= C[j, t] * Ci[t, c]
                Ci[j, c] = s / C[j, j]
        for t in range(n):  # z = C^-1 r
            s = 0.0
            for u in range(t + 1):
                s += Ci[t, u] * r[i, u]
            z[t] = s
        for j in range(n):  # a = C^-T z, kept in dr; V^-1 = C^-T C^-1
            w = 0.0
            for t in range(j, n):
                w += Ci[t, j] * z[t]
            dr[i, j] = w
        quad = 0.0
        for j in range(n):
            quad += r[i, j] * dr[i, j]
        total += -0.5 * (n * LOG_2PI + logdet + quad)
        for j in range(n):
            for m in range(n):
                vinv = 0.0
                for t in range(max(j, m), n):
                    vinv += Ci[t, j] * Ci[t, m]
                dV[i, j, m] = 0.5 * (dr[i, j] * dr[i, m] - vinv)
        for j in range(n):
            dr[i, j] = -dr[i, j]
    return total, dV, dr


class DenseGaussianLoglik(Op):
    """PyTensor Op ``(V, r) -> (l, dl/dV, dl/dr)``: ``sum_i log N(r_i | 0, V_i)`` for stacked ``V`` (k, n, n) and
    ``r`` (k, n). Its gradient is the kernel's own (the last two outputs); under Numba the kernel is inlined."""

    __props__ = ()

    def make_node(self, V, r):
        V = pt.as_tensor(V).astype("float64")
        r = pt.as_tensor(r).astype("float64")
        return Apply(self, [V, r], [pt.dscalar(), V.type(), r.type()])

    def perform(self, node, inputs, outputs):
        V, r = inputs
        value, dV, dr = gaussian_loglik_and_grad(np.ascontiguousarray(V), np.ascontiguousarray(r))
        outputs[0][0] = np.asarray(value)
        outputs[1][0] = dV
        outputs[2][0] = dr

    def pullback(self, inputs, outputs, output_grads):
        _, dV, dr = outputs
        g = output_grads[0]
        return [g * dV, g * dr]

    def connection_pattern(self, node):
        return [[True, False, False], [True, False, False]]


@register_funcify_default_op_cache_key(DenseGaussianLoglik)
def _numba_dense_gaussian(op: DenseGaussianLoglik, node=None, **kwargs):
    @numba.njit
    def dense_gaussian(V, r):
        value, dV, dr = gaussian_loglik_and_grad(np.ascontiguousarray(V), np.ascontiguousarray(r))
        return np.asarray(value), dV, dr

    return dense_gaussian, _SOURCE_VERSION


def dense_gaussian_loglik(V, r):
    """``sum_i log N(r_i | 0, V_i)`` as a PyTensor scalar, differentiable through the kernel's gradient."""
    return DenseGaussianLoglik()(V, r)[0]
