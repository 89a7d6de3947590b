"""Posterior (and prior) predictive draws of a Bayesian fit: replicates of the observed data, prior predictive draws.

Predictions for new rows (means and new outcomes, with intervals, for any fit) are
:mod:`hierlmm.inference.prediction`'s.

Notation
--------
The replicate of the observed data (:func:`add_posterior_predictive`) is, per posterior draw ``s``,
``y^(s) = X beta^(s) + Z b^(s) + e^(s)``; it draws each subject's errors jointly, ``e_i ~ N(0, sigma^2 S_i R_i S_i)``
with serially correlated and/or heteroscedastic errors (:mod:`hierlmm.inference.error_covariance`), ``N(0, sigma^2 I)``
otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pymc as pm
import xarray as xr

from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.hierarchical_model import build_bayes_model, var_name
from hierlmm.engines.bayes.posterior_result import flat_draws
from hierlmm.inference.error_covariance import has_error_structure, predictive_errors


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
