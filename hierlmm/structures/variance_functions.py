"""Heteroscedastic within-subject errors: nlme's variance functions varIdent, varPower and varExp (``weights=``).

``y_i = X_i beta + Z_i b_i + e_i``, ``e_i ~ N(0, sigma^2 S_i R_i S_i)``, with ``S_i`` the diagonal matrix of the
rows' SD ratios and ``R_i`` the correlation structure (the identity without one,
:mod:`hierlmm.structures.serial_correlation`).

Notation
--------
For row ``j`` with variance covariate ``x_j`` and stratum ``g_j`` (``form = ~ x | g``), the SD ratio
``s_j = sd(e_j) / sigma`` is

- ``varIdent(form = ~ 1 | g)``: ``s_j = delta_{g_j}``, one ratio per stratum, ``delta = 1`` in the reference
  stratum (nlme's: the stratum of the first row once the data are sorted by the grouping factor; nlme reports the
  other strata's ratios);
- ``varPower(form = ~ x)``: ``s_j = |x_j|^delta`` (``~ x | g``: one ``delta`` per stratum);
- ``varExp(form = ~ x)``: ``s_j = exp(t x_j)`` (``~ x | g``: one ``t`` per stratum).

All three are log-linear in an unconstrained vector ``omega`` (k,): ``log s = M omega`` with ``M`` (n_obs, k) the
*bound* design of the function (:meth:`VarianceFunction.bind`): indicator columns of strata 2..K for varIdent
(``omega = log delta``), ``log|x|`` for varPower (``omega = delta``), ``x`` for varExp (``omega = t``), multiplied
by stratum indicators when the form has ``| g``. The ML/REML engine (:mod:`hierlmm.engines.reml.correlated_fit`) and a
Bayesian model both use ``M``; :meth:`BoundVarianceFunction.parameters` turns ``omega`` into nlme's reported parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, NotSupportedError, SpecError


class RowsAndGroups(Protocol):
    """What :meth:`VarianceFunction.bind` reads of a design (:class:`hierlmm.design.design.Design` has both): the data
    rows it uses, and its random-effects blocks (the first one's ``group_index`` orders the strata as nlme does).
    Structures come before designs in the pipeline, so they name only what they read."""

    rows: Any
    blocks: Sequence[Any]

TYPES = ("varIdent", "varPower", "varExp")
_STRUCTURE = {
    "varIdent": "Different standard deviations per stratum",
    "varPower": "Power of variance covariate",
    "varExp": "Exponential of variance covariate",
}
_PARAMETER = {"varPower": "power", "varExp": "expon"}
_NAME = r"[A-Za-z_.][\w.]*"
_CALL = re.compile(r"^\s*(\w+)\s*\(\s*(.*?)\s*\)\s*$", re.DOTALL)
_FORM = re.compile(rf"^(?:form\s*=\s*)?~\s*(1|{_NAME}|fitted\s*\(\s*\.?\s*\))\s*"
                   rf"(?:\|\s*({_NAME}(?:\s*\*\s*{_NAME})*)\s*)?$")


@dataclass(frozen=True)
class VarianceFunction:
    """A variance function: its type, the variance covariate and the strata.

    Attributes
    ----------
    kind
        One of :data:`TYPES`.
    covariate
        The column ``x`` of ``form = ~ x`` (None for varIdent's ``~ 1``).
    strata
        The columns of ``| g`` (``| g1 * g2``: their combinations), empty when the form has none.
    """

    kind: str
    covariate: str | None
    strata: tuple[str, ...] = ()

    @property
    def form(self) -> str:
        """The one-sided formula as nlme prints it (``"~1 | drug"``, ``"~prothrombin"``)."""
        return f"~{self.covariate or 1}" + (f" | {' * '.join(self.strata)}" if self.strata else "")

    @property
    def structure(self) -> str:
        """nlme's description of the structure (print.varFunc's ``Structure:`` line)."""
        return _STRUCTURE[self.kind] + (", different strata" if self.kind != "varIdent" and self.strata else "")

    def __str__(self) -> str:
        return f"{self.kind}(form = {self.form})"

    def bind(self, design: RowsAndGroups, data: pd.DataFrame) -> BoundVarianceFunction:
        """The function on the rows a design uses: ``M`` with ``log(SD ratio) = M @ omega``, names and a start.

        Parameters
        ----------
        design
            A :class:`~hierlmm.design.design.Design` (its ``rows`` pick the data rows, in the design's order; its first
            random-effects block orders the strata as nlme does).
        data
            The data the design was built from.

        Raises
        ------
        DataError
            A missing column, a missing value in a row the model uses (reported, never dropped), a non-numeric
            covariate, a non-positive covariate of varPower, or strata with one level.
        """
        rows = np.asarray(design.rows)
        strata, labels = self._strata(design, data, rows)
        x = None if self.kind == "varIdent" else self._covariate(data, rows, "rows the model uses")
        M = self._matrix(x, strata, len(labels))
        kept = {"function": self, "levels": tuple(labels)}
        if self.kind == "varIdent":
            return BoundVarIdent(M, tuple(labels[1:]), np.zeros(len(labels) - 1), reference=labels[0], **kept)
        parameter = _PARAMETER[self.kind]
        names = tuple(labels) if labels else (parameter,)
        return BoundVarianceFunction(M, names, np.zeros(len(names)), parameter=parameter, **kept)

    def _covariate(self, data: pd.DataFrame, rows: np.ndarray, which: str) -> np.ndarray:
        """The covariate column of ``M``: ``log x`` (varPower, x > 0 required) or ``x`` (varExp)."""
        x = _numeric(data, self.covariate, rows, str(self), which)
        if self.kind == "varPower":
            if np.any(x <= 0):
                bad = int((x <= 0).sum())
                raise DataError(f"varPower's covariate {self.covariate!r} is zero or negative in {bad} {which}; its "
                                "SD ratio |x|^delta needs x > 0.", given=str(self),
                                fix="Use a positive covariate (shift it, or use varExp for a covariate that can be 0).")
            x = np.log(x)
        return x

    def _matrix(self, x: np.ndarray | None, strata: np.ndarray, n_levels: int) -> np.ndarray:
        """``M`` from the covariate column ``x`` and the rows' stratum indices (module notation)."""
        if self.kind == "varIdent":
            return (strata[:, None] == np.arange(1, n_levels)[None, :]).astype(float)
        assert x is not None
        if not n_levels:
            return x[:, None]
        return np.where(strata[:, None] == np.arange(n_levels)[None, :], x[:, None], 0.0)

    def _strata(self, design: RowsAndGroups, data: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Stratum index of every row and the labels, in nlme's order (first appearance once the rows are sorted
        by the grouping factor, which nlme's lme does before it initialises the variance function)."""
        if not self.strata:
            return np.zeros(rows.size, dtype=int), []
        label = self._labels(data, rows, "rows the model uses")
        order = np.argsort(design.blocks[0].group_index, kind="stable") if design.blocks else np.arange(rows.size)
        labels = list(dict.fromkeys(label[order]))
        if len(labels) < 2:
            raise DataError(f"The strata {' * '.join(self.strata)!r} of {self} have one level ({labels[0]!r}) in "
                            "the rows the model uses: there is nothing to compare.", given=str(self),
                            fix="Use a stratum column with several levels, or drop '| ...' from the form.")
        index = {v: i for i, v in enumerate(labels)}
        return np.array([index[v] for v in label]), labels

    def _labels(self, data: pd.DataFrame, rows: np.ndarray, which: str) -> np.ndarray:
        """Each row's stratum label (``"a"``; ``"a*b"`` for ``| g1 * g2``), as :meth:`bind` spells them."""
        parts = []
        for col in self.strata:
            _check_column(data, col, str(self))
            values = data[col].to_numpy()[rows]
            missing = pd.isna(values)
            if missing.any():
                raise DataError(f"The stratum column {col!r} of {self} is missing in {int(missing.sum())} {which} "
                                "(hierlmm does not drop them silently).", given=str(self),
                                fix=f"Complete {col!r} in those rows, or drop the rows from the data.")
            parts.append(np.array([str(v) for v in values], dtype=object))
        return parts[0] if len(parts) == 1 else np.array(["*".join(v) for v in zip(*parts, strict=True)], dtype=object)


@dataclass(frozen=True, eq=False)
class BoundVarianceFunction:
    """A variance function on a design's rows: ``log(SD ratio) = M @ omega`` (see the module notation).

    Attributes
    ----------
    M
        (n_obs, k) float array, rows in the design's observation order.
    names
        The k parameter names, as nlme names them (``"power"``, ``"expon"``, or the strata).
    start
        (k,) starting ``omega`` (nlme's: SD ratios 1).
    parameter
        nlme's name of the parameter (``"power"``, ``"expon"``; ``""`` for varIdent's SD ratios).
    function
        The variance function that was bound (what :meth:`new_rows` evaluates; None for a hand-made ``M``).
    levels
        The strata labels in nlme's order, the reference stratum (varIdent) first; empty without strata.
    """

    M: np.ndarray
    names: tuple[str, ...]
    start: np.ndarray
    parameter: str = ""
    function: VarianceFunction | None = None
    levels: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """The parameters' labels in summaries: ``power``, or ``power[female]`` per stratum."""
        if self.names == (self.parameter,):
            return self.names
        return tuple(f"{self.parameter}[{n}]" for n in self.names)

    def natural(self, omega: np.ndarray) -> np.ndarray:
        """nlme's parameters from ``omega`` (..., k), elementwise: the identity for varPower and varExp."""
        return np.asarray(omega, dtype=float)

    def sd_ratios(self, omega: np.ndarray) -> np.ndarray:
        """The rows' SD ratios ``exp(M @ omega)`` (n_obs,)."""
        return np.exp(self.M @ np.asarray(omega, dtype=float))

    def parameters(self, omega: np.ndarray) -> dict[str, float]:
        """nlme's reported parameters from ``omega``: power ``delta`` or exponent ``t`` (the identity here)."""
        return {n: float(v) for n, v in zip(self.names, np.asarray(omega, dtype=float), strict=True)}

    def new_rows(self, data: pd.DataFrame) -> np.ndarray:
        """``M`` of the fitted function on new rows (n_new, k): their SD ratios are ``exp(new_rows(data) @ omega)``.

        Every row of ``data`` is used, in order. The strata of the new rows are matched to the fitted strata by
        label (so ``omega`` keeps its meaning: the reference stratum of varIdent has ``omega = 0``); varPower uses
        ``log x`` (x > 0), varExp ``x``.

        Raises
        ------
        DataError
            A column the function needs is not in ``data`` (or is missing in some rows), a stratum the fit did not
            see, a non-positive covariate of varPower.
        NotSupportedError
            ``M`` was built by hand (a bare log-SD design): there is no rule for new rows.
        """
        function = self.function
        if function is None:
            raise NotSupportedError("This log-SD design was given as a matrix (M, names): there is no rule to build "
                                    "its rows for new data.", given=self.names,
                                    fix='Fit with weights="varIdent(form = ~ 1 | g)" (or varPower, varExp) instead.')
        data = data.reset_index(drop=True)
        rows = np.arange(len(data))
        for col in (*([function.covariate] if function.covariate else []), *function.strata):
            if col not in data.columns:
                raise DataError(f"The new rows lack the column {col!r} that the fitted {function} needs.",
                                given=list(data.columns),
                                fix=f"Add {col!r} to the new rows: their error SDs depend on it.")
        strata = np.zeros(rows.size, dtype=int)
        if function.strata:
            index = {v: i for i, v in enumerate(self.levels)}
            label = function._labels(data, rows, "new rows")
            unseen = sorted({str(v) for v in label if v not in index})
            if unseen:
                raise DataError(f"The new rows have strata of {function} that the fit did not see: {unseen}.",
                                given=unseen, fix=f"Use the fitted strata: {', '.join(self.levels)}.")
            strata = np.array([index[v] for v in label], dtype=int)
        x = None if function.kind == "varIdent" else function._covariate(data, rows, "new rows")
        return function._matrix(x, strata, len(self.levels))


@dataclass(frozen=True, eq=False)
class BoundVarIdent(BoundVarianceFunction):
    """varIdent bound to rows: ``omega`` are log SD ratios of strata 2..K against ``reference``."""

    reference: str = ""

    @property
    def labels(self) -> tuple[str, ...]:
        """The parameters' labels in summaries: ``sd_ratio[<stratum>]`` (against the reference stratum)."""
        return tuple(f"sd_ratio[{n}]" for n in self.names)

    def natural(self, omega: np.ndarray) -> np.ndarray:
        """nlme's SD ratios ``exp(omega)`` (..., k)."""
        return np.exp(np.asarray(omega, dtype=float))

    def parameters(self, omega: np.ndarray) -> dict[str, float]:
        """nlme's reported SD ratios ``exp(omega)`` of the non-reference strata."""
        return {n: float(v) for n, v in zip(self.names, np.exp(np.asarray(omega, dtype=float)), strict=True)}


def describe(function: VarianceFunction, bound: BoundVarianceFunction, omega: np.ndarray) -> str:
    """nlme's print of a fitted variance function (``Variance function:`` block of ``print.lme``)."""
    params = bound.parameters(omega)
    if isinstance(bound, BoundVarIdent):
        params = {bound.reference: 1.0, **params}
    table = pd.DataFrame([params]).to_string(index=False, float_format=lambda v: f"{v:.6f}")
    return "\n".join(["Variance function:", f" Structure: {function.structure}", f" Formula: {function.form}",
                      " Parameter estimates:", *(" " + line for line in table.splitlines())])


def parse_weights(text: str | VarianceFunction) -> VarianceFunction:
    """Parse nlme's syntax: ``"varIdent(form = ~ 1 | sex)"``, ``"varPower(form = ~ x)"``, ``"varExp(~ x | g)"``.

    Raises
    ------
    SpecError
        Unreadable text, an unknown function, varIdent without strata, or varPower/varExp without a covariate.
    NotSupportedError
        ``form = ~ fitted(.)`` (nlme's default for varPower and varExp).
    """
    if isinstance(text, VarianceFunction):
        return text
    if not isinstance(text, str):
        raise SpecError("weights must be nlme's variance function as text or varIdent/varPower/varExp(...).",
                        given=repr(text), fix='Write e.g. weights="varIdent(form = ~ 1 | sex)".')
    call = _CALL.match(text)
    if not call:
        raise SpecError("Cannot read the variance function.", given=text,
                        fix='Write it as nlme does, e.g. "varIdent(form = ~ 1 | sex)" or "varPower(form = ~ x)".')
    kind, args = call.groups()
    if kind not in TYPES:
        extra = " (varFixed, varConstPower and varComb are not supported)" if kind.startswith("var") else ""
        raise SpecError(f"Unknown variance function {kind}{extra}.", given=text, fix=f"Use one of {', '.join(TYPES)}.")
    if not args.strip():
        return _checked(kind, "fitted(.)" if kind != "varIdent" else "1", (), text)
    form = _FORM.match(args.strip())
    if not form:
        raise SpecError(f"Cannot read the form of {kind}: hierlmm reads form = ~ x or ~ x | g with column names.",
                        given=text, fix=f'Write e.g. "{kind}(form = ~ {"1 | sex" if kind == "varIdent" else "x"})".')
    lhs, strata = form.groups()
    return _checked(kind, lhs, tuple(s.strip() for s in strata.split("*")) if strata else (), text)


def varIdent(form: str) -> VarianceFunction:  # nlme's name
    """One SD ratio per stratum: ``varIdent("~ 1 | sex")``."""
    return parse_weights(f"varIdent(form = {form})")


def varPower(form: str) -> VarianceFunction:  # nlme's name
    """SD ratio ``|x|^delta``: ``varPower("~ x")`` (``"~ x | g"``: a ``delta`` per stratum)."""
    return parse_weights(f"varPower(form = {form})")


def varExp(form: str) -> VarianceFunction:  # nlme's name
    """SD ratio ``exp(t x)``: ``varExp("~ x")`` (``"~ x | g"``: a ``t`` per stratum)."""
    return parse_weights(f"varExp(form = {form})")


def _checked(kind: str, lhs: str, strata: tuple[str, ...], text: str) -> VarianceFunction:
    if lhs.startswith("fitted"):
        raise NotSupportedError(f"{kind} of the fitted values (form = ~ fitted(.), nlme's default) is not supported: "
                                "the SD would depend on beta, which the REML/ML engine profiles out.", given=text,
                                fix=f'Give a covariate column: "{kind}(form = ~ x)".')
    if kind == "varIdent":
        if lhs != "1" or not strata:
            raise SpecError("varIdent needs strata and no covariate: form = ~ 1 | g.", given=text,
                            fix='Write e.g. "varIdent(form = ~ 1 | sex)".')
        return VarianceFunction(kind, None, strata)
    if lhs == "1":
        raise SpecError(f"{kind} needs a variance covariate: form = ~ x.", given=text,
                        fix=f'Write e.g. "{kind}(form = ~ x)", or varIdent for strata only.')
    return VarianceFunction(kind, lhs, strata)


def _check_column(data: pd.DataFrame, col: str, source: str) -> None:
    if col not in data.columns:
        raise DataError(f"The column {col!r} of {source} is not in the data.", given=col,
                        fix=f"Use one of the data's columns: {', '.join(map(str, list(data.columns)[:12]))}.")


def _numeric(data: pd.DataFrame, col: str | None, rows: np.ndarray, source: str,
             which: str = "rows the model uses") -> np.ndarray:
    assert col is not None
    _check_column(data, col, source)
    series = data[col]
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise DataError(f"The variance covariate {col!r} is not numeric.", given=f"{col} ({series.dtype})",
                        fix="Use a numeric column, or varIdent(form = ~ 1 | g) for a factor.")
    x = np.asarray(series.to_numpy()[rows], dtype=float)
    if not np.all(np.isfinite(x)):
        raise DataError(f"The variance covariate {col!r} is missing or not finite in {int((~np.isfinite(x)).sum())} "
                        f"{which} (hierlmm does not drop them silently).", given=source,
                        fix=f"Complete {col!r} in those rows, or drop the rows from the data.")
    return x
