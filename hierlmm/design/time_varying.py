"""Time-varying covariates at the outcome's visits: current, lagged and cumulative values (the chapter's 3.8).

A time-varying covariate is measured over follow-up, often at times of its own. This module turns a long covariate
table (one row per measurement: subject, time, value) into one column aligned with the rows of the outcome table
(one row per visit: subject, time), ready to be named in a formula. The public names are re-exported by
:mod:`hierlmm.tvc` (``hierlmm.tvc.current``, ``hierlmm.tvc.lagged``, ``hierlmm.tvc.cumulative``).

Only an **exogenous** covariate can be used this way: one whose value at ``t`` does not depend on the outcomes before
``t``, ``p{x_i(t) | H_i^Y(t), H_i^X(t)} = p{x_i(t) | H_i^X(t)}``. An endogenous covariate (one the outcome process
affects) needs a joint model of both processes, which hierlmm does not fit (``docs/time_varying_covariates.md``).

Notation
--------
Subject ``i`` has outcome visits at ``t_i1 <= ... <= t_in`` (the rows of ``data``; ``t_i1`` is its first visit and
``t_in`` its last) and covariate measurements ``x_i1, ..., x_im`` at times ``s_i1 < ... < s_im`` (the rows of
``covariate``, sorted by time here; they may or may not coincide with the visits). ``x_i(t)`` is the covariate
between the measurements:

- ``how="linear"``: ``x_i(t) = x_ik + (x_i,k+1 - x_ik) (t - s_ik) / (s_i,k+1 - s_ik)`` for ``s_ik <= t <= s_i,k+1``
  (linear interpolation, R's ``approx``);
- ``how="locf"``: ``x_i(t) = x_ik`` for ``s_ik <= t < s_i,k+1`` (last observation carried forward: a step function,
  right-continuous, so at a measurement time it is that measurement);
- after the last measurement both carry it forward: ``x_i(t) = x_im`` for ``t >= s_im`` (R's ``approx(rule = 2)``);
- before the first measurement, ``t < s_i1``, the ``before`` argument decides: ``"error"`` (the default) refuses,
  ``"first"`` extends the first measurement backwards (``x_i(t) = x_i1``), ``"nan"`` gives a missing value.

The three columns, for visit ``j`` of subject ``i``:

- current: ``x_i(t_ij)``;
- lagged: ``x_i(t_ij - lag)``;
- cumulative: ``X_ij = integral_{t_i1}^{t_ij} x_i(s) ds`` (``upto="visit"``), the area under ``x_i`` from the
  subject's first visit to this one: trapezoids for ``"linear"``, rectangles for ``"locf"``; with ``average=True``
  ``X_ij / (t_ij - t_i1)``, the mean level over the elapsed time, and ``x_i(t_i1)`` at the first visit (elapsed
  time 0). ``upto="last"`` gives ``integral_{t_i1}^{t_in} x_i(s) ds``, the area over the subject's whole follow-up:
  the same number at every visit of a subject, including values measured after the visit, so a subject-level
  summary rather than a time-varying cumulative value (see :func:`cumulative`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, SpecError

__all__ = ["current", "cumulative", "lagged"]

How = Literal["linear", "locf"]
Before = Literal["error", "first", "nan"]
Upto = Literal["visit", "last"]

_HOWS = ("linear", "locf")
_BEFORES = ("error", "first", "nan")
_UPTOS = ("visit", "last")
_SHOW = 10  # subjects or rows named in a message


@dataclass(frozen=True)
class _Histories:
    """The covariate table sorted by subject and time.

    ``code``, ``time``, ``value``: one entry per measurement; ``start``/``stop``: each subject code's slice; ``area``:
    ``integral_{s_i1}^{s_ik} x_i(s) ds`` at each measurement.
    """

    code: np.ndarray
    time: np.ndarray
    value: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    area: np.ndarray


@dataclass(frozen=True)
class _Visits:
    """The outcome table's subjects (codes shared with the histories), labels and times, in the rows' order."""

    code: np.ndarray
    label: np.ndarray
    time: np.ndarray
    index: pd.Index


def current(
    data: pd.DataFrame,
    covariate: pd.DataFrame,
    *,
    id: str,
    time: str,
    value: str,
    how: How = "linear",
    before: Before = "error",
    covariate_id: str | None = None,
    covariate_time: str | None = None,
) -> pd.Series:
    """The covariate's value at each visit's time, ``x_i(t_ij)``.

    Parameters
    ----------
    data
        The outcome table: one row per visit, with columns `id` and `time`.
    covariate
        The long covariate table: one row per measurement, with columns `covariate_id`, `covariate_time` and
        `value`. It may be `data` itself (the covariate measured at the outcome's visits, as in the chapter).
    id, time
        Columns of `data`: the subject and the visit time.
    value
        Column of `covariate` holding the measurements (numeric, no missing values).
    how
        ``"linear"`` interpolates linearly between the neighbouring measurements; ``"locf"`` carries the last
        measurement forward. After a subject's last measurement both carry it forward.
    before
        A visit before the subject's first measurement: ``"error"`` (default) raises a
        :class:`~hierlmm.errors.DataError` naming the subjects, ``"first"`` uses the first measurement, ``"nan"``
        gives a missing value (which the model fit then reports and drops).
    covariate_id, covariate_time
        The subject and time columns of `covariate`, when they are named differently from `id` and `time`.

    Returns
    -------
    pandas.Series
        Float, named `value`, with `data`'s index (one value per row of `data`, in its order).

    Raises
    ------
    DataError
        A column is missing or not numeric; the covariate table has missing or non-finite subjects, times or values
        (how many rows, which subjects); a subject has two measurements at one time; a subject of `data` has no
        measurement; a visit precedes the subject's first measurement and ``before="error"``.
    SpecError
        `how` or `before` is not one of its values.

    Notes
    -----
    ``x_i(t)`` is defined in the module's Notation: with ``s_ik <= t <= s_i,k+1``,
    ``x_i(t) = x_ik + (x_i,k+1 - x_ik) (t - s_ik) / (s_i,k+1 - s_ik)`` (linear) or ``x_ik`` (LOCF, ``t < s_i,k+1``);
    ``x_im`` after the last measurement. At a measurement's own time both give that measurement exactly. The
    covariate table need not be sorted: each subject's measurements are sorted by time first.

    Examples
    --------
    >>> visits = pd.DataFrame({"id": [1, 1, 1], "t": [0.0, 1.0, 3.0]})
    >>> lab = pd.DataFrame({"id": [1, 1], "t": [0.0, 2.0], "x": [10.0, 12.0]})
    >>> current(visits, lab, id="id", time="t", value="x").tolist()
    [10.0, 11.0, 12.0]
    >>> current(visits, lab, id="id", time="t", value="x", how="locf").tolist()
    [10.0, 10.0, 12.0]
    """
    _check_options(how=how, before=before)
    hist, visits = _prepare(data, covariate, id, time, value, covariate_id, covariate_time, how)
    out, early = _value_at(hist, visits.code, visits.time, how)
    out = _apply_before(out, early, before, visits, value, "at the visit's time")
    return pd.Series(out, index=visits.index, name=value)


def lagged(
    data: pd.DataFrame,
    covariate: pd.DataFrame,
    *,
    id: str,
    time: str,
    value: str,
    lag: float,
    how: How = "linear",
    before: Before = "error",
    covariate_id: str | None = None,
    covariate_time: str | None = None,
) -> pd.Series:
    """The covariate's value ``lag`` time units before each visit, ``x_i(t_ij - lag)``.

    Parameters
    ----------
    data, covariate, id, time, value, how, covariate_id, covariate_time
        As in :func:`current`.
    lag
        How far back, in the units of `time` (a finite number >= 0; ``lag=0`` is :func:`current`). A negative lag
        would use the future and is refused.
    before
        The rule when ``t_ij - lag`` falls before the subject's first measurement, which happens at the first visits
        whenever the covariate starts at the first visit: ``"error"`` (default) raises, naming the subjects and
        rows, so that the choice is made deliberately; ``"first"`` uses the first measurement (the covariate is
        assumed to have stayed at its first value before it was measured); ``"nan"`` gives a missing value, so that
        the model fit drops those visits (and reports it).

    Returns
    -------
    pandas.Series
        Float, named ``f"{value}_lag{lag:g}"``, with `data`'s index.

    Raises
    ------
    DataError
        As in :func:`current`; with ``before="error"``, any ``t_ij - lag`` before the subject's first measurement.
    SpecError
        `lag` is negative, not finite or not a number; `how` or `before` is not one of its values.

    Notes
    -----
    ``x_i(t_ij - lag)`` with the interpolation of the module's Notation. The default refuses rather than choosing:
    using the first measurement and dropping the early visits answer different questions (the first keeps every
    visit but assumes the unmeasured past; the second keeps only visits with a measured past) and change the
    estimate.

    Examples
    --------
    >>> visits = pd.DataFrame({"id": [1, 1, 1], "t": [0.0, 1.0, 2.0]})
    >>> lab = pd.DataFrame({"id": [1, 1, 1], "t": [0.0, 1.0, 2.0], "x": [10.0, 12.0, 11.0]})
    >>> lagged(visits, lab, id="id", time="t", value="x", lag=0.5, before="first").tolist()
    [10.0, 11.0, 11.5]
    >>> lagged(visits, lab, id="id", time="t", value="x", lag=0.5, before="nan").tolist()
    [nan, 11.0, 11.5]
    """
    _check_options(how=how, before=before)
    if isinstance(lag, bool) or not isinstance(lag, Real) or not np.isfinite(lag) or lag < 0:
        raise SpecError("lag must be a finite number >= 0 (how far back, in the units of the time column).",
                        given=lag, fix="Use e.g. lag=0.5; a negative lag would use future values of the covariate.")
    hist, visits = _prepare(data, covariate, id, time, value, covariate_id, covariate_time, how)
    out, early = _value_at(hist, visits.code, visits.time - float(lag), how)
    out = _apply_before(out, early, before, visits, value, f"{lag:g} time units before the visit")
    return pd.Series(out, index=visits.index, name=f"{value}_lag{lag:g}")


def cumulative(
    data: pd.DataFrame,
    covariate: pd.DataFrame,
    *,
    id: str,
    time: str,
    value: str,
    how: How = "linear",
    average: bool = False,
    upto: Upto = "visit",
    before: Before = "error",
    covariate_id: str | None = None,
    covariate_time: str | None = None,
) -> pd.Series:
    """The area under the covariate from the subject's first visit to each visit, ``integral_{t_i1}^{t_ij} x_i(s) ds``.

    Parameters
    ----------
    data, covariate, id, time, value, covariate_id, covariate_time
        As in :func:`current`.
    how
        ``"linear"``: the area under the linear interpolation (trapezoids between measurements); ``"locf"``: the area
        under the step function (rectangles, each measurement held until the next). After the last measurement both
        carry it forward.
    average
        Divide by the elapsed time ``t_ij - t_i1``: the mean level of the covariate since the first visit. At elapsed
        time 0 (the first visit) the average is the current value ``x_i(t_i1)``.
    upto
        ``"visit"`` (default) integrates to each visit's own time ``t_ij``: the cumulative exposure up to that visit,
        which uses only the covariate's past. ``"last"`` integrates to the subject's last visit ``t_in`` at every
        visit: the area over the subject's whole follow-up. It is a subject-level summary, one number per subject,
        the same at all its visits and made mostly of values measured after ``t_ij``. Its coefficient is therefore
        a between-subject association that uses information from after ``t_ij`` (on PBC prothrombin -0.0096, where
        the cumulative effect to each visit is 0.028), not the effect of the exposure accumulated up to ``t``: do
        not use it for a time-varying cumulative effect. It is not the chapter's cumulative table either, which
        comes from course code with swapped arguments (``docs/time_varying_covariates.md``).
    before
        The rule when the subject's first visit ``t_i1`` precedes its first measurement ``s_i1`` (the integral then
        needs ``x_i`` on ``[t_i1, s_i1]``): ``"error"`` (default) raises, naming the subjects; ``"first"`` extends the
        first measurement backwards; ``"nan"`` gives a missing value at every visit of those subjects.

    Returns
    -------
    pandas.Series
        Float, with `data`'s index, named ``f"cum_{value}"`` (``f"avg_{value}"`` with ``average=True``; a suffix
        ``"_last"`` with ``upto="last"``). The first visit's cumulative value is 0.

    Raises
    ------
    DataError
        As in :func:`current`; with ``before="error"``, a subject whose first visit precedes its first measurement.
    SpecError
        `how`, `upto` or `before` is not one of its values, or `average` is not a bool.

    Notes
    -----
    With ``A_i(t) = integral_{s_i1}^{t} x_i(s) ds`` accumulated over the measurements (trapezoids
    ``(s_i,k+1 - s_ik) (x_ik + x_i,k+1) / 2`` or rectangles ``(s_i,k+1 - s_ik) x_ik``) plus the partial interval up
    to ``t``, the column is ``A_i(t_ij) - A_i(t_i1)`` (``A_i(t_in) - A_i(t_i1)`` with ``upto="last"``). The lower
    limit is the subject's first *visit* in `data`: a measurement taken before it does not add to the area (it does
    shape ``x_i`` on the first interval). The units are the covariate's times the time's (e.g. seconds x years for
    prothrombin time over years).

    Examples
    --------
    >>> visits = pd.DataFrame({"id": [1, 1, 1], "t": [0.0, 1.0, 2.0]})
    >>> lab = pd.DataFrame({"id": [1, 1, 1], "t": [0.0, 1.0, 2.0], "x": [10.0, 12.0, 11.0]})
    >>> cumulative(visits, lab, id="id", time="t", value="x").tolist()
    [0.0, 11.0, 22.5]
    >>> cumulative(visits, lab, id="id", time="t", value="x", how="locf").tolist()
    [0.0, 10.0, 22.0]
    >>> cumulative(visits, lab, id="id", time="t", value="x", average=True).tolist()
    [10.0, 11.0, 11.25]
    >>> cumulative(visits, lab, id="id", time="t", value="x", upto="last").tolist()
    [22.5, 22.5, 22.5]
    """
    _check_options(how=how, before=before)
    if upto not in _UPTOS:
        raise SpecError("Unknown upto.", given=upto,
                        fix='Use upto="visit" (integrate to each visit: the cumulative exposure) or "last" (the '
                            "area over the subject's whole follow-up, to its last visit).")
    if not isinstance(average, bool | np.bool_):
        raise SpecError("average must be True or False.", given=average,
                        fix="Use average=True for the mean level since the first visit.")
    hist, visits = _prepare(data, covariate, id, time, value, covariate_id, covariate_time, how)
    by_subject = pd.Series(visits.time).groupby(visits.code)
    first = by_subject.transform("min").to_numpy(float)
    upper = by_subject.transform("max").to_numpy(float) if upto == "last" else visits.time
    area_first, early = _area_to(hist, visits.code, first, how)
    area_upper, _ = _area_to(hist, visits.code, upper, how)
    out = area_upper - area_first
    if average:
        elapsed = upper - first
        at_start, _ = _value_at(hist, visits.code, upper, how)
        out = np.where(elapsed > 0, out / np.where(elapsed > 0, elapsed, 1.0), at_start)
    out = _apply_before(out, early, before, visits, value, "from the subject's first visit (the integral's start)")
    name = ("avg_" if average else "cum_") + value + ("_last" if upto == "last" else "")
    return pd.Series(out, index=visits.index, name=name)


# --------------------------------------------------------------------------------------------- helpers


def _check_options(*, how: str, before: str) -> None:
    """Refuse an unknown interpolation or start-of-follow-up rule."""
    if how not in _HOWS:
        raise SpecError("Unknown interpolation how.", given=how,
                        fix='Use how="linear" (interpolate between measurements) or "locf" (last observation '
                            "carried forward).")
    if before not in _BEFORES:
        raise SpecError("Unknown rule before.", given=before,
                        fix='Use before="error" (refuse times before the first measurement), "first" (use the '
                            'first measurement there) or "nan" (a missing value there).')


def _check_columns(frame: pd.DataFrame, columns: dict[str, str], table: str) -> None:
    """Every named column is in the table."""
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"The {table} must be a pandas DataFrame.", given=type(frame).__name__,
                        fix="Pass a DataFrame with one row per visit (data) or per measurement (covariate).")
    for role, column in columns.items():
        if column not in frame.columns:
            raise DataError(f"Column {column!r} ({role}) is not in the {table}.", given=column,
                            fix=f"Use one of its columns: {', '.join(map(str, frame.columns))}.")


def _numeric(series: pd.Series, column: str, table: str) -> np.ndarray:
    """A column as floats, refused if it is not numeric (a categorical or string column)."""
    if isinstance(series.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
    ):
        raise DataError(f"Column {column!r} of the {table} is not numeric.", given=str(series.dtype),
                        fix=f"Convert it first, e.g. pd.to_numeric(frame[{column!r}]).")
    return series.to_numpy(dtype=float, na_value=np.nan)


def _labels(series: pd.Series) -> np.ndarray:
    """Subject labels as an object array (categoricals by their values), missing ones as None."""
    values = series.astype(object).to_numpy()
    return np.where(pd.isna(values), None, values)


def _names(labels: np.ndarray) -> str:
    """Up to ten distinct subject labels, in order of appearance, then how many more."""
    distinct = list(dict.fromkeys(str(label) for label in labels))
    shown = ", ".join(distinct[:_SHOW])
    return shown + (f" and {len(distinct) - _SHOW} more" if len(distinct) > _SHOW else "")


def _prepare(
    data: pd.DataFrame,
    covariate: pd.DataFrame,
    id: str,
    time: str,
    value: str,
    covariate_id: str | None,
    covariate_time: str | None,
    how: str,
) -> tuple[_Histories, _Visits]:
    """Check both tables and sort the covariate's histories; subjects get codes shared by both tables."""
    cid = id if covariate_id is None else covariate_id
    ctime = time if covariate_time is None else covariate_time
    _check_columns(data, {"id": id, "time": time}, "data (outcome table)")
    _check_columns(covariate, {"covariate_id": cid, "covariate_time": ctime, "value": value}, "covariate table")

    v_label = _labels(data[id])
    v_time = _numeric(data[time], time, "data (outcome table)")
    bad = pd.isna(v_label) | ~np.isfinite(v_time)
    if bad.any():
        rows = list(data.index[bad][:_SHOW])
        raise DataError(f"{int(bad.sum())} row(s) of the data (outcome table) have a missing subject ({id!r}) or a "
                        f"missing or infinite time ({time!r}).", given=f"rows {rows}",
                        fix=f"Drop them first: data.dropna(subset=[{id!r}, {time!r}]).")

    c_label = _labels(covariate[cid])
    c_time = _numeric(covariate[ctime], ctime, "covariate table")
    c_value = _numeric(covariate[value], value, "covariate table")
    bad = pd.isna(c_label) | ~np.isfinite(c_time) | ~np.isfinite(c_value)
    if bad.any():
        counts = {column: int(n) for column, n in (
            (cid, pd.isna(c_label).sum()), (ctime, (~np.isfinite(c_time)).sum()),
            (value, (~np.isfinite(c_value)).sum())) if n}
        subjects = c_label[bad & ~pd.isna(c_label)]
        raise DataError(f"{int(bad.sum())} row(s) of the covariate table have a missing or infinite subject, time or "
                        f"value (per column: {counts}); subjects concerned: {_names(subjects) or 'none named'}.",
                        given=f"rows {list(covariate.index[bad][:_SHOW])}",
                        fix=f"Drop them first, covariate.dropna(subset=[{cid!r}, {ctime!r}, {value!r}]): the "
                            "remaining measurements are then interpolated across the gap (a visit keeps its row).")

    codes, uniques = pd.factorize(np.concatenate([c_label, v_label]))
    c_code, v_code = codes[: len(c_label)], codes[len(c_label):]
    measured = np.zeros(len(uniques), dtype=bool)
    measured[c_code] = True
    unmeasured = ~measured[v_code]
    if unmeasured.any():
        raise DataError(f"{len(set(v_code[unmeasured]))} subject(s) of the data have no row in the covariate table: "
                        f"{_names(v_label[unmeasured])}.", given=f"{id!r} values of the data",
                        fix=f"Give every subject at least one measurement, or drop these subjects from the data; "
                            f"check that {id!r} and {cid!r} hold the same labels (same type: 2 is not '2').")

    order = np.lexsort((c_time, c_code))  # each subject's measurements in time order (the table may be unsorted)
    code, t, x = c_code[order], c_time[order], c_value[order]
    same = (code[1:] == code[:-1]) & (t[1:] == t[:-1])
    if same.any():
        pairs = [f"{uniques[k]} at {s:g}" for k, s in zip(code[1:][same][:_SHOW], t[1:][same][:_SHOW], strict=True)]
        raise DataError(f"{int(same.sum())} measurement(s) of the covariate table share a time with another of the "
                        f"same subject: {', '.join(pairs)}.", given=f"{cid!r}, {ctime!r}",
                        fix=f"Keep one value per subject and time, e.g. covariate.groupby([{cid!r}, {ctime!r}], "
                            f"as_index=False)[{value!r}].mean().")

    n_codes = len(uniques)
    start = np.searchsorted(code, np.arange(n_codes), side="left")
    stop = np.searchsorted(code, np.arange(n_codes), side="right")
    segment = np.zeros(len(t))  # area of the interval ending at each measurement (0 at a subject's first)
    inside = np.r_[False, code[1:] == code[:-1]]
    width = np.r_[0.0, np.diff(t)]
    height = np.r_[0.0, (x[1:] + x[:-1]) / 2] if how == "linear" else np.r_[0.0, x[:-1]]
    segment[inside] = (width * height)[inside]
    area = pd.Series(segment).groupby(code, sort=False).cumsum().to_numpy()
    hist = _Histories(code=code, time=t, value=x, start=start, stop=stop, area=area)
    return hist, _Visits(code=v_code, label=v_label, time=v_time, index=data.index)


