"""Per-subject sufficient statistics of a design, the input of every marginal-likelihood computation.

Notation
--------
Subjects ``i = 1..M`` are the levels of the outermost grouping factor; every other block must nest in it. Within
subject ``i`` the random effects of all blocks are stacked into one vector of length ``Q``: the outer block's
``q_0`` effects, then, for each nested block ``k``, ``S_k`` slots of ``q_k`` effects (``S_k`` = the largest number
of block-``k`` levels in one subject; unused slots have zero columns, which changes no likelihood). With the
stacked ``Z_i`` (n_i x Q) the statistics are ``Z_i'Z_i``, ``Z_i'X_i``, ``Z_i'y_i`` and the global ``X'X``, ``X'y``,
``y'y``; with them the cost of a likelihood evaluation depends on ``M`` and ``Q``, not on the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hierlmm.design.design import Design
from hierlmm.errors import NotSupportedError


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Where one block's effects sit in a subject's stacked vector."""

    block: int  # index into design.blocks
    offset: int  # first stacked column
    q: int
    n_slots: int
    slot_level: np.ndarray  # (M, n_slots): level of the block in that slot, -1 = unused
    row_slot: np.ndarray  # (n,): slot of each row


@dataclass(frozen=True, eq=False)
class SubjectStats:
    """Sufficient statistics per subject (outermost grouping level), see the module notation."""

    subject_block: int
    subject_index: np.ndarray  # (n,) subject of each row
    n_per_subject: np.ndarray  # (M,)
    layouts: tuple[BlockLayout, ...]
    Zs: np.ndarray  # (n, Q) stacked Z rows
    ZtZ: np.ndarray  # (M, Q, Q)
    ZtX: np.ndarray  # (M, Q, p)
    Zty: np.ndarray  # (M, Q)
    XtX: np.ndarray
    Xty: np.ndarray
    yty: float

    @cached_property
    def T(self) -> np.ndarray:
        """``[Z_i'X_i, Z_i'y_i]`` of every subject, (M, Q, p + 1)."""
        return np.concatenate([self.ZtX, self.Zty[:, :, None]], axis=2)

    @cached_property
    def T_rows(self) -> np.ndarray:
        """``T`` with each subject's columns as rows, (M * (p + 1), Q): ``T_rows @ Lambda`` is ``(Lambda'T)'``."""
        M, Q, k = self.T.shape
        return np.ascontiguousarray(self.T.transpose(0, 2, 1).reshape(M * k, Q))

    @cached_property
    def XyXy(self) -> np.ndarray:
        """``[X y]'[X y]``, (p + 1, p + 1)."""
        p = self.XtX.shape[0]
        out = np.empty((p + 1, p + 1))
        out[:p, :p], out[:p, p], out[p, :p], out[p, p] = self.XtX, self.Xty, self.Xty, self.yty
        return out

    @property
    def M(self) -> int:
        """Number of subjects."""
        return self.ZtZ.shape[0]

    @property
    def Q(self) -> int:
        """Length of a subject's stacked random-effects vector."""
        return self.ZtZ.shape[1]


def stack_factors(stats: SubjectStats, factors: list[np.ndarray]) -> np.ndarray:
    """A subject's stacked (..., Q, Q) factor from every block's (..., q, q) factor, in ``design.blocks`` order
    (a nested block's factor is repeated in each of its slots; leading batch dimensions broadcast)."""
    batch = np.broadcast_shapes(*(np.shape(f)[:-2] for f in factors))
    out = np.zeros((*batch, stats.Q, stats.Q))
    for lay in stats.layouts:
        for slot in range(lay.n_slots):
            o = lay.offset + slot * lay.q
            out[..., o : o + lay.q, o : o + lay.q] = factors[lay.block]
    return out


def outermost_block(design: Design) -> int | None:
    """The block every other block nests in (fewest levels first); None when the factors are crossed."""
    order = sorted(range(len(design.blocks)), key=lambda k: design.blocks[k].n_levels)
    for top in order:
        g = design.blocks[top].group_index
        if all(_nests(design.blocks[k].group_index, g) for k in range(len(design.blocks)) if k != top):
            return top
    return None


