"""Effect plots' data (chapter 3.2, 3.4): the population mean response over one covariate, per level of another, with
every other covariate held at a stated value, and its pointwise band.

Which covariates there are comes from the model (:func:`~hierlmm.design.design.used_columns`: the raw data columns
of the fixed and random parts, without the response and the grouping factors), so a model with splines (``ns``,
``bs``, ``poly``), ``I(...)`` terms and interactions is handled like any other: the grid is made of raw covariate
values and coded by the fit's own design (its knots and factor levels,
:func:`~hierlmm.design.design.new_model_matrices`).

- ``focal``: numeric -> ``n`` equally spaced values over its range in the fitted rows (or ``grid=``); a factor -> its
  levels (or ``grid=``, a subset).
- ``by`` (optional): a factor -> its levels; numeric -> its quartiles (25%, 50%, 75%) in the fitted rows (or
  ``by_values=``).
- ``at``: fixes any other covariate.
- Every other covariate is held at its mean in the fitted rows (numeric; the mean of the raw column, so ``age`` for
  ``log(age)``) or at its reference level (a factor: the first fitted level). The result records each value and why
  (``Effects.held``, ``Effects.held_how``, ``Effects.caption``).

The design keeps the raw values of the model's columns on its rows (``Design.covariates``), so means, ranges and
quartiles need no data; ``data=`` (the data frame the fit was built from) is checked to be it when given.

Notation
--------
For a grid row with fixed-effects covariates ``x`` (the chapter's row of ``X``): the population mean (level 0) is
``x' beta``. ML/REML: the band is ``x' beta +- z_{(1+ci_prob)/2} sqrt(x' Var(beta) x)`` (normal quantiles, pointwise,
``Var(beta)`` the fit's ``cov_beta``): a confidence band of the mean. Bayes: with ``S`` posterior draws ``beta_s``,
the estimate is the posterior mean of ``x' beta_s`` and the band its equal-tailed ``ci_prob`` interval: a credible
band. Neither band includes the random effects ``b_i`` or the errors: it is about the mean of the population, not
about a new subject (that is a prediction interval).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, check_data_rows, used_columns
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.fit_result import check_ci_prob
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.formula.evaluation import Factor, column_as_value
from hierlmm.formula.expression import deparse, names_in
from hierlmm.inference.prediction import predict


@dataclass(frozen=True)
class Effects:
    """The data of an effect plot (see the module notation).

    Attributes
    ----------
    table
        One row per grid point: the ``focal`` column, the ``by`` column (when given), ``estimate``, ``lower``,
        ``upper``, then every held covariate at its value.
    focal
        The covariate on the x axis.
    by
        The covariate with one line per value, or ``None``.
    held
        Every other covariate and the value it is held at.
    held_how
        Why each held value: ``"at"`` (given), ``"mean"`` (its mean in the fitted rows) or ``"reference level"``.
    ci_prob
        Mass of the pointwise band.
    engine
        The fit's method: ``"REML"``, ``"ML"`` or ``"NUTS"``.
    response
        The response, as the formula writes it.
    focal_kind, by_kind
        ``"numeric"`` or ``"factor"`` (``by_kind`` is ``None`` without ``by``).
    """

    table: pd.DataFrame
    focal: str
    by: str | None
    held: Mapping[str, Any]
    ci_prob: float
    engine: str
    response: str
    focal_kind: str
    by_kind: str | None = None
    held_how: Mapping[str, str] = field(default_factory=dict)

    @property
    def band(self) -> str:
        """What the band is, in words."""
        kind = "credible" if self.engine == "NUTS" else "confidence"
        how = ("equal-tailed posterior interval of x' beta" if self.engine == "NUTS"
               else "x' beta +- z se, se = sqrt(x' Var(beta) x)")
        return f"pointwise {self.ci_prob:.0%} {kind} band of the population mean ({how})"

    @property
    def caption(self) -> str:
        """One sentence: the population mean (level 0) shown, the band's meaning, and the held covariates."""
        held = "; ".join(f"{name} = {_format(value)} ({self.held_how.get(name, 'held')})"
                         for name, value in self.held.items())
        text = f"Population mean of {self.response} (level 0, {self.engine}) with a {self.band}."
        return text + (f" Other covariates held at: {held}." if held else "")


