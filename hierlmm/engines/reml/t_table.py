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


def nlme_fixed_df(design: Design) -> np.ndarray:
    """nlme's denominator degrees of freedom of every fixed-effects column (see the module notation)."""
    n = design.n_obs
    levels = sorted(design.blocks, key=lambda b: b.n_levels)  # nested levels: outermost has fewest groups
    group_sets = [np.zeros(n, dtype=np.int64)] + [b.group_index for b in levels] + [np.arange(n)]
    counts = [1] + [b.n_levels for b in levels] + [n]
    # stratum s (1..Q+1) has counts[s] - counts[s-1] df; stratum 1 has M_1 (counts[0] is the "0" level: use 0)
    strata_df = np.array([counts[1]] + [counts[s] - counts[s - 1] for s in range(2, len(counts))], dtype=float)
    is_intercept = np.all(design.X == 1.0, axis=0)
    stratum = np.zeros(design.p, dtype=np.int64)
    for j in np.flatnonzero(~is_intercept):
        s = 1
        for level in range(1, len(group_sets) - 1):
            if _varies_within(design.X[:, j], group_sets[level]):
                s = level + 1
        stratum[j] = s
    df = strata_df.copy()
    for s in stratum[~is_intercept]:
        df[s - 1] -= 1
    if is_intercept.any():
        df[0] -= 1
    out = np.where(is_intercept, df.max(), df[np.maximum(stratum, 1) - 1])
    return out


def t_tests(beta: np.ndarray, se: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """t statistics and two-sided p-values."""
    t = beta / se
    return t, 2.0 * scipy.stats.t.sf(np.abs(t), df)


def fixef_table(design: Design, beta: np.ndarray, cov_beta: np.ndarray, df: np.ndarray) -> pd.DataFrame:
    """nlme's fixed-effects table: Value, Std.Error, DF, t-value, p-value, indexed by R's column names."""
    se = np.sqrt(np.diag(cov_beta))
    t, p = t_tests(beta, se, df)
    return pd.DataFrame({"Value": beta, "Std.Error": se, "DF": np.asarray(df).astype(int), "t-value": t,
                         "p-value": p}, index=pd.Index(design.fixef_names, name="term"))
