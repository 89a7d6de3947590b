"""Predictions from an ML/REML fit for new data: population means with confidence bands, subject trajectories.

Notation
--------
For a new row with fixed-effects covariates ``x`` and random-effects covariates ``z`` of subject ``i``:

- level 0 (population): ``x' beta``, standard error ``sqrt(x' Var(beta) x)``, pointwise interval
  ``x' beta +- z_{(1+level)/2} se`` (the chapter's effect plot);
- level 1 (subject): ``x' beta + z' b_i`` with the empirical-Bayes ``b_i``; a subject the model was not fitted on
  gets ``b_i = 0`` (its population mean), as lme4's ``allow.new.levels``.

New data are coded with the training design's factor levels and spline knots (:func:`hierlmm.new_model_matrices`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from hierlmm.design.design import grouping_labels, new_model_matrices
from hierlmm.engines.fit_result import check_level
from hierlmm.errors import DataError


def predict(fit: Any, newdata: pd.DataFrame, *, level: int = 0, interval: float | None = 0.95) -> pd.DataFrame:
    """Predict the mean response for ``newdata``.

    Parameters
    ----------
    fit
        An ML/REML fit.
    newdata
        Rows to predict; every column the model uses must be present (for ``level=1`` also the grouping columns).
    level
        0 for population means ``x' beta``, 1 to add each row's subject-specific random effects.
    interval
        Coverage of the pointwise confidence interval of the population mean (``None``: no interval). Only for
        ``level=0``: at level 1 the interval would need the prediction-error covariance of ``b_i`` too.

    Returns
    -------
    pandas.DataFrame
        ``fit`` (the prediction) and, for ``level=0``, ``se``, ``lower``, ``upper``; indexed like ``newdata``.
    """
    check_level(level)
    X, Zs = new_model_matrices(fit.design, newdata)
    mean = X @ fit.beta
    out = pd.DataFrame({"fit": mean}, index=newdata.index)
    if level == 0:
        se = np.sqrt(np.einsum("ij,jk,ik->i", X, fit.cov_beta, X))
        out["se"] = se
        if interval is not None:
            z = scipy.stats.norm.ppf(0.5 + interval / 2)
            out["lower"], out["upper"] = mean - z * se, mean + z * se
        return out
    ranef = fit.ranef()
    for block, Z in zip(fit.design.blocks, Zs, strict=True):
        missing = [c for c in block.grouping if c not in newdata.columns]
        if missing:
            raise DataError(
                f"Level-1 predictions need the grouping column(s) {missing} in the new data.",
                given=list(newdata.columns),
                fix="Add the subject identifiers, or predict at level=0.",
            )
        labels = grouping_labels(newdata.reset_index(drop=True), block.grouping)
        b = ranef[block.factor].mean.reindex(labels).fillna(0.0).to_numpy()  # new levels: b = 0
        out["fit"] = out["fit"].to_numpy() + np.einsum("nq,nq->n", Z, b)
    return out
