"""Approximate confidence intervals of the variance components (nlme's ``intervals(fit, which = "var-cov")``).

Notation
--------
nlme measures the uncertainty of ``D`` and ``sigma`` on an unconstrained *natural* scale ``eta`` (its
``pdNatural`` parametrisation), block by block:

- ``pdSymm``: ``log sd_j`` for every effect, then ``log((1 + rho_jk) / (1 - rho_jk))`` for every pair ``k < j``;
- ``pdDiag``: ``log sd_j``; ``pdIdent``: ``log sd``;
- ``pdCompSymm``: ``log sd`` and ``log((1/(q-1) + rho) / (1 - rho))``;
- ``pdBlocked``: those of its blocks in turn;

then ``log sigma``. With ``beta`` profiled out (ML) or integrated out (REML) but ``sigma`` free, and
``Lambda = chol(D) / sigma``::

    -2 l(eta) = n* log(2 pi sigma^2) + r'W^-1 r / sigma^2 + sum_i log|A_i| [+ log|X'W^-1 X|  (REML)]

(``n* = N`` for ML, ``N - p`` for REML; :mod:`hierlmm.engines.reml.profiled_likelihood` has ``A_i`` and ``W``). Its
Hessian at the estimates, by central differences as nlme's ``fdHess``, gives ``apVar = (-H)^-1``; the interval of each
component is ``eta_hat +- z se`` mapped back to SDs and correlations. The intervals are as good as the quadratic
approximation: wide and asymmetric ones say the likelihood is flat there (a Bayesian fit gives the whole posterior
instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from hierlmm.design.sufficient_stats import stack_factors
from hierlmm.engines.reml.finite_differences import central_hessian, clearly_positive_definite
from hierlmm.engines.reml.profiled_likelihood import evaluate
from hierlmm.errors import NumericalError


def _pieces(block: Any) -> list[tuple[str, slice]]:
    if block.structure != "pdBlocked":
        return [(block.structure, slice(0, block.q))]
    out, first = [], 0
    for structure, q in block.parts:
        out.append((structure, slice(first, first + q)))
        first += q
    return out


def _natural_piece(structure: str, D: np.ndarray) -> tuple[np.ndarray, list[str], list[str]]:
    """``eta`` of one piece, and the kind (``sd``/``cor``) and effect indices of each entry."""
    q = D.shape[0]
    sd = np.sqrt(np.diag(D))
    if structure in ("pdIdent", "pdCompSymm"):
        eta, kinds = [np.log(sd[0])], ["sd"]
        if structure == "pdCompSymm" and q > 1:
            rho = D[1, 0] / D[0, 0]
            eta.append(np.log((1 / (q - 1) + rho) / (1 - rho)))
            kinds.append("cor")
        return np.array(eta), kinds, [",".join(map(str, range(q)))] * len(kinds)
    eta, kinds, which = list(np.log(sd)), ["sd"] * q, [str(j) for j in range(q)]
    if structure == "pdSymm":
        for j in range(q):
            for k in range(j):
                rho = D[j, k] / (sd[j] * sd[k])
                eta.append(np.log((1 + rho) / (1 - rho)))
                kinds.append("cor")
                which.append(f"{k},{j}")
    return np.array(eta), kinds, which


def _piece_matrix(structure: str, q: int, eta: np.ndarray) -> np.ndarray:
    """``D`` of one piece from its ``eta`` (inverse of :func:`_natural_piece`)."""
    if structure in ("pdIdent", "pdCompSymm"):
        s2 = np.exp(2 * eta[0])
        if structure == "pdIdent" or q == 1:
            return s2 * np.eye(q)
        e = np.exp(eta[1])
        rho = (e - 1 / (q - 1)) / (e + 1)
        return s2 * ((1 - rho) * np.eye(q) + rho)
    sd = np.exp(eta[:q])
    corr = np.eye(q)
    if structure == "pdSymm":
        rows, cols = np.tril_indices(q, -1)
        order = np.argsort(rows * q + cols)  # eta lists pairs row by row: (1,0), (2,0), (2,1), ...
        corr[rows[order], cols[order]] = np.tanh(eta[q:] / 2)
        corr = np.tril(corr) + np.tril(corr, -1).T
    return corr * np.outer(sd, sd)


def _natural(fit: Any) -> tuple[np.ndarray, list[int], list[tuple[str, int]]]:
    """``eta`` of a fit, the size of each piece's part of it, and each entry's label and back-transform
    (``0``: ``exp``; ``1``: ``tanh(x / 2)``; ``q > 1``: compound symmetry of ``q`` effects)."""
    eta, sizes, entries = [], [], []
    for block, D in zip(fit.design.blocks, fit.D, strict=True):
        for structure, effects in _pieces(block):
            values, kinds, which = _natural_piece(structure, D[effects, effects])
            names = block.effect_names[effects]
            q = effects.stop - effects.start
            for kind, w in zip(kinds, which, strict=True):
                label = f"{kind}({block.factor}:{','.join(names[int(i)] for i in w.split(','))})"
                back = 0 if kind == "sd" else (q if structure == "pdCompSymm" else 1)
                entries.append((label, back))
            eta.extend(values)
            sizes.append(len(values))
    eta.append(np.log(fit.sigma))
    entries.append(("sigma", 0))
    return np.array(eta), sizes, entries


def _back(x: float, how: int) -> float:
    if how == 0:
        return float(np.exp(x))
    if how == 1:
        return float(np.tanh(x / 2))
    e = np.exp(x)
    return float((e - 1 / (how - 1)) / (e + 1))


def _matrices(fit: Any, sizes: list[int], eta: np.ndarray) -> list[np.ndarray]:
    out, start, k = [], 0, 0
    for block in fit.design.blocks:
        D = np.zeros((block.q, block.q))
        for structure, effects in _pieces(block):
            size = sizes[k]
            D[effects, effects] = _piece_matrix(structure, effects.stop - effects.start, eta[start:start + size])
            start, k = start + size, k + 1
        out.append(D)
    return out


def log_likelihood(fit: Any, D: list[np.ndarray], sigma: float) -> float:
    """The (restricted) log-likelihood at ``D`` and ``sigma``, ``beta`` profiled (ML) or integrated out (REML)."""
    reml = fit.method == "REML"
    factors = [np.linalg.cholesky(Dk + 1e-300 * np.eye(Dk.shape[0])) / sigma for Dk in D]
    state = evaluate(fit.stats, stack_factors(fit.stats, factors), reml)
    n = fit.design.n_obs - (fit.design.p if reml else 0)
    dev = n * np.log(2 * np.pi * sigma**2) + state.rss / sigma**2 + state.logdet_A
    if reml:
        dev += np.linalg.slogdet(state.XtWX)[1]
    return -0.5 * float(dev)


def varcorr_intervals(fit: Any, level: float = 0.95) -> pd.DataFrame:
    """nlme's ``intervals(fit, which = "var-cov")`` of an :class:`~hierlmm.engines.reml.ml_fit.MLFit`: lower, estimate
    and
    upper of every random-effect SD and free correlation, and of ``sigma`` (see the module notation)."""
    eta, sizes, entries = _natural(fit)
    labels = [label for label, _ in entries]
    if not np.all(np.isfinite(eta)):
        raise NumericalError("A variance component is on the boundary (an SD of 0, or a singular D: a correlation of "
                             "+-1, or with three or more effects one an exact linear combination of the others): "
                             "its interval on nlme's scale is undefined.", given=dict(zip(labels, eta, strict=True)),
                             fix="Simplify the random-effects structure, or look at the posterior of a Bayesian fit.")

    def neg_loglik(x: np.ndarray) -> float:
        try:
            return -log_likelihood(fit, _matrices(fit, sizes, x[:-1]), float(np.exp(x[-1])))
        except np.linalg.LinAlgError:
            return np.inf

    H = central_hessian(neg_loglik, eta, h=1e-4)
    if not clearly_positive_definite(H):
        eig = np.linalg.eigvalsh(H) if np.all(np.isfinite(H)) else np.array([np.nan])
        raise NumericalError("The approximate covariance of the variance components is not positive definite (as "
                             "nlme's 'Non-positive definite approximate variance-covariance').",
                             given=f"Hessian eigenvalues from {eig.min():.3g} to {eig.max():.3g}",
                             fix="Simplify the random-effects structure, or look at the posterior of a Bayesian fit.")
    se = np.sqrt(np.diag(np.linalg.inv(H)))
    z = scipy.stats.norm.ppf(0.5 + level / 2)
    rows = [(label, _back(e - z * s, how), _back(e, how), _back(e + z * s, how))
            for (label, how), e, s in zip(entries, eta, se, strict=True)]
    return pd.DataFrame(rows, columns=["term", "lower", "est.", "upper"]).set_index("term")