def is_crossed(design: Design) -> bool:
    """Whether the design's grouping factors are crossed (no factor that every other one nests in): lme4's engine
    and the crossed likelihood fit them, the per-subject engines do not."""
    return bool(design.blocks) and outermost_block(design) is None


def _outermost(design: Design) -> int:
    top = outermost_block(design)
    if top is not None:
        return top
    names = ", ".join(b.factor for b in design.blocks)
    raise NotSupportedError(
        f"The grouping factors {names} are crossed, not nested: this engine integrates out random effects that "
        "nest within one subject factor.",
        given=design.spec.formula,
        fix="Fit it with hierlmm.fit (which uses hierlmm.engines.reml.crossed_fit for crossed factors) or with "
        "hierlmm.fit_bayes (hierlmm.kernels.crossed_loglik); the marginal model (kind='marginal') needs nested "
        "factors in this release.",
    )


def _nests(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Whether every level of ``inner`` lies within a single level of ``outer``."""
    pairs = np.unique(np.stack([inner, outer], 1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs)


def _group_sum(values: np.ndarray, index: np.ndarray, M: int) -> np.ndarray:
    """Sum rows of ``values`` by group (vectorised, sorted reduceat)."""
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    out = np.zeros((M, *values.shape[1:]))
    out[sorted_index[starts]] = np.add.reduceat(values[order], starts, axis=0)
    return out


def subject_stats(design: Design) -> SubjectStats:
    """Compute :class:`SubjectStats` of a design with one grouping factor or factors nested in one.

    Raises
    ------
    NotSupportedError
        When the grouping factors are crossed, or the design has no random effects.
    """
    if not design.blocks:
        raise NotSupportedError(
            "The model has no random effects.",
            given=design.spec.formula,
            fix="Add a random-effects term such as (1 | group); for a fixed-effects-only model use least squares.",
        )
    top = _outermost(design)
    subject = design.blocks[top].group_index
    M = design.blocks[top].n_levels
    n = design.n_obs
    layouts: list[BlockLayout] = []
    offset = 0
    for k in [top, *(k for k in range(len(design.blocks)) if k != top)]:
        block = design.blocks[k]
        if k == top:
            slot_level = np.arange(M)[:, None]
            row_slot = np.zeros(n, dtype=np.int64)
        else:
            pairs = np.unique(np.stack([subject, block.group_index], 1), axis=0)  # sorted by subject, level
            first = np.searchsorted(pairs[:, 0], pairs[:, 0], side="left")
            slot_of_pair = np.arange(len(pairs)) - first
            n_slots = int(slot_of_pair.max()) + 1
            slot_level = np.full((M, n_slots), -1, dtype=np.int64)
            slot_level[pairs[:, 0], slot_of_pair] = pairs[:, 1]
            level_slot = np.empty(block.n_levels, dtype=np.int64)
            level_slot[pairs[:, 1]] = slot_of_pair
            row_slot = level_slot[block.group_index]
        layouts.append(BlockLayout(k, offset, block.q, slot_level.shape[1], slot_level, row_slot))
        offset += block.q * slot_level.shape[1]
    Zs = np.zeros((n, offset))
    rows = np.arange(n)
    for lay in layouts:
        Z = design.blocks[lay.block].Z
        for j in range(lay.q):
            Zs[rows, lay.offset + lay.row_slot * lay.q + j] = Z[:, j]
    X, y = design.X, design.y
    ZtZ = _group_sum(Zs[:, :, None] * Zs[:, None, :], subject, M)
    ZtX = _group_sum(Zs[:, :, None] * X[:, None, :], subject, M)
    Zty = _group_sum(Zs * y[:, None], subject, M)
    counts = np.bincount(subject, minlength=M)
    return SubjectStats(top, subject, counts, tuple(layouts), Zs, ZtZ, ZtX, Zty, X.T @ X, X.T @ y, float(y @ y))
