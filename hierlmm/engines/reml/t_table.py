"""The fixed-effects t-table every ML/REML result prints, as nlme reports it: denominator degrees of freedom, t-tests.

Notation
--------
nlme's rule (``nlme:::getFixDF``): with grouping levels ``1..Q`` (outermost first) and ``M_1 <= ... <= M_Q``
groups, the strata are the levels plus the residual level ``Q+1`` (every row its own group). A column of ``X`` is
estimated in the innermost stratum ``s`` such that it varies within at least one group of level ``s - 1`` (level 0
= all the data). Stratum ``s`` has ``M_s - M_{s-1}`` degrees of freedom (``M_{Q+1} = N``, ``M_0 = 0``), less the
number of columns estimated in it, less 1 in stratum 1 for the intercept; the intercept gets the largest of them.
With one grouping factor: ``df_within = N - M - p_within``, ``df_between = M - p_between - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.stats

from hierlmm.design.design import Design


def _varies_within(column: np.ndarray, groups: np.ndarray) -> bool:
    order = np.argsort(groups, kind="stable")
    g, c = groups[order], column[order]
    lo = np.minimum.reduceat(c, np.flatnonzero(np.r_[True, g[1:] != g[:-1]]))
    hi = np.maximum.reduceat(c, np.flatnonzero(np.r_[True, g[1:] != g[:-1]]))
    return bool(np.any(hi - lo > 1e-12 * max(1.0, float(np.max(np.abs(c))))))


def _is_constant(column: np.ndarray) -> bool:
    """nlme's ``const``: every value equal to the first (relative tolerance sqrt(eps)); an intercept-like column."""
    first = column[0]
    scaled = column if first == 0 else column / first - 1
    return bool(np.all(np.abs(scaled) < np.sqrt(np.finfo(float).eps)))


def _strata(design: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: whether it is intercept-like, its stratum (1..Q+1); and the strata's sizes ``M_s - M_{s-1}``."""
    n = design.n_obs
    levels = sorted(design.blocks, key=lambda b: b.n_levels)  # nested levels: outermost has fewest groups
    group_sets = [np.zeros(n, dtype=np.int64)] + [b.group_index for b in levels] + [np.arange(n)]
    counts = [1] + [b.n_levels for b in levels] + [n]
    # stratum s (1..Q+1) has counts[s] - counts[s-1] df; stratum 1 has M_1 (counts[0] is the "0" level: use 0)
    sizes = np.array([counts[1]] + [counts[s] - counts[s - 1] for s in range(2, len(counts))], dtype=float)
    constant = np.array([_is_constant(design.X[:, j]) for j in range(design.p)], dtype=bool)
    stratum = np.ones(design.p, dtype=np.int64)
    for j in np.flatnonzero(~constant):
        for level in range(1, len(group_sets) - 1):
            if _varies_within(design.X[:, j], group_sets[level]):
                stratum[j] = level + 1
    return constant, stratum, sizes


def _stratum_df(sizes: np.ndarray, used: np.ndarray, has_constant: bool) -> np.ndarray:
    """nlme's strata degrees of freedom: sizes less the columns each estimates, less 1 in the first for the
    intercept (or, without an intercept-like column, plus 1 in every other stratum: nlme's rule, kept as it is)."""
    df = sizes - used
    if has_constant:
        df[0] -= 1
    else:
        df[1:] += 1
    return df


def nlme_fixed_df(design: Design) -> np.ndarray:
    """nlme's denominator degrees of freedom of every fixed-effects column (see the module notation)."""
    constant, stratum, sizes = _strata(design)
    used = np.bincount(stratum[~constant] - 1, minlength=sizes.size).astype(float)
    df = _stratum_df(sizes, used, bool(constant.any()))
    return np.where(constant, df.max(), df[stratum - 1])


def nlme_term_df(design: Design) -> dict[int, float]:
    """nlme's denominator degrees of freedom of every term (``fixDF$terms``), keyed by the design's ``assign`` value.

    A term is estimated in the innermost stratum of its columns; each stratum loses as many degrees of freedom as the
    terms estimated in it have columns; intercept-like terms get the largest.
    """
    constant, stratum, sizes = _strata(design)
    assign = np.asarray(design.assign)
    terms = list(dict.fromkeys(assign.tolist()))
    constant_term = {t: bool(np.all(constant[assign == t])) for t in terms}
    term_stratum = {t: int(np.max(stratum[(assign == t) & ~constant])) for t in terms if not constant_term[t]}
    used = np.zeros(sizes.size)
    for t, s in term_stratum.items():
        used[s - 1] += np.sum(assign == t)
    df = _stratum_df(sizes, used, any(constant_term.values()))
    return {t: float(df.max() if constant_term[t] else df[term_stratum[t] - 1]) for t in terms}


def t_tests(beta: np.ndarray, se: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t statistics and two-sided p-values."""
    t = beta / se
    return t, 2.0 * scipy.stats.t.sf(np.abs(t), df)


def fixef_table(design: Design, beta: np.ndarray, cov_beta: np.ndarray, df: Sequence[float]) -> pd.DataFrame:
    """nlme's fixed-effects table: Value, Std.Error, DF, t-value, p-value, indexed by R's column names (integer DF
    when every DF is a whole number, as nlme's rule gives)."""
    se = np.sqrt(np.diag(cov_beta))
    df = np.asarray(df, dtype=float)
    t, p = t_tests(beta, se, df)
    whole = bool(np.all(df == np.round(df)))
    return pd.DataFrame({"Value": beta, "Std.Error": se, "DF": df.astype(int) if whole else df, "t-value": t,
                         "p-value": p}, index=pd.Index(design.fixef_names, name="term"))
