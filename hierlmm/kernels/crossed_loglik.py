"""The exact marginalised likelihood, and exact draws of ``b``, when grouping factors are crossed.

The per-subject route (:mod:`hierlmm.kernels.marginalised_loglik`) needs every factor nested in one outermost factor.
With crossed factors (glaucoma's ``(1 | id) + (1 | field)``) no subject splits the data, but all random effects can
still be integrated out exactly: given ``theta`` the likelihood needs only the global cross-products ``Z'Z``, ``Z'X``,
``Z'y``, ``X'X``, ``X'y``, ``y'y`` (:func:`hierlmm.design.cross_products.cross_products`), so its cost does not depend
on the number of rows. One block is *eliminated*: the one with the most random effects (``id``, 139 levels). Its part of
``Z'Z`` is block diagonal (a row has one level), so it is factorised level by level, and only the Schur complement of
the other blocks (``field``: 42 x 42) needs a dense Cholesky factorisation.

Notation
--------
``Z = [Z_e, Z_r]`` (eliminated block, the rest), ``Lambda = diag(Lambda_e, Lambda_r)`` with ``Lambda_e`` the block's
factor ``L_e`` repeated per level and ``Lambda_r`` every other block's ``L_k`` repeated per level (``D_k = L_k L_k'``),
``s2 = sigma^2``, ``r = y - X beta``, ``u = Lambda' Z' r`` and ``A = I + Lambda' Z'Z Lambda / s2``::

    A = [[A_ee, A_er], [A_re, A_rr]],   A_ee = diag_l( I + L_e' Z_el'Z_el L_e / s2 ) = diag_l(R_l R_l')
    W_l = R_l^-1 A_er,l,   v_l = R_l^-1 u_e,l,   C = A_rr - sum_l W_l'W_l = R_c R_c',   z = R_c^-1 (u_r - sum_l W_l'v_l)
    log|A| = sum_l log|A_ee,l| + log|C|,          u' A^-1 u = sum_l v_l'v_l + z'z
    log p(y | theta) = -1/2 ( N log(2 pi s2) + log|A| + (r'r - u'A^-1 u / s2) / s2 )

(``V = Z Lambda Lambda' Z' + s2 I``, by the determinant lemma and Woodbury). The random effects given ``theta`` are
``b = Lambda x`` with ``x ~ N(A^-1 u / s2, A^-1)``; with the block factor ``R = [[R_ee, 0], [W', R_c]]`` of ``A``
a draw is ``x = R'^-1 (R^-1 u / s2 + e)``, ``e ~ N(0, I)``: ``x_r = R_c'^-1 (z / s2 + e_r)``,
``x_e,l = R_l'^-1 (v_l / s2 + e_l - W_l x_r)``.

NUTS runs on :func:`crossed_loglik`: with one effect per level of every factor, the Numba kernel of
:mod:`hierlmm.kernels.crossed_op` (analytic gradient); otherwise a PyTensor expression differentiated automatically. On
glaucoma both take about 0.1 ms per value and gradient; the kernel compiles in less than half the time, and the
whole fit is about 2 s shorter with it (``bench/crossed_gradient.py``, ``docs/bayes.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pytensor.tensor as pt
from pytensor.tensor import linalg
from pytensor.tensor.linalg import block_diag

from hierlmm.design.cross_products import cross_products
from hierlmm.design.design import Design
from hierlmm.kernels.crossed_op import crossed_loglik_op
from hierlmm.kernels.marginalised_loglik import cholesky_lower, solve_lower, solve_lower_transposed


@dataclass(frozen=True, eq=False)
class CrossedStats:
    """The cross-products, split into the eliminated block ``e`` and the rest ``r`` (module notation).

    Attributes
    ----------
    eliminated
        Index (in ``design.blocks``) of the block factorised level by level.
    rest
        Indices of the other blocks, in the order of their columns in ``Z_r``.
    S_ee, S_er, S_rr
        ``Z_el'Z_el`` per level ``l`` (M_e, q_e, q_e), ``Z_el'Z_r`` (M_e, q_e, Q_r), ``Z_r'Z_r`` (Q_r, Q_r).
    Zy_e, ZX_e, Zy_r, ZX_r
        ``Z_e'y`` (M_e, q_e), ``Z_e'X`` (M_e, q_e, p), ``Z_r'y`` (Q_r,), ``Z_r'X`` (Q_r, p).
    XtX, Xty, yty, n
        Global cross-products and number of rows.
    """

    eliminated: int
    rest: tuple[int, ...]
    levels: tuple[int, ...]  # levels of every block (design order)
    qs: tuple[int, ...]  # effects per level of every block (design order)
    S_ee: np.ndarray
    S_er: np.ndarray
    S_rr: np.ndarray
    Zy_e: np.ndarray
    ZX_e: np.ndarray
    Zy_r: np.ndarray
    ZX_r: np.ndarray
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    n: int

    @classmethod
    def of(cls, design: Design) -> CrossedStats:
        """Compute them from a design (any grouping factors; meant for crossed ones)."""
        cp = cross_products(design)
        sizes = [b.n_levels * b.q for b in design.blocks]
        e = int(np.argmax(sizes))  # first of the largest
        rest = tuple(k for k in range(len(sizes)) if k != e)
        cols_e = np.arange(cp.offsets[e], cp.offsets[e] + sizes[e])
        cols_r = np.concatenate([np.arange(cp.offsets[k], cp.offsets[k] + sizes[k]) for k in rest])
        M, q = design.blocks[e].n_levels, design.blocks[e].q
        S_ee_full = cp.ZtZ[np.ix_(cols_e, cols_e)].reshape(M, q, M, q)
        S_ee = S_ee_full[np.arange(M), :, np.arange(M), :]  # the diagonal blocks (the rest are zero)
        return cls(e, rest, tuple(b.n_levels for b in design.blocks), tuple(b.q for b in design.blocks),
                   np.ascontiguousarray(S_ee), cp.ZtZ[np.ix_(cols_e, cols_r)].reshape(M, q, -1),
                   cp.ZtZ[np.ix_(cols_r, cols_r)], cp.Zty[cols_e].reshape(M, q), cp.ZtX[cols_e].reshape(M, q, -1),
                   cp.Zty[cols_r], cp.ZtX[cols_r], cp.XtX, cp.Xty, cp.yty, design.n_obs)

    @cached_property
    def gram_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """With one effect per eliminated level: the distinct ``n_l = Z_el'Z_el`` (G,) and, per distinct value, the
        sum of ``s_l s_l'`` over its levels (G, Q_r, Q_r), ``s_l = Z_el'Z_r`` (see :func:`crossed_loglik`)."""
        n_values, group = np.unique(self.S_ee[:, 0, 0], return_inverse=True)
        rows = self.S_er[:, 0, :]
        grams = np.zeros((n_values.size, self.Q_r, self.Q_r))
        np.add.at(grams, group, rows[:, :, None] * rows[:, None, :])
        return n_values, grams

    @property
    def Q_r(self) -> int:
        """Number of random effects outside the eliminated block."""
        return self.S_rr.shape[0]

    def rest_slices(self) -> list[tuple[int, slice]]:
        """``(block, columns of Z_r)`` of every non-eliminated block."""
        out, start = [], 0
        for k in self.rest:
            size = self.levels[k] * self.qs[k]
            out.append((k, slice(start, start + size)))
            start += size
        return out


def _rest_factor(cs: CrossedStats, factors: list) -> object:
    """``Lambda_r`` (Q_r x Q_r, PyTensor): every non-eliminated block's factor repeated per level, block diagonal."""

    pieces = [pt.linalg.kron(np.eye(cs.levels[k]), pt.as_tensor(factors[k])) for k in cs.rest]
    return pieces[0] if len(pieces) == 1 else block_diag(*pieces)


