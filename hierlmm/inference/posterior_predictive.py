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
import pymc as pm
import xarray as xr

from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.hierarchical_model import build_bayes_model, var_name
from hierlmm.engines.bayes.posterior_result import flat_draws, mean_draws
from hierlmm.inference.error_covariance import has_error_structure, predictive_errors, sd_ratio_draws


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
        sd = flat_draws(fit, "sigma")[:, None]
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
    C, D = post.sizes["chain"], post.sizes["draw"]
    mu = flat_draws(fit, "beta") @ design.X.T
    for block in design.blocks:
        b = flat_draws(fit, var_name("b", block.factor))
        mu = mu + np.einsum("nq,snq->sn", block.Z, b[:, block.group_index, :])
    rng = np.random.default_rng(seed)
    if has_error_structure(fit):
        y = mu + predictive_errors(fit, rng)
    else:
        y = mu + flat_draws(fit, "sigma")[:, None] * rng.standard_normal(mu.shape)
    fit.tree["posterior_predictive"] = xr.DataTree(xr.Dataset({"y": xr.DataArray(
        y.reshape(C, D, -1), dims=("chain", "draw", "obs"),
        coords={"chain": post["chain"].values, "draw": post["draw"].values})}))
    return fit.tree


def prior_predictive(fit_or_design: Any, *, draws: int = 500, priors: dict | None = None, seed: int = 1) -> Any:
    """Draws from the prior and the prior predictive distribution of y (to check the priors), as a DataTree."""

    design = fit_or_design.design if isinstance(fit_or_design, BayesFit) else fit_or_design
    if isinstance(fit_or_design, BayesFit) and priors is None:
        priors = fit_or_design.bayes_model.priors
    model = build_bayes_model(design, priors=priors, sampler="joint").model
    return pm.sample_prior_predictive(draws=draws, model=model, random_seed=seed)
