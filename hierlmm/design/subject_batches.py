"""A design's subjects grouped by size, with the distances between their rows' times: what every engine with a
dense ``V_i`` (serially correlated or heteroscedastic errors; REML and NUTS) factorises in batches.

AIDS: 467 patients of 1-5 visits in five batches. A batch of ``k`` subjects of size ``n`` holds their row indices
(k, n) and the distances (k, n, n) between their times (:mod:`hierlmm.structures.serial_correlation`; positions
0, 1, ... within the subject for ``form = ~ 1 | g``, zeros without a structure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, RandomEffectsBlock
from hierlmm.errors import DataError, NotSupportedError
from hierlmm.structures.serial_correlation import CorrelationStructure, check_times


@dataclass(frozen=True, eq=False)
class SubjectBatches:
    """Rows of the subjects grouped by subject size: per size, (k, n) row indices and (k, n, n) distances."""

    rows: tuple[np.ndarray, ...]
    distances: tuple[np.ndarray, ...]
    n_max: int


def subject_batches(design: Design, data: pd.DataFrame, structure: CorrelationStructure | None) -> SubjectBatches:
    """Group the design's rows by subject, the subjects by size, with the distances the structure needs (zeros
    without a structure). Both engines' dense ``V_i`` need one random-effects grouping factor: others are refused."""
    if len(design.blocks) != 1:
        raise NotSupportedError("Serial correlation and variance functions are supported with one random-effects "
                                "grouping factor.", given=[b.factor for b in design.blocks],
                                fix="Use one random-effects term.")
    block = design.blocks[0]
    if structure is not None and block.grouping != (structure.group,):
        raise NotSupportedError("The correlation's grouping must be the random effects' grouping factor.",
                                given={"correlation": structure.group, "random": block.factor},
                                fix=f"Write form = ~ time | {block.factor}.")
    time = structure.time if structure is not None else None
    if time is not None:
        if structure.time not in data.columns:
            raise DataError(f"The correlation's time column {structure.time!r} is not in the data.",
                            given=structure.time, fix="Use a column of the data.")
        times = pd.to_numeric(data[structure.time], errors="coerce").to_numpy(dtype=float)[design.rows]
        check_times(structure, times, "rows the model uses")
    order = np.argsort(block.group_index, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block.group_index[order]) != 0])
    groups = np.split(order, starts[1:])
    by_size: dict[int, list[np.ndarray]] = {}
    for g in groups:
        by_size.setdefault(g.size, []).append(g)
    rows, distances = [], []
    for n in sorted(by_size):
        idx = np.stack(by_size[n])
        t = times[idx] if time is not None else np.broadcast_to(np.arange(n, dtype=float), idx.shape)
        rows.append(idx)
        distances.append(np.abs(t[:, :, None] - t[:, None, :]))
    if time is not None and structure.kind != "corCompSymm" and not structure.nugget:
        _refuse_repeated_times(distances, rows, block, time, times)
    return SubjectBatches(tuple(rows), tuple(distances), max(by_size))


def _refuse_repeated_times(distances: list[np.ndarray], rows: list[np.ndarray], block: RandomEffectsBlock,
                           time: str, times: np.ndarray) -> None:
    """Two rows of a subject at one time are perfectly correlated without a nugget, and ``R_i`` singular: refuse.
    (nlme refuses them even with a nugget, "cannot have zero distances"; with one they correlate ``1 - nugget``.)"""
    repeated = [(d == 0).sum(axis=(1, 2)) > d.shape[1] for d in distances]  # zeros off the diagonal
    count = int(sum(r.sum() for r in repeated))
    if count:
        first = next(idx[r][0] for idx, r in zip(rows, repeated, strict=True) if r.any())  # that subject's rows
        values, counts = np.unique(times[first], return_counts=True)
        subjects = "1 subject has" if count == 1 else f"{count} subjects have"
        raise DataError(f"{subjects} two rows at the same {time!r} (e.g. {block.factor} "
                        f"{block.levels[block.group_index[first[0]]]} at {time} = {values[counts > 1][0]:g}): without "
                        "a nugget their errors would be perfectly correlated, and R_i singular.", given=time,
                        fix="Add nugget = TRUE (rows at one time then correlate 1 - nugget), or combine or drop the "
                            "repeated rows.")