@dataclass(frozen=True)
class _Covariate:
    """A raw covariate: numeric, or a factor with the fit's levels (reference first)."""

    name: str
    kind: str
    levels: tuple[str, ...] = ()
    values: pd.Series | None = None  # the fitted rows' values, when data= was given

    def level_value(self, level: str) -> Any:
        """The raw value that codes ``level`` (a number when the column is numeric, e.g. ``factor(visit)``)."""
        if self.values is not None:
            if pd.api.types.is_bool_dtype(self.values.dtype):
                return level == "TRUE"
            if pd.api.types.is_numeric_dtype(self.values.dtype):
                return float(level)
        return level


def _factor_of(expr: Any) -> str | None:
    """The column ``x`` of ``factor(x)``, ``as.factor(x)`` or ``ordered(x)`` (None for any other expression)."""
    text = deparse(expr)
    for call in ("factor(", "as.factor(", "ordered("):
        if text.startswith(call) and text.endswith(")") and names_in(expr) == [text[len(call):-1]]:
            return text[len(call):-1]
    return None


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _covariates(design: Design, data: pd.DataFrame | None) -> dict[str, _Covariate]:
    """Every raw covariate of the model, with its kind (see the module docstring)."""
    spec = design.spec
    response = set(names_in(spec.response))
    variables = [*spec.fixed.variables, *(v for block in spec.random for v in block.effects.variables)]
    in_terms = {c for v in variables for c in names_in(v)}
    grouping = {c for block in spec.random for c in block.grouping} - in_terms
    rows = data.iloc[design.rows] if data is not None else None
    out: dict[str, _Covariate] = {}
    for name in used_columns(spec):
        if name in response or name in grouping:
            continue
        if rows is not None:
            values = rows[name].reset_index(drop=True)
        else:  # the design's own copy of the fitted rows' values
            raw = design.covariates.get(name)
            values = None if raw is None else pd.Series(raw, name=name)
        levels = design.levels.get(name)
        if levels is None:  # coded as a factor inside a call only, e.g. factor(visit) (not I(visit > 2))
            levels = next((design.levels[deparse(v)] for v in variables
                           if deparse(v) in design.levels and _factor_of(v) == name), None)
        if levels is None and values is not None and isinstance(column_as_value(values), Factor):
            levels = tuple(column_as_value(values).levels)
        out[name] = _Covariate(name, "numeric" if levels is None else "factor", tuple(levels or ()), values)
    return out


def _unknown(name: Any, role: str, covariates: Mapping[str, _Covariate], fit: Any) -> SpecError:
    return SpecError(f"{role} must name one of the model's covariates.", given=name,
                     fix=f"Use one of {sorted(covariates)} (the raw columns of {fit.design.spec.formula!r}, "
                         "without the response and the grouping factors).")


def _need_data(what: str, name: str) -> SpecError:
    return SpecError(f"effects needs the data the fit was built from to {what} (the design keeps factor levels "
                     "and spline knots, not the raw columns' values).", given=f"{name}, data=None",
                     fix=f"Pass data=<the data frame given to hierlmm.fit>, or give {name} explicitly "
                         f"(at={{{name!r}: value}}, grid= or by_values=).")


def _numbers(values: Any, name: str) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise SpecError(f"The values of the numeric covariate {name!r} must be numbers.", given=values,
                        fix="Give finite numbers, e.g. grid=np.linspace(0, 10, 21).") from None
    if out.size == 0 or not np.isfinite(out).all():
        raise SpecError(f"The values of {name!r} must be one or more finite numbers.", given=values,
                        fix="Give finite numbers, e.g. grid=np.linspace(0, 10, 21).")
    return out