def _rest_scale(cs: CrossedStats, factors: list, pt) -> tuple[object, bool]:
    """``Lambda_r`` as its diagonal (Q_r,) when every other block has one effect per level, else as the matrix."""
    if all(cs.qs[k] == 1 for k in cs.rest):
        return pt.concatenate([pt.ones(cs.levels[k]) * pt.as_tensor(factors[k])[0, 0] for k in cs.rest]), True
    return _rest_factor(cs, factors), False


def crossed_loglik(cs: CrossedStats, beta, factors: list, sigma, kernel: bool = True):
    """The marginalised log-likelihood (module notation) as a PyTensor scalar of ``beta`` (p,), every block's factor
    ``L_k`` (q_k, q_k) and ``sigma``; differentiable by PyTensor.

    When every block has one effect per level and ``kernel`` is true, the compiled kernel of
    :mod:`hierlmm.kernels.crossed_op` computes it with its analytic gradient; otherwise (and as that kernel's reference
    in the tests) this PyTensor expression, differentiated automatically.

    With one effect per level of the eliminated block (``(1 | id)``), ``A_ee`` is a vector ``a_l = 1 + l_e^2 n_l /
    s2`` (``n_l = Z_el'Z_el``) and ``sum_l W_l'W_l = Lambda_r' (sum_l omega_l s_l s_l') Lambda_r`` with ``s_l`` the
    row ``Z_el'Z_r`` and ``omega_l = l_e^2 / (s2^2 a_l)``: the weights depend on the level only through ``n_l``, so
    levels with equal ``n_l`` share one precomputed ``sum s_l s_l'`` (:attr:`CrossedStats.gram_groups`; glaucoma:
    18 groups for 139 patients).
    """

    if kernel and all(q == 1 for q in cs.qs):
        lam_r, _ = _rest_scale(cs, factors, pt)
        return crossed_loglik_op(cs, beta, pt.as_tensor(factors[cs.eliminated])[0, 0], lam_r, sigma)
    s2 = sigma**2
    Le = pt.as_tensor(factors[cs.eliminated])
    q = cs.S_ee.shape[1]
    c_e = pt.as_tensor(cs.Zy_e) - pt.dot(pt.as_tensor(cs.ZX_e), beta)  # (M, q)
    c_r = pt.as_tensor(cs.Zy_r) - pt.dot(pt.as_tensor(cs.ZX_r), beta)  # (Q_r,)
    rr = cs.yty - 2 * pt.dot(pt.as_tensor(cs.Xty), beta) + pt.dot(beta, pt.dot(pt.as_tensor(cs.XtX), beta))
    if q == 1:  # one effect per level (glaucoma's (1 | id)): see the docstring
        n_values, grams = cs.gram_groups
        t_e = Le[0, 0] ** 2 / s2
        a = 1 + t_e * pt.as_tensor(cs.S_ee[:, 0, 0])
        omega = t_e / s2 / (1 + t_e * pt.as_tensor(n_values))
        inner = pt.as_tensor(cs.S_rr) / s2 - pt.tensordot(omega, pt.as_tensor(grams), axes=1)
        t0 = c_r - t_e * pt.dot(pt.as_tensor(cs.S_er[:, 0, :]).T, c_e[:, 0] / a)
        logdet_e = pt.log(a).sum()
        vv = Le[0, 0] ** 2 * (c_e[:, 0] ** 2 / a).sum()
        lam, diagonal = _rest_scale(cs, factors, pt)
        if diagonal:
            C = pt.eye(cs.Q_r) + lam[:, None] * inner * lam[None, :]
            t = lam * t0
        else:
            C = pt.eye(cs.Q_r) + pt.dot(lam.T, pt.dot(inner, lam))
            t = pt.dot(lam.T, t0)
    else:  # batched Cholesky of the q x q blocks, written out entry by entry (vectorised over levels)
        Lr = _rest_factor(cs, factors)
        u_e = pt.dot(c_e, Le)  # rows: (L_e' c_e,l)'
        u_r = pt.dot(Lr.T, c_r)
        SL = pt.dot(pt.as_tensor(cs.S_er), Lr)  # (M, q, Q_r): Z_el'Z_r Lambda_r
        A_er = pt.tensordot(Le, SL, axes=[[0], [1]]).dimshuffle(1, 0, 2) / s2  # (M, q, Q_r)
        A_rr = pt.eye(cs.Q_r) + pt.dot(Lr.T, pt.dot(pt.as_tensor(cs.S_rr), Lr)) / s2
        S_ee = pt.as_tensor(cs.S_ee)
        A_ee = pt.tensordot(pt.tensordot(S_ee, Le, axes=[[2], [0]]), Le, axes=[[1], [0]]) / s2 + pt.eye(q)
        rows, logdet_e = _unrolled_batched_solve(A_ee, pt.concatenate([A_er, u_e[:, :, None]], axis=2), q)
        W = pt.stack([r[:, :-1] for r in rows], axis=1)  # (M, q, Q_r)
        v = pt.stack([r[:, -1] for r in rows], axis=1)  # (M, q)
        C = A_rr - pt.tensordot(W, W, axes=[[0, 1], [0, 1]])
        t = u_r - pt.tensordot(W, v, axes=[[0, 1], [0, 1]])
        vv = (v**2).sum()
    Rc = linalg.cholesky(C)
    z = linalg.solve_triangular(Rc, t, lower=True)
    logdet = logdet_e + 2 * pt.log(pt.diagonal(Rc)).sum()
    quad = (rr - (vv + (z**2).sum()) / s2) / s2
    return -0.5 * (cs.n * pt.log(2 * np.pi * s2) + logdet + quad)


