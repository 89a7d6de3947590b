"""Designs: the response ``y``, the fixed-effects matrix ``X`` and one random-effects block per grouping factor.

Stage 2 of the pipeline ``spec -> design -> model -> fit``, the analogue of lme4's ``lFormula``/``reTrms``.

Notation
--------
For grouping factor ``k`` with levels ``1..M_k`` and ``q_k`` effects, block ``k`` holds ``Z_k`` (n x q_k) and the
level of every row; subject ``i``'s rows of ``Z_k`` form ``Z_ki`` and ``y_i = X_i beta + sum_k Z_ki b_ki + e_i`` with
``b_ki ~ N(0, D_k)``, ``e_i ~ N(0, sigma^2 I)``. Rows with a missing value in any column the model uses are dropped, and
reported (``Design.missing``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, FormulaError, MissingDataWarning
from hierlmm.formula.evaluation import Evaluator, Factor, Numeric, Value, _r_string, column_as_value
from hierlmm.formula.expression import Expr, Name, deparse, names_in
from hierlmm.formula.model_matrix import check_full_rank, model_matrix
from hierlmm.formula.terms import TermList
from hierlmm.spec.model_spec import ModelSpec, RandomTerm


@dataclass(frozen=True)
class MissingReport:
    """Rows dropped for missing values: how many, and how many were missing in each column."""

    n_dropped: int
    by_column: Mapping[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.n_dropped:
            return "no rows dropped"
        cols = ", ".join(f"{c} ({k})" for c, k in self.by_column.items() if k)
        return f"{self.n_dropped} rows dropped for missing values in: {cols}"


@dataclass(frozen=True, eq=False)
class RandomEffectsBlock:
    """The random effects of one grouping factor (lme4's ``reTrms`` element, MixedModels.jl's ``ReMat``).

    Attributes
    ----------
    factor
        The grouping factor's name (``"patient"``, ``"id:eye"``).
    grouping
        Its columns (``("id", "eye")`` for ``id:eye``).
    structure
        The structure of D (:mod:`hierlmm.structures.random_effects`): ``"pdSymm"``, ``"pdDiag"``, ``"pdIdent"``,
        ``"pdCompSymm"`` or ``"pdBlocked"``.
    levels
        Level labels (interactions as ``"1:2"``), in order.
    group_index
        For each row, the index of its level in ``levels``.
    Z
        (n, q) random-effects design of this block.
    effect_names
        The q column names (``"(Intercept)"``, ``"obstime"``).
    effects
        The random-effects terms the columns come from.
    parts
        ``pdBlocked`` only: ``(structure, number of columns)`` of each diagonal block of D, in column order.
    """

    factor: str
    grouping: tuple[str, ...]
    structure: str
    levels: tuple[str, ...]
    group_index: np.ndarray
    Z: np.ndarray
    effect_names: tuple[str, ...]
    effects: TermList
    parts: tuple[tuple[str, int], ...] = ()

    @property
    def q(self) -> int:
        """Number of random effects per level."""
        return self.Z.shape[1]

    @property
    def n_levels(self) -> int:
        """Number of levels of the grouping factor."""
        return len(self.levels)


@dataclass(frozen=True, eq=False)
class Design:
    """Everything an engine needs, and what is needed to evaluate the same model on new data.

    Attributes
    ----------
    spec
        The model.
    y
        Response, (n,).
    X
        Fixed-effects design, (n, p), columns named ``fixef_names`` as R names them.
    assign
        Term of each column of X (0 = intercept), as R's ``assign`` attribute.
    blocks
        One :class:`RandomEffectsBlock` per grouping factor, outermost first.
    rows
        Positions (``iloc``) of the data rows used.
    missing
        What was dropped for missing values.
    state
        Fitted stateful transforms (``ns`` knots, ...), keyed by their R text.
    levels
        Levels of every factor variable, so new data are coded the same way.
    covariates
        The raw values, on the rows used, of every data column the model reads besides the response (what effect
        plots hold covariates at: means, ranges, quartiles; :func:`hierlmm.effects`).
    """

    spec: ModelSpec
    y: np.ndarray
    X: np.ndarray
    fixef_names: tuple[str, ...]
    assign: tuple[int, ...]
    blocks: tuple[RandomEffectsBlock, ...]
    rows: np.ndarray
    missing: MissingReport
    state: Mapping[str, Any]
    levels: Mapping[str, tuple[str, ...]]
    response_name: str
    covariates: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_obs(self) -> int:
        """Number of observations used."""
        return len(self.y)

    @property
    def p(self) -> int:
        """Number of fixed effects."""
        return self.X.shape[1]

    def conditional_mean(self, beta: np.ndarray, effects: Sequence[np.ndarray] = ()) -> np.ndarray:
        """``X beta`` on the design's rows, plus every block's ``Z b`` when ``effects`` gives each block's
        ``b`` (levels x q, in the blocks' order)."""
        mu = self.X @ beta
        if len(effects) == 0:
            return mu
        for block, b in zip(self.blocks, effects, strict=True):
            mu = mu + np.einsum("nq,nq->n", block.Z, np.asarray(b)[block.group_index])
        return mu


def used_columns(spec: ModelSpec) -> list[str]:
    """Data columns the model refers to, in order of appearance."""
    cols: list[str] = []
    exprs: list[Expr] = [spec.response, *spec.fixed.variables]
    for block in spec.random:
        exprs.extend(block.effects.variables)
    for e in exprs:
        cols.extend(c for c in names_in(e) if c not in cols)
    for block in spec.random:
        cols.extend(c for c in block.grouping if c not in cols)
    return cols


def _check_columns(data: pd.DataFrame, columns: list[str], source: str) -> None:
    checker = Evaluator(data, source=source)
    for c in columns:
        checker.column(c)  # raises a DataError naming close matches


def _grouping_factor(data: pd.DataFrame, block: RandomTerm) -> tuple[np.ndarray, tuple[str, ...]]:
    """Level index of every row and level labels of a (possibly interaction) grouping factor."""
    parts = []
    for col in block.grouping:
        value = column_as_value(data[col])
        if not isinstance(value, Factor):  # grouping factors are always factors
            value = Evaluator(data).to_factor(value, None, Name(col))
        parts.append(value)
    if len(parts) == 1:  # one column: its levels in order, unused levels dropped
        present, index = np.unique(parts[0].codes, return_inverse=True)
        return index.reshape(-1), tuple(parts[0].levels[c] for c in present)
    codes = np.stack([p.codes for p in parts], axis=1)
    uniq, index = np.unique(codes, axis=0, return_inverse=True)  # lexicographic: outer factor's levels first
    labels = tuple(":".join(p.levels[c] for p, c in zip(parts, row, strict=True)) for row in uniq)
    return index.reshape(-1), labels


def build_design(spec: ModelSpec, data: pd.DataFrame, *, warn: bool = True) -> Design:
    """Evaluate ``spec`` on ``data``: the ``y``, ``X`` and random-effects blocks of the model.

    Parameters
    ----------
    spec
        The model.
    data
        A data frame with every column the model uses. String columns are factors with sorted levels (as R's
        ``read.csv``); pandas categoricals keep their category order (the first category is the reference).
    warn
        Emit a :class:`~hierlmm.errors.MissingDataWarning` when rows are dropped.

    Returns
    -------
    Design

    Raises
    ------
    DataError
        Unknown column, non-numeric response, a factor with one level, a grouping factor with one level, no rows
        left, or a rank-deficient X.
    """
    source = spec.formula
    if not isinstance(data, pd.DataFrame):
        raise DataError("Data must be a pandas DataFrame.", given=type(data).__name__, fix="Pass a DataFrame.")
    if len(data) == 0:
        raise DataError("The data have no rows.", given=f"columns {list(data.columns)[:10]}", fix="Pass the data.")
    columns = used_columns(spec)
    _check_columns(data, columns, source)
    data = data.reset_index(drop=True)

    ev = Evaluator(data, source=source)
    response = ev.variable(spec.response)
    if isinstance(response, Factor) or response.values.shape[1] != 1:
        raise DataError(
            f"The response {deparse(spec.response)} is not a single numeric column.",
            given=source,
            fix="Use a numeric response (convert strings with pd.to_numeric, or choose another column).",
        )
    variables: dict[Expr, Value] = {}
    for term_list in [spec.fixed, *(b.effects for b in spec.random)]:
        for v in term_list.variables:
            if v not in variables:
                variables[v] = ev.variable(v)

    # Missing values: any used column missing drops the row (reported per column, never silent).
    missing_cols = {c: data[c].isna().to_numpy() for c in columns}
    bad = np.zeros(len(data), bool)
    for m in missing_cols.values():
        bad |= m
    for name, value in [(deparse(spec.response), response), *((deparse(v), x) for v, x in variables.items())]:
        undefined = _undefined(value) & ~bad
        if undefined.any():
            raise DataError(
                f"{name} is not finite for {int(undefined.sum())} rows whose data are not missing "
                f"(first at row {int(np.flatnonzero(undefined)[0])}).",
                given=source,
                fix="Check the transformation's domain (e.g. log() of values <= 0) or clean the data.",
            )
    rows = np.flatnonzero(~bad)
    report = MissingReport(int(bad.sum()), {c: int(m.sum()) for c, m in missing_cols.items() if m.any()})
    if report.n_dropped and warn:
        warnings.warn(str(report), MissingDataWarning, stacklevel=2)
    if rows.size == 0:
        raise DataError(
            "No rows are left after dropping rows with missing values.",
            given=str(report),
            fix="Check the columns listed: one may be entirely missing.",
        )
    kept = {v: _subset(x, rows) for v, x in variables.items()}
    y = response.values[rows, 0]
    X, names, assign = model_matrix(spec.fixed, kept, rows.size, source)
    check_full_rank(X, names, "fixed-effects", source)
    sub = data.iloc[rows].reset_index(drop=True)
    blocks = []
    for block in spec.random:
        if block.structure == "pdBlocked":  # each part's columns in turn (D is block diagonal over them)
            pieces = [model_matrix(effects, kept, rows.size, source) for _, effects in block.parts]
            Z, znames = np.hstack([p[0] for p in pieces]), tuple(n for p in pieces for n in p[1])
            parts = tuple((st, p[0].shape[1]) for (st, _), p in zip(block.parts, pieces, strict=True))
            if len(set(znames)) < len(znames):
                raise FormulaError(f"The blocks of {block.factor!r} share a random effect.", given=source,
                                   fix="Give each effect to one block only, e.g. (1 | g) + (0 + x | g).")
        else:
            Z, znames, _ = model_matrix(block.effects, kept, rows.size, source)
            parts = ()
        index, labels = _grouping_factor(sub, block)
        if len(labels) < 2:
            raise DataError(
                f"The grouping factor {block.factor!r} has {len(labels)} level in the data used.",
                given=source,
                fix="Random effects need a grouping factor with several levels; check the column and the rows dropped.",
            )
        blocks.append(
            RandomEffectsBlock(block.factor, block.grouping, block.structure, labels, index, Z, tuple(znames),
                               block.effects, parts)
        )
    levels = {deparse(v): x.levels for v, x in variables.items() if isinstance(x, Factor)}
    response_columns = set(names_in(spec.response))
    covariates = {c: data[c].iloc[rows].to_numpy() for c in columns if c not in response_columns}
    return Design(
        spec, y, X, names, assign, tuple(blocks), rows, report, dict(ev.state), levels, deparse(spec.response),
        covariates,
    )


def _undefined(value: Value) -> np.ndarray:
    if isinstance(value, Factor):
        return value.codes < 0
    return ~np.isfinite(value.values).all(axis=1)


def _subset(value: Value, rows: np.ndarray) -> Value:
    if isinstance(value, Factor):
        present = np.unique(value.codes[rows])
        if present.size < len(value.levels):  # drop unused levels, as nlme's model.frame(drop.unused.levels=TRUE)
            remap = np.full(len(value.levels), -1)
            remap[present] = np.arange(present.size)
            return Factor(remap[value.codes[rows]], tuple(value.levels[i] for i in present))
        return Factor(value.codes[rows], value.levels)
    return Numeric(value.values[rows], value.suffixes)


def check_response_varies(design: Design) -> None:
    """Refuse to fit a constant response (a design may still carry one, e.g. a template for simulation)."""
    y = design.y
    if y.size and np.ptp(y) <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
        raise DataError(f"The response {design.response_name} is constant on the {y.size} rows used "
                        f"(every value {y[0]:g}): there is no variation for a model to explain.",
                        given=design.spec.formula,
                        fix="Check the response column (and the rows dropped for missing values).")


def new_model_matrices(design: Design, data: pd.DataFrame, source: str = "the new data"
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
    """X and every block's Z for new data, with the training design's knots and factor levels.

    A column is read as it was in the fitted data (:func:`coerce_like_training`): numbers given for a factor are its
    level labels, text given for a numeric column is refused unless it parses as numbers. Rows with missing values
    in used columns are not allowed here: they raise a :class:`DataError`.
    """
    spec = design.spec
    data = coerce_like_training(design, data.reset_index(drop=True), source)
    ev = Evaluator(data, design.state, source=spec.formula)
    values: dict[Expr, Value] = {}
    for term_list in [spec.fixed, *(b.effects for b in spec.random)]:
        for v in term_list.variables:
            if v in values:
                continue
            value = ev.variable(v)
            if isinstance(value, Factor):
                value = _recode(value, design.levels.get(deparse(v), value.levels), deparse(v))
            if _undefined(value).any():
                raise DataError(
                    f"{deparse(v)} is missing or not finite in {source} (rows "
                    f"{np.flatnonzero(_undefined(value))[:5].tolist()}).",
                    given=spec.formula,
                    fix="Provide complete rows for prediction.",
                )
            values[v] = value
    X, _, _ = model_matrix(spec.fixed, values, len(data))
    Zs = [np.hstack([model_matrix(e, values, len(data))[0] for _, e in b.parts]) if b.structure == "pdBlocked"
          else model_matrix(b.effects, values, len(data))[0] for b in spec.random]
    return X, Zs


def _numeric_kind(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def coerce_like_training(design: Design, data: pd.DataFrame, source: str = "the new data") -> pd.DataFrame:
    """New data's columns read as the fitted data's were (:attr:`Design.covariates`): numbers in a column that was a
    factor become its level labels (``eye = 1`` is level ``"1"``), and text in a column that was numeric is parsed
    as numbers or refused, naming the column and the values (never silently a factor, which would code other
    columns of X)."""
    out = data
    for column, fitted in design.covariates.items():
        if column not in data.columns:
            continue
        new = data[column]
        new_is_number = pd.api.types.is_numeric_dtype(new.dtype) and not pd.api.types.is_bool_dtype(new.dtype)
        if _numeric_kind(np.asarray(fitted)) and not new_is_number and not pd.api.types.is_bool_dtype(new.dtype):
            parsed = pd.to_numeric(new.astype("object"), errors="coerce")
            bad = parsed.isna() & new.notna()
            if bad.any():
                raise DataError(f"Column {column!r} is numeric in the fitted data, but {source} have text in it: "
                                f"{sorted(set(map(str, new[bad])))[:5]} (rows {np.flatnonzero(bad)[:5].tolist()}).",
                                given=column, fix=f"Give {column!r} as numbers.")
            out = out.assign(**{column: parsed.astype(float)})
        elif not _numeric_kind(np.asarray(fitted)) and new_is_number:
            labels = [None if pd.isna(v) else _r_string(v) for v in new]
            out = out.assign(**{column: pd.Series(labels, index=new.index, dtype="object")})
    return out


def new_response(design: Design, data: pd.DataFrame, source: str = "the new data") -> np.ndarray:
    """The response ``y`` (n,) of new data (for example a subject's history), transformed as the model's left-hand
    side (``log(serBilir)``) with the training design's transform state.

    Raises
    ------
    DataError
        The response's column is missing, or the response is missing or not finite in some rows (they are named:
        rows are never dropped silently here).
    """
    spec = design.spec
    columns = sorted(names_in(spec.response))
    absent = [c for c in columns if c not in data.columns]
    if absent:
        raise DataError(f"{source.capitalize()} lack the response column(s) {absent}.", given=list(data.columns),
                        fix=f"Add {absent}: a history conditions on observed outcomes.")
    data = data.reset_index(drop=True)
    value = Evaluator(data, design.state, source=spec.formula).variable(spec.response)
    if isinstance(value, Factor) or value.values.shape[1] != 1:
        raise DataError(f"The response {deparse(spec.response)} is not a single numeric column in {source}.",
                        given=spec.formula, fix="Use numeric outcomes.")
    y = value.values[:, 0].astype(float)
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise DataError(f"The response {deparse(spec.response)} is missing or not finite in {bad.size} row(s) of "
                        f"{source} (positions {bad[:5].tolist()}).", given=spec.formula,
                        fix="Drop those rows from the history (a visit without an outcome carries no information "
                            "about the subject's random effects).")
    return y


def _recode(value: Factor, levels: tuple[str, ...], name: str) -> Factor:
    index = {lv: i for i, lv in enumerate(levels)}
    unknown = [value.levels[c] for c in set(value.codes.tolist()) if c >= 0 and value.levels[c] not in index]
    if unknown:
        raise DataError(
            f"New data have levels of {name} that the model was not fitted on: {sorted(unknown)}.",
            given=name,
            fix=f"Use the fitted levels {list(levels)}.",
        )
    mapping = np.array([index.get(lv, -1) for lv in value.levels] + [-1])
    return Factor(mapping[value.codes], levels)


def grouping_labels(data: pd.DataFrame, grouping: tuple[str, ...]) -> list[str]:
    """Each row's level label of a (possibly interaction) grouping factor, as ``RandomEffectsBlock.levels`` spells
    them (``"12"``, ``"12:1"``), for data the design was not built on."""
    missing = [col for col in grouping if col not in data.columns]
    if missing:
        raise DataError(f"The new data lack the grouping column(s) {missing}.", given=list(data.columns),
                        fix=f"Add {missing}: the rows' levels decide which random effects they share.")
    parts = []
    for col in grouping:
        value = column_as_value(data[col])
        if isinstance(value, Factor):
            parts.append([value.levels[c] if c >= 0 else "" for c in value.codes])
        else:
            parts.append([_r_string(v) for v in value])  # as the training design's factor levels were made
    return [":".join(items) for items in zip(*parts, strict=True)]


def data_difference(a: Design, b: Design) -> str | None:
    """What makes two designs' data differ, in words (None when they hold the same response on the same rows):
    what likelihood-ratio tests and LOO comparisons need to be comparable."""
    if a.response_name != b.response_name:
        return f"different responses ({a.response_name} and {b.response_name})"
    if a.n_obs != b.n_obs or not np.array_equal(np.asarray(a.rows), np.asarray(b.rows)):
        return (f"different data rows ({a.n_obs} and {b.n_obs} rows; rows with missing values in a column one model "
                "uses are dropped from that model only)")
    if not np.array_equal(a.y, b.y):
        return f"different values of the response {a.response_name}"
    return None


def check_data_rows(design: Design, data: pd.DataFrame) -> None:
    """Refuse a data frame that is not the one the design was built from: too few rows, or rows whose grouping
    factors (and plain response column) differ from the design's on its rows (for example sorted or shuffled)."""
    if len(data) <= int(np.max(design.rows, initial=-1)):
        raise DataError("The data are not the data the fit was built from (too few rows).", given=len(data),
                        fix="Pass the data frame given to hierlmm.fit, unsorted.")
    for block in design.blocks:
        if not all(column in data.columns for column in block.grouping):
            continue
        labels = np.asarray(grouping_labels(data.iloc[design.rows], block.grouping), dtype=object)
        if not np.array_equal(labels, np.asarray(block.levels, dtype=object)[block.group_index]):
            raise DataError(f"The data's {block.factor!r} column does not match the fit's rows: these are not the data "
                            "the fit was built from (sorted, shuffled or filtered?).", given=block.factor,
                            fix="Pass the data frame given to hierlmm.fit, as it was.")
    if design.response_name in data.columns:
        y = pd.to_numeric(data[design.response_name].iloc[design.rows], errors="coerce").to_numpy(dtype=float)
        if not np.allclose(y, design.y, rtol=1e-12, atol=0.0, equal_nan=False):
            raise DataError(f"The data's {design.response_name!r} column does not match the fit's response.",
                            given=design.response_name, fix="Pass the data frame given to hierlmm.fit, as it was.")
