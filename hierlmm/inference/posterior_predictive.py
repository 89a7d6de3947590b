"""Posterior (and prior) predictions of a Bayesian fit: mean trajectories with credible bands, draws of y.

Notation
--------
For rows with fixed-effects covariates ``x`` and random-effects covariates ``z`` of subject ``i``, every posterior
draw ``s`` gives

- the population mean ``x' beta^(s)`` (level 0),
- the subject-specific mean ``x' beta^(s) + z' b_i^(s)`` (level 1; a subject not in the fit gets a fresh
  ``b ~ N(0, D^(s))``, so its band includes the between-subject variation),
- a posterior predictive draw ``y^(s) = mean^(s) + sigma^(s) e``, ``e ~ N(0, 1)``; with heteroscedastic errors
  (``weights=``) ``y^(s) = mean^(s) + sigma^(s) s_r^(s) e``, ``s_r`` the row's SD ratio.

Bands are pointwise equal-tailed intervals over the draws. The replicate of the observed data
(:func:`add_posterior_predictive`) draws each subject's errors jointly: ``e_i ~ N(0, sigma^2 S_i R_i S_i)`` with
serially correlated and/or heteroscedastic errors (:mod:`hierlmm.inference.error_covariance`), ``N(0, sigma^2 I)``
otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierlmm.design.design import grouping_labels, new_model_matrices
from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.hierarchical_model import build_bayes_model, var_name
from hierlmm.engines.bayes.posterior_tree import block_factors
from hierlmm.errors import DataError
from hierlmm.inference.error_covariance import has_error_structure, predictive_errors, sd_ratio_draws


def _flat(fit: BayesFit, name: str) -> np.ndarray:
    values = fit.tree["posterior"][name].values
    return values.reshape(-1, *values.shape[2:])


def mean_draws(fit: BayesFit, newdata: pd.DataFrame, level: int = 0, seed: int = 1) -> np.ndarray:
    """Draws (S, n) of the mean response for ``newdata`` at ``level`` 0 (population) or 1 (subject)."""
    if level not in (0, 1):
        raise DataError("level must be 0 (population) or 1 (subject).", given=level, fix="Use level=0 or level=1.")
    X, Zs = new_model_matrices(fit.design, newdata)  # noqa: N806
    beta = _flat(fit, "beta")
    mu = beta @ X.T
    if level == 0:
        return mu
    rng = np.random.default_rng(seed)
    post = fit.tree["posterior"].to_dataset()
    factors = [f.reshape(-1, *f.shape[2:]) for f in block_factors(fit.bayes_model, post)]
    for block, Z, L in zip(fit.design.blocks, Zs, factors, strict=True):  # noqa: N806
        missing = [c for c in block.grouping if c not in newdata.columns]
        if missing:
            raise DataError(f"Level-1 predictions need the grouping column(s) {missing}.",
                            given=list(newdata.columns), fix="Add the subject identifiers, or use level=0.")
        labels = grouping_labels(newdata.reset_index(drop=True), block.grouping)
        index = {lv: k for k, lv in enumerate(block.levels)}
        b_all = _flat(fit, var_name("b", block.factor))  # (S, levels, q)
        for label in dict.fromkeys(labels):
            rows = np.array([k for k, lv in enumerate(labels) if lv == label])
            if label in index:
                b = b_all[:, index[label], :]
            else:  # a new subject: b ~ N(0, D) draw by draw
                b = np.einsum("sab,sb->sa", L, rng.standard_normal((L.shape[0], block.q)))
            mu[:, rows] += b @ Z[rows].T
    return mu


def trajectories(fit: BayesFit, newdata: pd.DataFrame, *, level: int = 0, ci_prob: float = 0.95,
                 predictive: bool = False, seed: int = 1) -> pd.DataFrame:
    """Posterior mean and pointwise credible band of the mean response (or, with ``predictive=True``, of new y).

    With ``predictive=True`` every draw adds an error of SD ``sigma`` (module notation); with a variance function
    (``weights=``) the SD is ``sigma s_r``, the function evaluated on the rows of ``newdata`` (its covariate and
    strata must be columns of ``newdata``). A serial correlation does not change these bands: they are pointwise,
    and a row's error variance is ``sigma^2 s_r^2`` whatever ``R`` (unit diagonal); it only matters jointly (see
    :func:`hierlmm.implied_covariance`).

    Returns ``newdata`` with columns ``mean``, ``lower``, ``upper`` added.
    """
    mu = mean_draws(fit, newdata, level, seed)
    if predictive:
        sd = _flat(fit, "sigma")[:, None]
        if has_error_structure(fit):
            sd = sd * sd_ratio_draws(fit, newdata)
        mu = mu + sd * np.random.default_rng(seed + 1).standard_normal(mu.shape)
    out = newdata.reset_index(drop=True).copy()
    out["mean"] = mu.mean(axis=0)
    out["lower"], out["upper"] = np.quantile(mu, [(1 - ci_prob) / 2, (1 + ci_prob) / 2], axis=0)
    return out


def add_posterior_predictive(fit: BayesFit, seed: int = 1) -> Any:
    """Add ``posterior_predictive/y`` (a replicate of the observed data per draw) to the fit's DataTree.

    Per draw, ``y = X beta + Z b + e`` with the drawn ``b`` and ``e ~ N(0, sigma^2 I)``; for a fit with serially
    correlated and/or heteroscedastic errors each subject's ``e_i ~ N(0, sigma^2 S_i R_i S_i)`` at that draw's
    parameters (:func:`hierlmm.inference.error_covariance.predictive_errors`).
    """
    design = fit.design
    post = fit.tree["posterior"]
    C, D = post.sizes["chain"], post.sizes["draw"]  # noqa: N806
    mu = _flat(fit, "beta") @ design.X.T
    for block in design.blocks:
        b = _flat(fit, var_name("b", block.factor))
        mu = mu + np.einsum("nq,snq->sn", block.Z, b[:, block.group_index, :])
    rng = np.random.default_rng(seed)
    if has_error_structure(fit):
        y = mu + predictive_errors(fit, rng)
    else:
        y = mu + _flat(fit, "sigma")[:, None] * rng.standard_normal(mu.shape)
    fit.tree["posterior_predictive"] = xr.DataTree(xr.Dataset({"y": xr.DataArray(
        y.reshape(C, D, -1), dims=("chain", "draw", "obs"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values})}))
    return fit.tree


def prior_predictive(fit_or_design: Any, *, draws: int = 500, priors: dict | None = None, seed: int = 1) -> Any:
    """Draws from the prior and the prior predictive distribution of y (to check the priors), as a DataTree."""
    import pymc as pm

    design = fit_or_design.design if isinstance(fit_or_design, BayesFit) else fit_or_design
    if isinstance(fit_or_design, BayesFit) and priors is None:
        priors = fit_or_design.bayes_model.priors
    model = build_bayes_model(design, priors=priors, sampler="joint").model
    return pm.sample_prior_predictive(draws=draws, model=model, random_seed=seed)