def _unrolled_batched_solve(A, B, q: int):
    """Rows of ``R_l^-1 B_l`` and ``sum_l log|A_l|`` for lower Cholesky factors ``A_l = R_l R_l'``, (M, q, q) and
    (M, q, K): each entry of R one elementwise operation over the M levels (PyTensor's batched ``cholesky`` loops
    over matrices one at a time)."""

    low: list[list] = [[None] * q for _ in range(q)]
    logdet = 0.0
    rows: list = []
    for j in range(q):
        diag = A[:, j, j] - sum(low[j][k] ** 2 for k in range(j)) if j else A[:, j, j]
        low[j][j] = pt.sqrt(diag)
        logdet = logdet + pt.log(diag).sum()
        for i in range(j + 1, q):
            off = A[:, i, j] - sum(low[i][k] * low[j][k] for k in range(j)) if j else A[:, i, j]
            low[i][j] = off / low[j][j]
        rhs = B[:, j, :] - sum(low[j][k][:, None] * rows[k] for k in range(j)) if j else B[:, j, :]
        rows.append(rhs / low[j][j][:, None])
    return rows, logdet


@dataclass(frozen=True, eq=False)
class CrossedPieces:
    """The block factorisation of ``A`` for a batch of S posterior draws (NumPy; module notation)."""

    Le: np.ndarray  # (S, q, q)
    Lr: np.ndarray  # (S, Q_r, Q_r)
    R: np.ndarray  # (S, M, q, q)
    W: np.ndarray  # (S, M, q, Q_r)
    v: np.ndarray  # (S, M, q)
    Rc: np.ndarray  # (S, Q_r, Q_r)
    z: np.ndarray  # (S, Q_r)
    rr: np.ndarray  # (S,)

    @classmethod
    def of(cls, cs: CrossedStats, beta: np.ndarray, factors: list[np.ndarray], sigma: np.ndarray) -> CrossedPieces:
        """For draws ``beta`` (S, p), every block's factors (S, q_k, q_k) and ``sigma`` (S,)."""
        s2 = (sigma**2)[:, None, None]
        Le = factors[cs.eliminated]
        Lr = np.zeros((beta.shape[0], cs.Q_r, cs.Q_r))
        for k, cols in cs.rest_slices():  # every level's block on the diagonal
            n, q = cs.levels[k], cs.qs[k]
            Lr[:, cols, cols] = np.einsum("ij,sab->siajb", np.eye(n), factors[k]).reshape(-1, n * q, n * q)
        c_e = cs.Zy_e[None] - np.einsum("mqp,sp->smq", cs.ZX_e, beta)
        c_r = cs.Zy_r[None] - beta @ cs.ZX_r.T
        rr = cs.yty - 2 * beta @ cs.Xty + np.einsum("sp,pk,sk->s", beta, cs.XtX, beta)
        u_e = np.einsum("smq,sqa->sma", c_e, Le)
        u_r = np.einsum("sr,sra->sa", c_r, Lr)
        A_ee = np.einsum("sba,mbc,scd->smad", Le, cs.S_ee, Le, optimize=True) / s2[..., None] + np.eye(Le.shape[-1])
        M, q = cs.S_er.shape[:2]
        SL = (cs.S_er.reshape(M * q, -1)[None] @ Lr).reshape(-1, M, q, cs.Q_r)  # batched BLAS
        A_er = np.einsum("sba,smbk->smak", Le, SL) / s2[..., None]
        A_rr = np.eye(cs.Q_r) + Lr.transpose(0, 2, 1) @ cs.S_rr @ Lr / s2
        R = cholesky_lower(A_ee)
        W = np.swapaxes(solve_lower(R[:, :, None], np.swapaxes(A_er, -1, -2)), -1, -2)
        v = solve_lower(R, u_e)
        Wf = W.reshape(W.shape[0], M * q, cs.Q_r)
        Rc = np.linalg.cholesky(A_rr - np.swapaxes(Wf, 1, 2) @ Wf)
        z = solve_lower(Rc, u_r - np.einsum("smak,sma->sk", W, v))
        return cls(Le, Lr, R, W, v, Rc, z, rr)

    def loglik(self, cs: CrossedStats, sigma: np.ndarray) -> np.ndarray:
        """The marginalised log-likelihood of every draw (S,)."""
        s2 = sigma**2
        logdet = 2 * (np.log(np.diagonal(self.R, axis1=-2, axis2=-1)).sum((-1, -2))
                      + np.log(np.diagonal(self.Rc, axis1=-2, axis2=-1)).sum(-1))
        quad = (self.rr - ((self.v**2).sum((-1, -2)) + (self.z**2).sum(-1)) / s2) / s2
        return -0.5 * (cs.n * np.log(2 * np.pi * s2) + logdet + quad)

    def draw(self, cs: CrossedStats, sigma: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """One exact draw of ``b | y, theta`` per draw: every block's (S, levels, q_k), in design order."""
        s2 = sigma**2
        x_r = solve_lower_transposed(self.Rc, self.z / s2[:, None] + rng.standard_normal(self.z.shape))
        rhs = self.v / s2[:, None, None] + rng.standard_normal(self.v.shape) - np.einsum("smak,sk->sma", self.W, x_r)
        x_e = solve_lower_transposed(self.R, rhs)
        out: list[np.ndarray] = [np.empty(0)] * len(cs.levels)
        out[cs.eliminated] = np.einsum("sab,smb->sma", self.Le, x_e)
        b_r = np.einsum("sab,sb->sa", self.Lr, x_r)
        for k, cols in cs.rest_slices():
            out[k] = b_r[:, cols].reshape(len(sigma), cs.levels[k], cs.qs[k])
        return out