def _locate(hist: _Histories, code: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query (subject code, time): the index of the subject's last measurement at or before ``t`` (its
    first when there is none), and whether ``t`` is before the first measurement. Exact (no tolerance): a query at a
    measurement's time finds that measurement."""
    n_hist = len(hist.time)
    keys_code = np.concatenate([hist.code, code])
    keys_time = np.concatenate([hist.time, t])
    kind = np.r_[np.zeros(n_hist, dtype=np.int8), np.ones(len(t), dtype=np.int8)]  # measurements before queries
    order = np.lexsort((kind, keys_time, keys_code))
    n_at_or_before = np.cumsum(kind[order] == 0)  # measurements sorted at or before each position
    found = np.empty(len(t), dtype=np.int64)
    is_query = order >= n_hist
    found[order[is_query] - n_hist] = n_at_or_before[is_query] - 1
    early = found < hist.start[code]
    return np.where(early, hist.start[code], found), early


def _value_at(hist: _Histories, code: np.ndarray, t: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """``x_i(t)`` (the first measurement before it) and whether ``t`` precedes the first measurement."""
    k, early = _locate(hist, code, t)
    out = hist.value[k].copy()
    if how == "linear":
        nxt = np.minimum(k + 1, len(hist.time) - 1)
        between = ~early & (k + 1 < hist.stop[code])
        t0, t1 = hist.time[k[between]], hist.time[nxt[between]]
        x0, x1 = hist.value[k[between]], hist.value[nxt[between]]
        out[between] = x0 + (x1 - x0) * ((t[between] - t0) / (t1 - t0))
    return out, early


def _area_to(hist: _Histories, code: np.ndarray, t: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """``A_i(t) = integral_{s_i1}^{t} x_i(s) ds`` (negative before ``s_i1``, the first value extended backwards) and
    whether ``t`` precedes the first measurement."""
    k, early = _locate(hist, code, t)
    x_t, _ = _value_at(hist, code, t, how)
    dt = t - hist.time[k]
    partial = dt * (hist.value[k] + x_t) / 2 if how == "linear" else dt * hist.value[k]
    partial = np.where(early, dt * hist.value[k], partial)  # dt < 0: minus the area back to t
    return hist.area[k] + partial, early


def _apply_before(
    out: np.ndarray, early: np.ndarray, before: str, visits: _Visits, value: str, when: str
) -> np.ndarray:
    """The ``before`` rule on the rows whose covariate would be needed before the subject's first measurement."""
    if not early.any():
        return out
    if before == "error":
        rows: list[Hashable] = list(visits.index[early][:_SHOW])
        raise DataError(f"{int(early.sum())} visit(s) of {len(set(visits.code[early]))} subject(s) need {value!r} "
                        f"{when}, which is before the subject's first measurement; subjects "
                        f"{_names(visits.label[early])}.", given=f"rows {rows}",
                        fix='Choose a rule: before="first" (use the first measurement there) or before="nan" (a '
                            "missing value there, so that the fit drops those visits); or supply earlier "
                            "measurements.")
    if before == "nan":
        out = out.copy()
        out[early] = np.nan
    return out
