"""R's ``model.matrix``: columns and column names of a term list, with R's contrast rules.

Notation
--------
For a term T and a factor f in T, f is coded by treatment contrasts (levels 2..K, the first level is the
reference) when T without f is contained in a term that precedes T (the empty term counts as the intercept's);
otherwise f is coded by indicators of all K levels. Without an intercept, the first factor of the first term that
has one is coded by indicators. In a term's columns the first variable varies fastest, and a column is named by
joining its variables' labels with ``:`` (``obstime:drugddI``, ``ns(year, 2)1:sexfemale``). This is R's
``TermCode`` rule from ``src/library/stats/src/model.c``, reimplemented because no Python library follows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product

import numpy as np
import scipy.linalg

from hierlmm.errors import DataError
from hierlmm.formula.evaluation import Factor, Numeric, Value
from hierlmm.formula.expression import Expr, deparse
from hierlmm.formula.terms import TermList


def factor_codings(terms: TermList, values: Mapping[Expr, Value]) -> list[dict[Expr, str]]:
    """For each term, how each of its factors is coded: ``"contrasts"`` or ``"indicators"``."""
    codings: list[dict[Expr, str]] = []
    earlier: list[frozenset[Expr]] = []
    for term in terms.terms:
        coding: dict[Expr, str] = {}
        for v in term.variables:
            if isinstance(values[v], Factor):
                rest = frozenset(term.variables) - {v}
                contained = not rest or any(rest <= e for e in earlier)
                coding[v] = "contrasts" if contained else "indicators"
        earlier.append(frozenset(term.variables))
        codings.append(coding)
    if not terms.intercept:
        for coding, term in zip(codings, terms.terms, strict=True):
            first = next((v for v in term.variables if v in coding), None)
            if first is not None:
                coding[first] = "indicators"
                break
    return codings


def _blocks(value: Value, label: str, coding: str | None, source: str) -> tuple[list[np.ndarray], list[str]]:
    if isinstance(value, Numeric):
        return [value.values[:, j] for j in range(value.values.shape[1])], [label + s for s in value.suffixes]
    levels = value.levels
    if coding == "contrasts" and len(levels) < 2:
        raise DataError(
            f"The factor {label} has only one level ({levels[0] if levels else 'none'}) in the data used.",
            given=source,
            fix="A factor needs at least two levels to have an effect: drop the term, or check which rows were "
            "dropped for missing values.",
        )
    keep = range(1, len(levels)) if coding == "contrasts" else range(len(levels))
    cols = [(value.codes == k).astype(float) for k in keep]
    return cols, [label + levels[k] for k in keep]


def model_matrix(
    terms: TermList, values: Mapping[Expr, Value], n: int, source: str = ""
) -> tuple[np.ndarray, tuple[str, ...], tuple[int, ...]]:
    """Build the model matrix of ``terms``.

    Parameters
    ----------
    terms
        Ordered terms (from :mod:`hierlmm.formula.terms`).
    values
        Every variable of ``terms``, evaluated on the rows of the design.
    n
        Number of rows.
    source
        Formula text for error messages.

    Returns
    -------
    matrix, names, assign
        ``assign[j]`` is the term of column ``j`` (0 for the intercept, 1.. for ``terms.terms``), as R's.
    """
    columns: list[np.ndarray] = []
    names: list[str] = []
    assign: list[int] = []
    if terms.intercept:
        columns.append(np.ones(n))
        names.append("(Intercept)")
        assign.append(0)
    for t, (term, coding) in enumerate(zip(terms.terms, factor_codings(terms, values), strict=True), start=1):
        per_var = [_blocks(values[v], deparse(v), coding.get(v), source) for v in term.variables]
        # R's order: the first variable varies fastest.
        for combo in product(*(range(len(cols)) for cols, _ in reversed(per_var))):
            idx = combo[::-1]
            col = np.ones(n)
            label = []
            for (cols, labels), k in zip(per_var, idx, strict=True):
                col = col * cols[k]
                label.append(labels[k])
            columns.append(col)
            names.append(":".join(label))
            assign.append(t)
    matrix = np.column_stack(columns) if columns else np.zeros((n, 0))
    return matrix, tuple(names), tuple(assign)


def check_full_rank(matrix: np.ndarray, names: tuple[str, ...], what: str, source: str) -> None:
    """Raise a :class:`DataError` naming the aliased columns when ``matrix`` is rank deficient."""
    if matrix.shape[1] == 0:
        return
    _, r, _ = _qr_pivot(matrix)
    diag = np.abs(np.diag(r))
    tol = diag.max() * max(matrix.shape) * np.finfo(float).eps * 1e3 if diag.size else 0.0
    rank = int((diag > tol).sum())
    if rank < matrix.shape[1]:
        aliased = _aliased(matrix, names, tol)
        raise DataError(
            f"The {what} design matrix is rank deficient ({rank} of {matrix.shape[1]} columns are independent): "
            f"{', '.join(aliased)} {'is' if len(aliased) == 1 else 'are'} a linear combination of earlier columns.",
            given=source,
            fix="Drop or recode the aliased terms (e.g. a covariate that is constant, or a factor level that never "
            "occurs with another factor's level).",
        )


def _qr_pivot(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:

    return scipy.linalg.qr(matrix, mode="economic", pivoting=True)


def _aliased(matrix: np.ndarray, names: tuple[str, ...], tol: float) -> list[str]:
    out: list[str] = []
    kept: list[int] = []
    for j in range(matrix.shape[1]):
        trial = matrix[:, [*kept, j]]
        s = np.linalg.svd(trial, compute_uv=False)
        if trial.shape[1] > trial.shape[0] or s[-1] <= max(tol, s[0] * 1e-10):  # more columns than rows: aliased
            out.append(names[j])
        else:
            kept.append(j)
    return out
