"""Parameterisations of the random-effects covariance matrices D (one per block), by nlme's pdMat classes.

Notation
--------
The engines work with the *relative* covariance factor: ``D_k = sigma^2 L_k L_k'`` with ``L_k`` lower triangular
(``q x q``). ``theta`` stacks, block by block, the unconstrained parameters of each structure:

- ``pdSymm``: the lower triangle of ``L_k`` row by row, with the diagonal on the log scale (nlme's ``pdLogChol``);
- ``pdDiag``: the log of the diagonal of ``L_k``;
- ``pdIdent``: ``log s``, with ``L_k = s I`` (one variance shared by all effects);
- ``pdCompSymm``: ``log s`` and ``t``, with ``L_k = s chol(C(rho))``, ``C(rho) = (1 - rho) I + rho 11'`` (equal
  variances, equal correlations) and ``rho = (e^t - 1/(q-1)) / (e^t + 1)`` in ``(-1/(q-1), 1)`` (nlme's map);
- ``pdBlocked``: the parameters of its parts in turn; ``L_k`` is block diagonal (effects in different parts are
  uncorrelated), each part with its own structure.

The *scale* parameters (diagonal of ``pdSymm``/``pdDiag``, ``s`` of ``pdIdent``/``pdCompSymm``) are logged. With
``log_diagonal=False`` they enter as is (lme4's ``theta``, bounded below by 0), which the optimiser uses when a
variance is estimated on the boundary (0).

Every block gives ``L_k`` and its Jacobian ``dL_k / d theta_k`` (``size x q x q``), so the engines' gradients with
respect to ``L`` carry over to ``theta`` by the chain rule, whatever the structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

STRUCTURES: tuple[str, ...] = ("pdSymm", "pdDiag", "pdIdent", "pdCompSymm", "pdBlocked")


def compound_symmetry_rho(t: float, q: int) -> tuple[float, float]:
    """``rho`` of ``pdCompSymm`` from its unconstrained ``t``, and ``d rho / d t``."""
    if q < 2:
        return 0.0, 0.0
    a = 1.0 / (q - 1)
    e = np.exp(np.clip(t, -700, 700))
    return float((e - a) / (e + 1.0)), float(e * (1.0 + a) / (e + 1.0) ** 2)


def compound_symmetry_t(rho: float, q: int) -> float:
    """Inverse of :func:`compound_symmetry_rho` (``rho`` clipped inside its range)."""
    a = 1.0 / (q - 1)
    rho = float(np.clip(rho, -a + 1e-6, 1 - 1e-6))
    return float(np.log((rho + a) / (1.0 - rho)))


def cholesky_derivative(L: np.ndarray, dC: np.ndarray) -> np.ndarray:
    """``d chol(C)`` in direction ``dC``: ``L Phi(L^-1 dC L^-T)``, ``Phi`` the lower triangle with half diagonal."""
    inner = np.linalg.solve(L, np.linalg.solve(L, dC).T).T
    phi = np.tril(inner)
    phi[np.diag_indices_from(phi)] *= 0.5
    return L @ phi


@dataclass(frozen=True)
class BlockParam:
    """Where one block's parameters sit in ``theta`` and how they make ``L``.

    ``parts`` (``pdBlocked`` only): ``(structure, n_effects)`` of each diagonal sub-block, in effect order.
    """

    structure: str
    q: int
    start: int
    parts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValueError(f"unknown structure {self.structure!r}")
        if self.structure == "pdBlocked" and sum(n for _, n in self.parts) != self.q:
            raise ValueError("the parts of a pdBlocked block must add up to its effects")

    def sub_blocks(self) -> tuple[BlockParam, ...]:
        """``pdBlocked``: one :class:`BlockParam` per part (``start`` relative to this block's own parameters)."""
        out, start = [], 0
        for structure, n in self.parts:
            out.append(BlockParam(structure, n, start))
            start += out[-1].size
        return tuple(out)

    @property
    def size(self) -> int:
        """Number of parameters of this block."""
        return {"pdSymm": self.q * (self.q + 1) // 2, "pdDiag": self.q, "pdIdent": 1,
                "pdCompSymm": 1 + (self.q > 1)}.get(self.structure) or sum(b.size for b in self.sub_blocks())

    def scale_mask(self) -> np.ndarray:
        """True where a parameter is a scale (logged on the log-Cholesky scale, bounded below by 0 otherwise)."""
        if self.structure == "pdSymm":
            rows, cols = np.tril_indices(self.q)
            return rows == cols
        if self.structure == "pdCompSymm":
            return np.arange(self.size) == 0
        if self.structure == "pdBlocked":
            return np.concatenate([b.scale_mask() for b in self.sub_blocks()])
        return np.ones(self.size, bool)

    def factor(self, values: np.ndarray, log_diagonal: bool = True) -> np.ndarray:
        """``L`` from this block's parameters."""
        return self.factor_and_jacobian(values, log_diagonal, jacobian=False)[0]

    def factor_and_jacobian(self, values: np.ndarray, log_diagonal: bool = True,
                            jacobian: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``L`` and ``dL / d values`` (``size x q x q``; empty when ``jacobian`` is False)."""
        q = self.q
        v = np.array(values, dtype=float)
        scale = self.scale_mask()
        ds = np.ones(self.size)
        if log_diagonal:
            v[scale] = np.exp(v[scale])
            ds[scale] = v[scale]
        L = np.zeros((q, q))
        J = np.zeros((self.size if jacobian else 0, q, q))
        if self.structure in ("pdSymm", "pdDiag"):
            rows, cols = np.tril_indices(q) if self.structure == "pdSymm" else (np.arange(q), np.arange(q))
            L[rows, cols] = v
            if jacobian:
                J[np.arange(self.size), rows, cols] = ds
        elif self.structure == "pdIdent":
            L = v[0] * np.eye(q)
            if jacobian:
                J[0] = ds[0] * np.eye(q)
        elif self.structure == "pdCompSymm":
            rho, drho = compound_symmetry_rho(v[1], q) if q > 1 else (0.0, 0.0)
            C = (1.0 - rho) * np.eye(q) + rho
            try:
                chol = np.linalg.cholesky(C)
            except np.linalg.LinAlgError:  # rho at the edge of its range (|t| huge): treat as not evaluable
                raise np.linalg.LinAlgError("compound symmetry not positive definite") from None
            L = v[0] * chol
            if jacobian:
                J[0] = ds[0] * chol
                if q > 1:
                    J[1] = v[0] * cholesky_derivative(chol, drho * (np.ones((q, q)) - np.eye(q)))
        else:  # pdBlocked
            first = 0
            for sub in self.sub_blocks():
                own = np.asarray(values, dtype=float)[sub.start:sub.start + sub.size]
                Ls, Js = sub.factor_and_jacobian(own, log_diagonal, jacobian)
                block = slice(first, first + sub.q)
                L[block, block] = Ls
                if jacobian:
                    J[sub.start:sub.start + sub.size, block, block] = Js
                first += sub.q
        return L, J

    def from_factor(self, L: np.ndarray, log_diagonal: bool = True) -> np.ndarray:
        """Parameters whose factor reproduces ``L L'`` (the nearest in this structure when it is not of it)."""
        q = self.q
        L = L * np.sign(np.where(np.diag(L) == 0, 1.0, np.diag(L)))[None, :]
        D = L @ L.T
        if self.structure == "pdSymm":
            values = L[np.tril_indices(q)]
        elif self.structure == "pdDiag":
            values = np.sqrt(np.diag(D))
        elif self.structure == "pdIdent":
            values = np.array([np.sqrt(np.mean(np.diag(D)))])
        elif self.structure == "pdCompSymm":
            s2 = float(np.mean(np.diag(D)))
            values = np.array([np.sqrt(s2)])
            if q > 1:
                off = (D.sum() - np.trace(D)) / (q * (q - 1))
                values = np.append(values, compound_symmetry_t(off / s2 if s2 > 0 else 0.0, q))
        else:
            pieces, first = [], 0
            for sub in self.sub_blocks():
                block = slice(first, first + sub.q)
                pieces.append(sub.from_factor(np.linalg.cholesky(D[block, block] + 1e-300 * np.eye(sub.q))
                                              if np.all(np.diag(D[block, block]) > 0) else L[block, block],
                                              log_diagonal))
                first += sub.q
            return np.concatenate(pieces)
        values = np.array(values, dtype=float)
        if log_diagonal:
            scale = self.scale_mask()
            values[scale] = np.log(np.maximum(values[scale], 1e-300))
        return values


@dataclass(frozen=True)
class ThetaLayout:
    """The parameter vector of all blocks."""

    blocks: tuple[BlockParam, ...]

    @classmethod
    def for_blocks(cls, structures: list[str], qs: list[int],
                   parts: list[tuple[tuple[str, int], ...]] | None = None) -> ThetaLayout:
        """Layout for blocks with the given structures and sizes (``parts`` of the ``pdBlocked`` ones)."""
        out, start = [], 0
        parts = parts or [()] * len(qs)
        for s, q, p in zip(structures, qs, parts, strict=True):
            out.append(BlockParam(s, q, start, tuple(p)))
            start += out[-1].size
        return cls(tuple(out))

    @property
    def size(self) -> int:
        """Length of ``theta``."""
        return sum(b.size for b in self.blocks)

    def diagonal_mask(self) -> np.ndarray:
        """True where a parameter is a scale of some ``L_k`` (see :meth:`BlockParam.scale_mask`)."""
        return np.concatenate([b.scale_mask() for b in self.blocks]) if self.blocks else np.zeros(0, bool)

    def factors(self, theta: np.ndarray, log_diagonal: bool = True) -> list[np.ndarray]:
        """The relative factors ``L_k``."""
        return [b.factor(theta[b.start:b.start + b.size], log_diagonal) for b in self.blocks]

    def factors_and_jacobians(self, theta: np.ndarray, log_diagonal: bool = True) -> list[tuple[np.ndarray,
                                                                                                 np.ndarray]]:
        """The relative factors ``L_k`` and their Jacobians ``dL_k / d theta_k``."""
        return [b.factor_and_jacobian(theta[b.start:b.start + b.size], log_diagonal) for b in self.blocks]

    def from_factors(self, factors: list[np.ndarray], log_diagonal: bool = True) -> np.ndarray:
        """Inverse of :meth:`factors` (signs normalised so the diagonal is positive; the nearest member of a
        restricted structure otherwise)."""
        if not self.blocks:
            return np.zeros(0)
        return np.concatenate([b.from_factor(L, log_diagonal) for b, L in zip(self.blocks, factors, strict=True)])

    def edge_mask(self, theta: np.ndarray, limit: float = 12.0) -> np.ndarray:
        """True for compound-symmetry correlation parameters so far out (``|t| > limit``: ``rho`` within ~1e-5 of
        ``1`` or of ``-1/(q-1)``) that the correlation sits at the end of its range."""
        mask = np.zeros(self.size, bool)
        for b in self.blocks:
            for sub, offset in ((s, b.start + s.start) for s in b.sub_blocks()) if b.structure == "pdBlocked" \
                    else ((b, b.start),):
                if sub.structure == "pdCompSymm" and sub.q > 1:
                    mask[offset + 1] = abs(theta[offset + 1]) > limit
        return mask

    def is_linear(self) -> bool:
        """True when every ``L_k`` is a scatter of ``theta`` (``pdSymm``/``pdDiag`` only)."""
        return all(b.structure in ("pdSymm", "pdDiag") for b in self.blocks)


def sd_corr(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations and correlation matrix of a covariance matrix (correlations with a 0 SD are 0)."""
    sd = np.sqrt(np.clip(np.diag(D), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = D / np.outer(sd, sd)
    corr = np.where(np.outer(sd, sd) > 0, corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    return sd, corr


@dataclass(frozen=True)
class Piece:
    """One diagonal block of a block's D with its own structure (the whole block unless it is pdBlocked)."""

    suffix: str
    structure: str
    first: int
    q: int

    @property
    def effects(self) -> slice:
        """The piece's effects within the block."""
        return slice(self.first, self.first + self.q)


def pieces(block: Any) -> tuple[Piece, ...]:
    """The pieces of a design block (:class:`hierlmm.design.design.RandomEffectsBlock`, or anything with its
    ``structure``, ``q`` and ``parts``)."""
    if block.structure != "pdBlocked":
        return (Piece("", block.structure, 0, block.q),)
    out, first = [], 0
    for k, (structure, q) in enumerate(block.parts, start=1):
        out.append(Piece(f"__{k}", structure, first, q))
        first += q
    return tuple(out)


def correlated_pairs(block: Any) -> list[tuple[int, int]]:
    """``(j, k)``, ``k < j``: the correlations the structure leaves free (the rest are 0 by construction)."""
    out = []
    for piece in pieces(block):
        if piece.structure in ("pdSymm", "pdCompSymm") and piece.q > 1:
            out.extend((piece.first + j, piece.first + k) for j in range(piece.q) for k in range(j))
    return sorted(out)
