"""Parameterisations of the random-effects covariance matrices D (one per block).

Notation
--------
The engines work with the *relative* covariance factor: ``D_k = sigma^2 L_k L_k'`` with ``L_k`` lower triangular.
``theta`` stacks, block by block,

- ``pdSymm``: the lower triangle of ``L_k`` row by row, with the diagonal on the log scale (nlme's ``pdLogChol``);
- ``pdDiag``: the log of the diagonal of ``L_k``.

With ``log_diagonal=False`` the diagonal enters as is (lme4's ``theta``, bounded below by 0), which the optimiser uses
when a variance is estimated on the boundary (0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BlockParam:
    """Where one block's parameters sit in ``theta`` and how they fill ``L``."""

    structure: str
    q: int
    start: int

    @property
    def size(self) -> int:
        """Number of parameters of this block."""
        return self.q * (self.q + 1) // 2 if self.structure == "pdSymm" else self.q

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of ``L`` filled by each parameter."""
        if self.structure == "pdSymm":
            return np.tril_indices(self.q)
        return np.arange(self.q), np.arange(self.q)


@dataclass(frozen=True)
class ThetaLayout:
    """The parameter vector of all blocks."""

    blocks: tuple[BlockParam, ...]

    @classmethod
    def for_blocks(cls, structures: list[str], qs: list[int]) -> ThetaLayout:
        """Layout for blocks with the given structures and sizes."""
        out, start = [], 0
        for s, q in zip(structures, qs, strict=True):
            out.append(BlockParam(s, q, start))
            start += out[-1].size
        return cls(tuple(out))

    @property
    def size(self) -> int:
        """Length of ``theta``."""
        return sum(b.size for b in self.blocks)

    def diagonal_mask(self) -> np.ndarray:
        """True where a parameter is a diagonal element of some ``L_k``."""
        mask = np.zeros(self.size, bool)
        for b in self.blocks:
            rows, cols = b.positions()
            mask[b.start + np.flatnonzero(rows == cols)] = True
        return mask

    def factors(self, theta: np.ndarray, log_diagonal: bool = True) -> list[np.ndarray]:
        """The relative factors ``L_k``."""
        out = []
        for b in self.blocks:
            L = np.zeros((b.q, b.q))  # noqa: N806
            rows, cols = b.positions()
            values = np.array(theta[b.start : b.start + b.size], dtype=float)
            diag = rows == cols
            if log_diagonal:
                values[diag] = np.exp(values[diag])
            L[rows, cols] = values
            out.append(L)
        return out

    def from_factors(self, factors: list[np.ndarray], log_diagonal: bool = True) -> np.ndarray:
        """Inverse of :meth:`factors` (signs normalised so the diagonal is positive)."""
        theta = np.zeros(self.size)
        for b, L in zip(self.blocks, factors, strict=True):
            L = L * np.sign(np.where(np.diag(L) == 0, 1.0, np.diag(L)))[None, :]  # noqa: N806
            rows, cols = b.positions()
            values = L[rows, cols].astype(float)
            diag = rows == cols
            if log_diagonal:
                values[diag] = np.log(np.maximum(values[diag], 1e-300))
            theta[b.start : b.start + b.size] = values
        return theta


def sd_corr(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """Standard deviations and correlation matrix of a covariance matrix (correlations with a 0 SD are 0)."""
    sd = np.sqrt(np.clip(np.diag(D), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = D / np.outer(sd, sd)
    corr = np.where(np.outer(sd, sd) > 0, corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    return sd, corr