def _levels(values: Any, cov: _Covariate) -> list[Any]:
    """Raw values of chosen levels of a factor covariate, each checked to be a fitted level."""
    chosen = [values] if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray | pd.Series) \
        else list(values)
    if not chosen:
        raise SpecError(f"No levels of {cov.name!r} were given.", given=values, fix=f"Use some of {list(cov.levels)}.")
    out = []
    for value in chosen:
        label = _level_label(value, cov)
        if label is None:
            raise DataError(f"{value!r} is not a level of {cov.name!r} the model was fitted on.", given=value,
                            fix=f"Use one of {list(cov.levels)}.")
        out.append(cov.level_value(label))
    return out


def _level_label(value: Any, cov: _Covariate) -> str | None:
    if isinstance(value, bool | np.bool_):
        text = "TRUE" if value else "FALSE"
        return text if text in cov.levels else None
    if str(value) in cov.levels:
        return str(value)
    if isinstance(value, int | float | np.integer | np.floating):
        for level in cov.levels:
            try:
                if float(level) == float(value):
                    return level
            except ValueError:
                continue
    return None


def _whole(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise SpecError(f"{name} must be a whole number, {least} or more.", given=value, fix=f"Use e.g. {name}=50.")
    return int(value)


def _population_band(fit: Any, grid: pd.DataFrame, ci_prob: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate, lower and upper bound of the population mean (level 0) on ``grid`` (module notation): the
    confidence (ML/REML) or credible (Bayes) interval of :func:`hierlmm.inference.prediction.predict`."""
    if not isinstance(fit, PosteriorResult | REMLResult):
        raise NotSupportedError("effects needs a fit made by hierlmm.fit (ML/REML) or hierlmm.fit_bayes (NUTS).",
                                given=type(fit).__name__, fix="Pass the result of hierlmm.fit or hierlmm.fit_bayes.")
    pred = predict(fit, grid, level=0, interval="confidence", ci_prob=ci_prob)
    return pred["fit"].to_numpy(), pred["lower"].to_numpy(), pred["upper"].to_numpy()


def effects(fit: Any, focal: str, by: str | None = None, at: Mapping[str, Any] | None = None, *,
            data: pd.DataFrame | None = None, grid: Sequence[Any] | np.ndarray | None = None,
            by_values: Sequence[Any] | np.ndarray | None = None, ci_prob: float = 0.95, n: int = 50) -> Effects:
    """The population mean response (level 0) over ``focal``, one curve per value of ``by``, with every other
    covariate held fixed, and its pointwise band (module notation).

    Parameters
    ----------
    fit
        Any ML/REML fit (``hierlmm.fit``) or Bayesian fit (``hierlmm.fit_bayes``), of any kind.
    focal
        The covariate on the x axis: numeric (a grid over its range) or a factor (its levels).
    by
        Optional covariate with one curve per value: a factor's levels, or a numeric covariate's quartiles.
    at
        Values that fix other covariates, ``{"age": 49, "basePro": 10.6}``; a factor's value must be a fitted level.
    data
        The data frame the fit was built from (optional: the design keeps the raw covariates of its rows; given, it
        is checked to be that data). Needed only for a design without them (built by an older hierlmm).
    grid
        Values of ``focal`` (numbers, or some of a factor's levels) instead of the default.
    by_values
        Values of ``by`` instead of the default (all levels; quartiles).
    ci_prob
        Mass of the pointwise band.
    n
        Number of grid points of a numeric ``focal`` (when ``grid`` is not given).

    Returns
    -------
    Effects
        The table (``focal``, ``by``, ``estimate``, ``lower``, ``upper`` and the held covariates) and what was held.

    Raises
    ------
    SpecError
        ``focal``, ``by`` or a key of ``at`` is not a covariate of the model (or is given twice), or ``data`` is
        needed and missing, or ``ci_prob``, ``n`` or a value is invalid.
    DataError
        ``data`` is not the data the fit was built from, or a factor value is not a fitted level.
    NotSupportedError
        ``fit`` is not a hierlmm fit.
    """
    if not isinstance(fit, REMLResult | PosteriorResult):
        raise NotSupportedError("effects needs a fit made by hierlmm.fit (ML/REML) or hierlmm.fit_bayes (NUTS).",
                                given=type(fit).__name__, fix="Pass the result of hierlmm.fit or hierlmm.fit_bayes.")
    ci_prob = check_ci_prob(ci_prob)
    design = fit.design
    if data is not None:
        if not isinstance(data, pd.DataFrame):
            raise DataError("data must be the pandas DataFrame the fit was built from.", given=type(data).__name__,
                            fix="Pass the data frame given to hierlmm.fit.")
        missing = [c for c in used_columns(design.spec) if c not in data.columns]
        if missing:
            raise DataError("data lack columns the model uses: they are not the data the fit was built from.",
                            given=missing, fix="Pass the data frame given to hierlmm.fit.")
        check_data_rows(design, data)
    covariates = _covariates(design, data)
    at = dict(at or {})
    if not isinstance(focal, str) or focal not in covariates:
        raise _unknown(focal, "focal", covariates, fit)
    if by is not None and (not isinstance(by, str) or by not in covariates):
        raise _unknown(by, "by", covariates, fit)
    if by == focal:
        raise SpecError("focal and by must be different covariates.", given=by, fix="Choose another by, or none.")
    for name in at:
        if name not in covariates:
            raise SpecError("at names a column the model does not use: it cannot be held at a value.", given=name,
                            fix=f"Fix only covariates of the model: {sorted(covariates)}.")
        if name in (focal, by):
            raise SpecError(f"{name!r} is the focal or by covariate and cannot also be fixed by at.", given=at,
                            fix=f"Remove {name!r} from at (use grid= or by_values= to choose its values).")
    if by is None and by_values is not None:
        raise SpecError("by_values was given without by.", given=by_values, fix="Name the covariate: by=...")

    focal_cov = covariates[focal]
    focal_values = _axis_values(focal_cov, grid, "focal", n=_whole(n, "n", 2))
    by_cov = covariates[by] if by is not None else None
    by_list = _axis_values(by_cov, by_values, "by") if by_cov is not None else [None]

    held: dict[str, Any] = {}
    held_how: dict[str, str] = {}
    for name, cov in covariates.items():
        if name in (focal, by):
            continue
        if name in at:
            value = at[name]
            if np.ndim(value) != 0:
                raise SpecError(f"at holds {name!r} at one value; several were given.", given=value,
                                fix=f"Give one value, or make {name!r} the focal or by covariate.")
            held[name] = _levels(value, cov)[0] if cov.kind == "factor" else float(_numbers(value, name)[0])
            held_how[name] = "at"
        elif cov.kind == "factor":
            held[name], held_how[name] = cov.level_value(cov.levels[0]), "reference level"
        else:
            if cov.values is None:
                raise _need_data(f"hold {name!r} at its mean", name)
            held[name], held_how[name] = float(pd.to_numeric(cov.values).mean()), "mean"

    rows = [{focal: f, **({by: b} if by is not None else {}), **held}
            for b, f in itertools.product(by_list, focal_values)]
    table = pd.DataFrame(rows, columns=[focal, *([by] if by is not None else []), *held])
    estimate, lower, upper = _population_band(fit, table, ci_prob)
    front = table[[focal, *([by] if by is not None else [])]].copy()
    front["estimate"], front["lower"], front["upper"] = estimate, lower, upper
    out = pd.concat([front, table[list(held)]], axis=1)
    return Effects(out, focal, by, held, ci_prob, str(fit.method), design.response_name, focal_cov.kind,
                   by_cov.kind if by_cov is not None else None, held_how)


def _axis_values(cov: _Covariate, values: Any, role: str, n: int = 0) -> list[Any]:
    """The focal's or by's values: given, or the defaults of the module docstring."""
    if cov.kind == "factor":
        return _levels(values, cov) if values is not None else [cov.level_value(lv) for lv in cov.levels]
    if values is not None:
        return [float(v) for v in _numbers(values, cov.name)]
    if cov.values is None:
        what = "span the range of" if role == "focal" else "take the quartiles of"
        raise _need_data(f"{what} the numeric {role} {cov.name!r}", cov.name)
    x = pd.to_numeric(cov.values).to_numpy(dtype=float)
    if role == "focal":
        return [float(v) for v in np.linspace(x.min(), x.max(), n)]
    return [float(v) for v in np.unique(np.quantile(x, [0.25, 0.5, 0.75]))]

