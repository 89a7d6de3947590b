"""The semi-variogram of a fit's residuals (chapter 3.11): nlme's ``Variogram(fit, form = ~ time | group)``, and the
semi-variogram a serial-correlation fit implies (what nlme's ``plot(Variogram(fit))`` overlays).

Notation
--------
For two rows ``j < k`` of one group (nlme: the innermost grouping factor of the fit, ``getGroups(fit, level = Q)``)
with residuals ``r_j, r_k`` (``fit.residuals(level, type)``) and times ``t_j, t_k``::

    v_jk = (r_j - r_k)^2 / 2,        d_jk = |t_j - t_k|

``t`` is the data column ``time``, or the row's position within its group (1, 2, ...) for nlme's default
``form = ~ 1 | group``. Pairs with ``d > max_dist`` are dropped, then the pairs are collapsed into classes of ``d``
as nlme does (``collapse``, ``nint`` = ``n_bins``, default 20):

- fewer distinct distances than ``n_bins``: one class per distinct distance;
- otherwise ``collapse="quantiles"`` (nlme's default): breaks at the distances' quantiles (R's type 7) at
  ``0, 1/n_bins, ..., 1`` (duplicates removed), ``collapse="fixed"``: ``n_bins + 1`` equally spaced breaks from the
  smallest to the largest distance; the classes are R's ``cut``: right-closed intervals ``(b_l, b_(l+1)]``, so the
  pairs at the smallest distance fall in no class and are left out (as nlme leaves them out); empty classes are
  dropped.

Each class gives ``variog`` = the mean of its ``v_jk`` (``robust=True``: Cressie and Hawkins' estimator
``mean(v^(1/4))^4 / (0.457 + 0.494 / m)``, ``m`` pairs), ``dist`` = the median of its ``d_jk`` and ``n_pairs`` = ``m``
(nlme's column ``n.pairs``). ``collapse="none"`` returns every pair (``variog``, ``dist``; nlme's order: groups in
level order, pairs in R's ``lower.tri`` order).

The model semi-variogram of a fit with a correlation structure ``R`` (:mod:`hierlmm.structures.serial_correlation`) is
``g(d) = s2 (1 - R(d))`` at ``d > 0``, ``R(d)`` the correlation of two distinct rows at distance ``d`` (with a nugget
``(1 - nugget) rho(d)``, so ``g = s2 (nugget + (1 - nugget)(1 - rho(d)))``, nlme's ``Variogram.corSpatial``), ``s2 = 1``
for pearson residuals and ``sigma^2`` for response residuals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, check_data_rows
from hierlmm.engines.fit_result import check_level, check_residual_type
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.errors import DataError, NotSupportedError, SpecError

COLLAPSE = ("quantiles", "fixed", "none")
N_BINS = 20  # nlme's nint
SPATIAL = ("corExp", "corGaus")  # nlme's corSpatial classes among hierlmm's structures


def variogram(fit: Any, time: str | None = None, *, data: pd.DataFrame | None = None, type: str = "pearson",
              robust: bool = False, level: int = 1, max_dist: float | None = None, n_bins: int | None = None,
              collapse: str = "quantiles") -> pd.DataFrame:
    """nlme's ``Variogram(fit, form = ~ time | group, resType = type, robust, maxDist, nint, collapse)``.

    Parameters
    ----------
    fit
        Any fit: the residuals are ``fit.residuals(level=level, type=type)``; the groups are the levels of the
        fit's innermost grouping factor (its only one, or the last of nested factors), as nlme's.
    time
        A numeric column of ``data`` (the ``time`` of ``form = ~ time | group``). None: nlme's default, the rows'
        positions within their group (``~ 1 | group``), except for a corExp/corGaus fit, whose correlation's times
        are used (nlme's default for a spatial correlation structure).
    data
        The data frame the fit was built from (needed for ``time``, unless ``time`` is the correlation's time column
        of a :class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit`, whose distances are stored).
    type
        ``"pearson"`` (nlme's default), ``"response"`` or ``"normalized"``.
    robust
        Cressie and Hawkins' robust estimator in each class (module notation).
    level
        The residuals' level: 1 (nlme's) or 0.
    max_dist
        Leave out pairs farther apart than this (nlme's ``maxDist``).
    n_bins
        nlme's ``nint`` (default 20): the number of classes when there are more distinct distances.
    collapse
        ``"quantiles"`` (default), ``"fixed"`` or ``"none"`` (module notation).

    Returns
    -------
    pandas.DataFrame
        ``variog``, ``dist`` and ``n_pairs`` (nlme's ``n.pairs``), one row per class in increasing distance;
        ``collapse="none"``: ``variog`` and ``dist`` of every pair.

    Raises
    ------
    SpecError
        An unknown ``type`` or ``collapse``, ``n_bins`` below 1.
    DataError
        A missing or non-numeric time column, missing times, no ``data`` where it is needed, no pairs left.
    NotSupportedError
        ``level=1`` on a marginal-model fit (it has no random effects); groups that are not nested.
    """
    type = check_type(type)
    check_level(level)
    if not isinstance(robust, bool | np.bool_):
        raise SpecError("robust must be True or False.", given=robust, fix="Use robust=True or robust=False.")
    if max_dist is not None and (isinstance(max_dist, bool) or not isinstance(max_dist, int | float | np.number)
                                 or not np.isfinite(max_dist) or max_dist < 0):
        raise SpecError("max_dist must be a finite distance, 0 or more.", given=max_dist,
                        fix="Use e.g. max_dist=10 (in the time column's units), or None for all pairs.")
    if collapse not in COLLAPSE:
        raise SpecError("Unknown collapse.", given=collapse, fix=f"Use one of {', '.join(COLLAPSE)}.")
    n_bins = N_BINS if n_bins is None else n_bins
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise SpecError("n_bins must be a positive whole number.", given=n_bins, fix="Use e.g. n_bins=20 (nlme's).")
    if level == 1 and getattr(fit, "kind", "hierarchical") == "marginal":
        raise NotSupportedError("A marginal-model fit has no random effects, so no level-1 residuals.", given=level,
                                fix="Use level=0, or fit kind='hierarchical' for subject-level residuals.")
    groups = group_distances(fit, time, data)
    residuals = np.asarray(fit.residuals(level=level, type=type), dtype=float)
    v, d = pairs(residuals, groups)
    if max_dist is not None:
        keep = d <= max_dist
        v, d = v[keep], d[keep]
    if d.size == 0:
        raise DataError("No pair of rows of one group is left.", given={"max_dist": max_dist},
                        fix="Raise max_dist; groups need two rows or more.")
    if collapse == "none":
        return pd.DataFrame({"variog": v, "dist": d})
    return collapse_pairs(v, d, robust=robust, n_bins=int(n_bins), collapse=collapse)


def check_type(type: str) -> str:
    """nlme's residual type named by ``type`` (or a prefix, as nlme's ``match.arg``); refuse any other."""
    return check_residual_type(type)


def group_distances(fit: Any, time: str | None, data: pd.DataFrame | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group in level order: its rows (positions among the design's rows, in row order) and the (n, n) distances
    between their times (module notation)."""
    design: Design = fit.design
    structure = getattr(fit, "structure", None) if isinstance(fit, CorrelatedFit) else None
    stored = structure is not None and fit.batches is not None and structure.kind in SPATIAL
    if stored and (time is None or (time == structure.time and data is None)):
        return [(idx, d) for rows, dist in zip(fit.batches.rows, fit.batches.distances, strict=True)
                for idx, d in zip(rows, dist, strict=True)]
    index = _group_index(design)
    order = np.argsort(index, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(index[order]) != 0])
    members = np.split(order, starts[1:])
    if time is None:
        t = np.zeros(design.n_obs)
        for idx in members:
            t[idx] = np.arange(1, idx.size + 1)
    else:
        t = time_values(design, data, time)
    return [(idx, np.abs(t[idx][:, None] - t[idx][None, :])) for idx in members]


def time_values(design: Design, data: pd.DataFrame | None, time: str) -> np.ndarray:
    """The column ``time`` of ``data`` on the design's rows; a hierlmm error when it cannot be used."""
    if data is None:
        raise DataError(f"The time column {time!r} is read from the data, which were not given.", given=time,
                        fix="Pass the data frame the fit was built from: variogram(fit, time, data=df).")
    if time not in data.columns:
        raise DataError(f"No column {time!r} in the data.", given=time,
                        fix=f"Use a numeric column of the data: {', '.join(map(str, list(data.columns)[:10]))}.")
    column = data[time]
    if not (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)):
        raise DataError(f"The time column {time!r} is not numeric.", given=str(column.dtype),
                        fix="Give a numeric time (years, visit number), or time=None for positions within the group.")
    check_data_rows(design, data)
    values = column.to_numpy(dtype=float)[design.rows]
    if not np.all(np.isfinite(values)):
        raise DataError(f"The time column {time!r} is missing or not finite in {int((~np.isfinite(values)).sum())} "
                        "rows the fit uses.", given=time, fix="Give those rows a time, or refit without them.")
    return values


def _group_index(design: Design) -> np.ndarray:
    """The level of every row in the innermost grouping factor (the last block), refused unless the factors nest."""
    last = design.blocks[-1]
    for block in design.blocks[:-1]:
        per_level = pd.Series(block.group_index).groupby(last.group_index).nunique()
        if (per_level > 1).any():
            raise NotSupportedError("The grouping factors are crossed, not nested: no innermost group to take the "
                                    "pairs of rows within.", given=[b.factor for b in design.blocks],
                                    fix="Compute it on a fit with nested grouping factors (nlme's Variogram needs "
                                        "nested groups too).")
    return np.asarray(last.group_index)


def pairs(residuals: np.ndarray, groups: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``v_jk`` and ``d_jk`` of every pair of rows within a group (module notation), in nlme's order: the groups in
    the given order, within one R's ``lower.tri`` (column-major) order."""
    v, d = [], []
    for idx, dist in groups:
        n = idx.size
        if n < 2:
            continue
        col, row = np.triu_indices(n, 1)  # (row, col) with row > col, column by column
        r = residuals[idx]
        v.append((r[row] - r[col]) ** 2 / 2)
        d.append(dist[row, col])
    if not v:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(v), np.concatenate(d)


def collapse_pairs(v: np.ndarray, d: np.ndarray, *, robust: bool = False, n_bins: int = N_BINS,
                   collapse: str = "quantiles") -> pd.DataFrame:
    """nlme's classes of distances and their ``variog``, ``dist`` and ``n_pairs`` (module notation)."""
    unique = np.unique(d)
    if n_bins < unique.size:
        if collapse == "quantiles":
            breaks = np.unique(r_quantile(d, np.minimum(np.arange(n_bins + 1) * (1 / n_bins), 1.0)))
        else:
            breaks = np.linspace(unique[0], unique[-1], n_bins + 1)
        code = np.searchsorted(breaks, d, side="left")  # R's cut: class l for b_(l-1) < d <= b_l
        valid = (code >= 1) & (code < breaks.size)
    else:
        code = np.searchsorted(unique, d)
        valid = np.ones(d.size, dtype=bool)
    rows = []
    for c in np.unique(code[valid]):
        members = valid & (code == c)
        vc, m = v[members], int(members.sum())
        value = np.mean(vc ** 0.25) ** 4 / (0.457 + 0.494 / m) if robust else np.mean(vc)
        rows.append((float(value), float(np.median(d[members])), m))
    return pd.DataFrame(rows, columns=["variog", "dist", "n_pairs"]).astype({"n_pairs": int})


def r_quantile(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """R's ``quantile(x, probs)`` of type 7 (its default), computed as R does it."""
    x = np.sort(np.asarray(x, dtype=float))
    index = (x.size - 1) * np.asarray(probs, dtype=float)  # R's 1 + (n - 1) p, from 0
    lo, hi = np.floor(index).astype(int), np.ceil(index).astype(int)
    q = x[lo].copy()
    inner = (index > lo) & (x[hi] != q)
    h = (index - lo)[inner]
    q[inner] = (1 - h) * q[inner] + h * x[hi[inner]]
    return q


def model_variogram(fit: Any, dist: np.ndarray | None = None, *, type: str = "pearson",
                    length_out: int = 50) -> pd.DataFrame:
    """The semi-variogram a serial-correlation fit implies (module notation): nlme's ``attr(Variogram(fit),
    "modelVariog")``, the curve ``plot(Variogram(fit))`` draws.

    Parameters
    ----------
    fit
        A :class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit` with a correlation structure.
    dist
        Distances to evaluate it at. None: nlme's ``length_out`` equally spaced distances from the smallest to the
        largest distance between two rows of a subject that the fit used.
    type
        ``"pearson"`` (scale 1) or ``"response"`` (scale ``sigma^2``); nlme gives none for normalized residuals.

    Returns
    -------
    pandas.DataFrame
        ``variog`` and ``dist``.

    Notes
    -----
    nlme draws it for its spatial structures only (corExp, corGaus). For corCAR1, corAR1 and corCompSymm the same
    ``s2 (1 - R(d))`` is returned (the correlation of two distinct rows at distance ``d``).
    """
    type = check_type(type)
    if not isinstance(fit, CorrelatedFit) or fit.structure is None:
        given = "correlation=None" if isinstance(fit, CorrelatedFit) else fit.__class__.__name__
        raise NotSupportedError("Only a fit with a correlation structure implies a semi-variogram of its errors.",
                                given=given,
                                fix='Fit with correlation=, e.g. "corExp(form = ~ obstime | patient)".')
    if type == "normalized":
        raise NotSupportedError("Normalized residuals have the modelled correlation removed: no model "
                                "semi-variogram is left to draw (nlme gives none).", given=type,
                                fix='Use type="pearson" or "response".')
    if dist is None:
        if fit.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches (the times it used).",
                                    given="CorrelatedFit.batches is None", fix="Pass dist=, or refit.")
        off = np.concatenate([D[:, ~np.eye(D.shape[1], dtype=bool)].ravel() for D in fit.batches.distances])
        if off.size == 0:
            raise DataError("No subject has two rows.", given=fit.design.n_obs, fix="Pass dist=.")
        dist = np.linspace(off.min(), off.max(), length_out)
    d = np.atleast_1d(np.asarray(dist, dtype=float))
    two = np.zeros((d.size, 2, 2))
    two[:, 0, 1] = two[:, 1, 0] = d
    R = fit.structure.from_distances(fit._part("correlation"), two, fit.n_max)[:, 0, 1]
    scale = 1.0 if type == "pearson" else fit.sigma**2
    return pd.DataFrame({"variog": scale * (1 - R), "dist": d})
