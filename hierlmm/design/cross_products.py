"""The cross-products of a whole design, ``Z'Z``, ``Z'X``, ``Z'y``, ``X'X``, ``X'y``, ``y'y``: the sufficient statistics
of designs whose grouping factors are crossed (no subject to sum over; lme4's engine and the exact crossed
likelihood both read them).

``Z`` (N x Q_tot) puts every block side by side, one column per level and effect; it is built sparse, so the cost
of the cross-products does not depend on the number of rows beyond one pass (glaucoma: 252,876 rows, Q_tot = 181).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from hierlmm.design.design import Design


@dataclass(frozen=True, eq=False)
class CrossProducts:
    """``Z'Z``, ``Z'X``, ``Z'y``, ``X'X``, ``X'y``, ``y'y`` and where each block's columns start in Z."""

    ZtZ: np.ndarray
    ZtX: np.ndarray
    Zty: np.ndarray
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float
    offsets: tuple[int, ...]


def cross_products(design: Design) -> CrossProducts:
    """The cross-products, through a sparse Z (one column per level and effect of every block)."""
    n = design.n_obs
    pieces, offsets, start = [], [], 0
    for block in design.blocks:
        rows = np.repeat(np.arange(n), block.q)
        cols = start + (block.group_index[:, None] * block.q + np.arange(block.q)[None, :]).ravel()
        pieces.append(scipy.sparse.csr_matrix((block.Z.ravel(), (rows, cols)), shape=(n, start + block.n_levels
                                                                                      * block.q)))
        offsets.append(start)
        start += block.n_levels * block.q
    Z = scipy.sparse.csr_matrix(sum(_pad(p, start) for p in pieces))
    X, y = design.X, design.y
    return CrossProducts((Z.T @ Z).toarray(), np.asarray(Z.T @ X), np.asarray(Z.T @ y).ravel(), X.T @ X, X.T @ y,
                         float(y @ y), tuple(offsets))


def _pad(m: scipy.sparse.csr_matrix, width: int) -> scipy.sparse.csr_matrix:
    """``m`` with zero columns appended up to ``width``."""
    return scipy.sparse.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], width))
