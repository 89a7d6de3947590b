"""Each random-effects block's D in the Bayesian engine: its priors, its factor ``L`` in the PyMC model, and ``L``
again from the posterior draws, for every structure of :mod:`hierlmm.structures.random_effects`.

Notation
--------
``D_k = L_k L_k'`` (on the scale of y: the Bayesian engine does not factor out ``sigma^2``). With ``s_kj`` the prior
scales of :mod:`hierlmm.engines.bayes.priors` (one per effect) and ``s_k`` their mean:

- ``pdSymm`` (more than one effect): PyMC's ``LKJCholeskyCov`` named ``chol_<factor>``: SDs ``HalfStudentT(3, s_kj)``
  and correlations ``LKJ(eta)``;
- ``pdDiag`` (or any block of one effect): ``sd_<factor>``, one ``HalfStudentT(3, s_kj)`` per effect, ``L = diag(sd)``;
- ``pdIdent``: ``s_<factor> ~ HalfStudentT(3, s_k)``, ``L = s I``;
- ``pdCompSymm``: ``s_<factor>`` as for pdIdent and ``rho_<factor> ~ Uniform(-1/(q-1), 1)`` (the whole range where
  ``C = (1 - rho) I + rho 11'`` is positive definite), ``L = s chol(C)``;
- ``pdBlocked``: each part as above, its variables suffixed ``__1``, ``__2``, ...; ``L`` is block diagonal.

Reported per block, whatever the structure: ``sd_<factor>`` (one per effect) and ``cor_<factor>`` (the correlation
matrix), computed from ``L`` after sampling; :func:`correlated_pairs` says which correlations are free parameters (the
others are 0 by the structure and are not reported).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hierlmm.engines.bayes.priors import Priors, prior_kind
from hierlmm.structures.random_effects import pieces, sd_corr


def coords(block: Any) -> dict[str, list[str]]:
    """Extra PyMC coordinates of a block's pieces (the effects of each pdBlocked part)."""
    return {f"{block.factor}__effect{p.suffix}": list(block.effect_names[p.effects]) for p in pieces(block) if p.suffix}


def block_factor(pm: Any, pt: Any, block: Any, priors: Priors) -> Any:
    """Declare a block's covariance parameters in the current PyMC model; return its ``L`` (q x q tensor)."""
    f = block.factor
    scales_all = np.array(priors.sd_scale[f])
    factors = []
    for piece in pieces(block):
        name, scales = f + piece.suffix, scales_all[piece.effects]
        kind = prior_kind(piece, f, priors)
        if kind == "pdSymm":
            sd_dist = pm.HalfStudentT.dist(nu=3, sigma=scales, shape=piece.q)
            chol, _, _ = pm.LKJCholeskyCov(f"chol_{name}", n=piece.q, eta=priors.lkj_eta[f], sd_dist=sd_dist,
                                           compute_corr=True, store_in_trace=False)
            factors.append(chol)
        elif kind == "pdDiag":
            sd = pm.HalfStudentT(f"sd_{name}", nu=3, sigma=scales, dims=f"{f}__effect{piece.suffix}")
            factors.append(pt.diag(sd))
        else:
            s = pm.HalfStudentT(f"s_{name}", nu=3, sigma=float(np.mean(scales)))
            if kind == "pdIdent":
                factors.append(s * pt.eye(piece.q))
            else:
                rho = pm.Uniform(f"rho_{name}", lower=-1.0 / (piece.q - 1), upper=1.0)
                C = (1.0 - rho) * pt.eye(piece.q) + rho * pt.ones((piece.q, piece.q))
                factors.append(s * pt.linalg.cholesky(C))
    if len(factors) == 1:
        return factors[0]
    return pt.linalg.block_diag(*factors)


def factor_draws(block: Any, post: Any, priors: Priors) -> np.ndarray:
    """A block's ``L`` for every draw, ``(chain, draw, q, q)``, from the posterior's free variables."""
    f = block.factor
    shape = None
    out = []
    for piece in pieces(block):
        name, kind = f + piece.suffix, prior_kind(piece, f, priors)
        if kind == "pdSymm":
            packed = post[f"chol_{name}"].values
            rows, cols = np.tril_indices(piece.q)
            L = np.zeros((*packed.shape[:-1], piece.q, piece.q))
            L[..., rows, cols] = packed
        elif kind == "pdDiag":
            sd = post[f"sd_{name}"].values
            L = sd[..., :, None] * np.eye(piece.q)
        else:
            s = post[f"s_{name}"].values
            if kind == "pdIdent":
                L = s[..., None, None] * np.eye(piece.q)
            else:
                rho = post[f"rho_{name}"].values[..., None, None]
                C = (1.0 - rho) * np.eye(piece.q) + rho
                L = s[..., None, None] * np.linalg.cholesky(C)
        shape = L.shape[:-2]
        out.append(L)
    assert shape is not None
    full = np.zeros((*shape, block.q, block.q))
    for piece, L in zip(pieces(block), out, strict=True):
        full[..., piece.effects, piece.effects] = L
    return full


def set_initial_values(model: Any, block: Any, priors: Priors, D: np.ndarray) -> None:
    """Start a block's parameters at the covariance matrix ``D`` (a REML estimate), kept away from the boundary."""
    f = block.factor
    scales_all = np.array(priors.sd_scale[f])
    for piece in pieces(block):
        name, kind, e = f + piece.suffix, prior_kind(piece, f, priors), piece.effects
        sd = np.maximum(np.sqrt(np.clip(np.diag(D)[e], 0, None)), 0.05 * scales_all[e])
        corr = sd_corr(D[e, e])[1]
        if kind == "pdSymm":
            corr = np.clip(corr, -0.9, 0.9)  # keep the start away from a singular D
            np.fill_diagonal(corr, 1.0)
            L = np.linalg.cholesky(np.outer(sd, sd) * corr + 1e-10 * np.eye(piece.q))
            model.set_initval(model[f"chol_{name}"], L[np.tril_indices(piece.q)])
        elif kind == "pdDiag":
            model.set_initval(model[f"sd_{name}"], sd)
        else:
            model.set_initval(model[f"s_{name}"], float(np.mean(sd)))
            if kind == "pdCompSymm":
                off = corr[~np.eye(piece.q, dtype=bool)].mean()
                model.set_initval(model[f"rho_{name}"], float(np.clip(off, -0.9 / (piece.q - 1), 0.9)))


