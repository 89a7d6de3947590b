"""Posterior answers to the chapter's model-building questions: contrasts of the fixed effects, and whether a
random-effect variance is near zero, with its prior beside it.

- :func:`contrast`: the posterior of ``L beta`` per hypothesis (row of ``L``), its interval and the posterior
  probability of its sign; for an ML/REML fit the estimate, SE and Wald interval, without probabilities.
- :func:`variance_components`: per random-effect SD (the marginal model: per variance, which may be negative) the
  posterior, the posterior probability that it is negligibly small, and the same summaries under the fit's prior,
  so that one sees whether the data moved it away from zero.

Notation
--------
``beta^(s)`` the posterior draws of the fixed effects (``S`` draws), ``L`` a ``k x p`` matrix, one hypothesis per
row; ``theta_h^(s) = L_h beta^(s)``. ``P(theta_h > 0)`` is the share of draws above zero. For an ML/REML fit
``theta_h = L_h beta_hat`` with ``SE_h = sqrt(L_h cov(beta_hat) L_h')``.

A random-effect SD ``sd_kj`` (block ``k``, effect ``j``) is *near zero* when the variation it adds to ``y`` is a
small fraction of the residual SD: ``sd_kj r_kj < c sigma``, ``r_kj`` the root mean square of column ``j`` of
block ``k``'s ``Z`` (1 for an intercept; for a slope on time, the time's RMS), ``c = near_zero`` (0.1 by default)
and ``sigma`` the posterior mean of the residual SD (with a variance function: the SD where its covariates are at
their means, ``sigma_centred``). So the threshold is ``t_kj = c sigma / r_kj`` in the units of ``sd_kj``. The marginal
model's variances ``D_jj`` may be negative; there the variance is near zero when ``|D_jj| < t_j^2``, and ``P(< 0)``
is reported beside it (a variance clearly below zero is not near zero: it is the marginal model's negative
within-subject correlation).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import scipy.stats

from hierlmm.engines.bayes.bayes_fit import summarise_draws
from hierlmm.engines.bayes.hierarchical_model import sd_label
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.bayes.posterior_tree import block_factors, packed_to_chol
from hierlmm.engines.fit_result import check_ci_prob
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference.hypotheses import contrast_matrix
from hierlmm.structures.random_effects import pieces

NEAR_ZERO = 0.1  # default c: an effect whose variation in y is below 10% of sigma's is negligible


def contrast(fit: Any, L: Any, *, ci_prob: float = 0.95) -> pd.DataFrame:
    """The posterior of linear combinations ``L beta`` of the fixed effects, one row per hypothesis.

    Parameters
    ----------
    fit
        A Bayesian fit of any kind (:func:`hierlmm.fit_bayes`), or an ML/REML fit (see Returns).
    L
        The hypotheses: a DataFrame (index: names, columns: fixed-effect names, absent ones weigh 0), a mapping
        ``{name: {coefficient: weight}}``, or an array with one column per fixed effect in the fit's order
        (``fit.design.fixef_names``; rows named by their combination, e.g. ``"t - x"``).
    ci_prob
        Probability of the equal-tailed interval.

    Returns
    -------
    pandas.DataFrame
        Bayesian fit: ``mean``, ``sd``, ``lower``, ``upper`` (equal-tailed), ``P(> 0)``, ``P(< 0)``, ``r_hat``,
        ``ess_bulk``, ``ess_tail``, ``mcse_mean`` (ArviZ's). ML/REML fit: ``estimate``, ``SE``, ``lower``,
        ``upper`` (Wald interval with normal quantiles, as lme4's ``confint(method = "Wald")``) and no
        probabilities: a frequentist fit has no posterior, and a one-sided p-value is not ``P(L beta < 0)``. The
        F or t test of the same ``L`` with denominator degrees of freedom is :func:`hierlmm.anova` (``L=``).
        ``attrs["method"]`` says which. :func:`contrast_matrix` gives ``L`` as the array it was read as.

    Notation
    --------
    ``theta_h^(s) = L_h beta^(s)`` per draw; ``P(> 0)`` the share of draws with ``theta_h^(s) > 0``. ML/REML:
    ``L_h beta_hat +- z_{(1 + ci_prob) / 2} sqrt(L_h cov(beta_hat) L_h')``.
    """
    check_ci_prob(ci_prob)
    if not isinstance(fit, PosteriorResult | REMLResult):
        raise DataError("contrast needs a fit from hierlmm.fit_bayes, hierlmm.fit or hierlmm.fit_ml.",
                        given=type(fit).__name__, fix="Pass a fitted model.")
    names = tuple(fit.design.fixef_names)
    Lmat, labels = contrast_matrix(L, names)
    index = pd.Index(labels, name="hypothesis")
    if isinstance(fit, REMLResult):
        estimate = Lmat @ np.asarray(fit.beta)
        se = np.sqrt(np.einsum("hp,pq,hq->h", Lmat, np.asarray(fit.cov_beta), Lmat))
        z = scipy.stats.norm.ppf((1 + ci_prob) / 2)
        table = pd.DataFrame({"estimate": estimate, "SE": se, "lower": estimate - z * se, "upper": estimate + z * se},
                             index=index)
        table.attrs["method"] = (f"{fit.method} estimate with a Wald interval (normal quantiles); no posterior "
                                 "probabilities (not a Bayesian fit)")
        return table
    beta = fit.tree["posterior"]["beta"].values  # (chain, draw, p)
    theta = beta @ Lmat.T  # (chain, draw, k)
    table = summarise_draws({label: theta[..., h] for h, label in enumerate(labels)}, ci_prob)
    table.insert(4, "P(> 0)", (theta > 0).mean(axis=(0, 1)))
    table.insert(5, "P(< 0)", (theta < 0).mean(axis=(0, 1)))
    table.index = index
    table.attrs["method"] = "posterior of L beta (equal-tailed interval)"
    return table


def _rms(Z: np.ndarray) -> np.ndarray:
    """Root mean square of every column of Z (1 where a column is all zero)."""
    r = np.sqrt(np.mean(np.asarray(Z) ** 2, axis=0))
    return np.where(r > 0, r, 1.0)


def _residual_scale(fit: PosteriorResult) -> float:
    """The posterior mean of sigma (with a variance function, ``sigma_centred``: the module notation)."""
    post = fit.tree["posterior"]
    name = "sigma_centred" if "sigma_centred" in post else "sigma"
    return float(post[name].values.mean())


def _prior_draws(model: Any, var_names: list[str], draws: int, seed: int) -> Any:
    """Draws of ``var_names`` from the PyMC model's prior (its likelihood, a Potential or an observed y, unused)."""
    log = logging.getLogger("pymc")
    level = log.level
    log.setLevel(logging.ERROR)  # PyMC logs "Sampling: [...]" at INFO
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Potentials.*")
            warnings.filterwarnings("ignore", message=".*BLAS.*")
            tree = pm.sample_prior_predictive(draws=draws, model=model, var_names=var_names, random_seed=seed)
    finally:
        log.setLevel(level)
    return tree["prior"].to_dataset()


def _hierarchical_components(fit: Any, draws: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(label, posterior draws (chain, draw), prior draws (n,), r) per random-effect SD of a hierarchical fit."""
    bm = fit.bayes_model
    wanted = [f"{kind}_{block.factor}{piece.suffix}" for block in fit.design.blocks for piece in pieces(block)
              for kind in ("chol", "sd", "s", "rho")]
    prior = _prior_draws(bm.model, [n for n in wanted if n in bm.model.named_vars], draws, seed)
    posterior = fit.parameter_draws()
    out = []
    for block, Lk in zip(fit.design.blocks, block_factors(bm, prior), strict=True):
        sd = np.sqrt(np.diagonal(Lk @ np.swapaxes(Lk, -1, -2), axis1=-2, axis2=-1)).reshape(-1, block.q)
        for j, (effect, r) in enumerate(zip(block.effect_names, _rms(block.Z), strict=True)):
            label = sd_label(block.factor, effect)
            out.append((label, posterior[label], sd[:, j], float(r)))
    return out


def _marginal_components(fit: Any, draws: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(label, posterior draws, prior draws, r) per variance ``D_jj`` of a marginal-model fit: ``D = (P - kappa I)
    sigma^2`` (:mod:`hierlmm.engines.bayes.marginal_model`)."""
    bm = fit.bayes_model
    block = fit.design.blocks[0]
    name = "lambda" if block.q == 1 else "chol_P"
    prior = _prior_draws(bm.model, ["sigma", name], draws, seed)
    if block.q == 1:
        P = (prior["lambda"].values ** 2)[..., None, None]
    else:
        Lp = packed_to_chol(prior["chol_P"].values, block.q)
        P = Lp @ np.swapaxes(Lp, -1, -2)
    D_prior = (P - bm.kappa * np.eye(block.q)) * (prior["sigma"].values ** 2)[..., None, None]
    D_prior = D_prior.reshape(-1, block.q, block.q)
    D_post = fit.tree["posterior"]["D"].values
    return [(f"D[{block.factor}:{e},{e}]", D_post[..., j, j], D_prior[:, j, j], float(r))
            for j, (e, r) in enumerate(zip(block.effect_names, _rms(block.Z), strict=True))]


def variance_components(fit: Any, *, ci_prob: float = 0.95, near_zero: float = NEAR_ZERO, prior_draws: int = 4000,
                        seed: int = 1) -> pd.DataFrame:
    """Each random-effect SD (the marginal model: each variance) near zero or not: posterior and prior side by side.

    Parameters
    ----------
    fit
        A Bayesian fit of any kind (:func:`hierlmm.fit_bayes`).
    ci_prob
        Probability of the equal-tailed intervals.
    near_zero
        ``c`` of the module notation: an SD is near zero when the variation it adds to ``y`` is below ``c`` times
        the residual SD (default 0.1, i.e. a variance below 1% of sigma^2). A mapping ``{row label: threshold}``
        sets thresholds in the SD's own units instead (the marginal model: in the variance's), e.g.
        ``{"sd[id:t]": 0.05}``.
    prior_draws, seed
        Draws from the fit's own prior (its PyMC model, likelihood left out) and their seed.

    Returns
    -------
    pandas.DataFrame
        One row per random-effect SD (``sd[factor:effect]``) or, for the marginal model, per variance
        (``D[factor:effect,effect]``), with ``quantity`` (``"sd"`` or ``"variance"``), the posterior ``mean``,
        ``sd``, ``median``, ``lower``, ``upper``, ``r_hat``, ``ess_bulk``; the ``threshold``; ``P(near zero)``
        (posterior probability of being below it; a variance: of ``|D_jj|`` being below it) and ``P(< 0)`` (0 for an
        SD); and the same under the prior:
        ``prior median``, ``prior lower``, ``prior upper``, ``prior P(near zero)``, ``prior P(< 0)``. A posterior
        ``P(near zero)`` far below the prior's means the data moved the component away from zero; about equal
        means they say little about it.

    Raises
    ------
    NotSupportedError
        For an ML/REML fit (its ``varcorr()`` has the estimates; test a variance component with
        :func:`hierlmm.lrt`).

    Notation
    --------
    Threshold ``t_kj = c sigma / r_kj`` for ``sd_kj`` (``t_j^2`` for the marginal model's ``D_jj``), ``sigma`` the
    posterior mean of the residual SD and ``r_kj`` the RMS of ``Z``'s column (see the module notation).
    ``P(near zero) = P(sd_kj < t_kj | y)`` (the marginal model: ``P(|D_jj| < t_j^2 | y)``); the prior's is the same
    probability under the prior, with the same threshold.
    """
    check_ci_prob(ci_prob)
    if isinstance(fit, REMLResult):
        raise NotSupportedError(
            "variance_components gives posterior probabilities and the prior beside them; an ML/REML fit has "
            "neither.", given=f"a {type(fit).__name__} ({fit.method})",
            fix="Read the estimates from fit.varcorr(), and test a variance component with hierlmm.lrt(fit0, fit1, "
                "null='mixture') (the null lies on the boundary); or fit with hierlmm.fit_bayes.")
    if not isinstance(fit, PosteriorResult):
        raise DataError("variance_components needs a fit from hierlmm.fit_bayes.", given=type(fit).__name__,
                        fix="Pass the result of hierlmm.fit_bayes(design, ...).")
    if not (isinstance(prior_draws, int | np.integer) and prior_draws >= 100):
        raise SpecError("prior_draws must be an integer of at least 100.", given=prior_draws,
                        fix="Use e.g. prior_draws=4000.")
    for value in (near_zero.values() if isinstance(near_zero, Mapping) else [near_zero]):  # before the prior draws
        _positive(value, "near_zero")
    marginal = fit.kind == "marginal"
    components = (_marginal_components if marginal else _hierarchical_components)(fit, prior_draws, seed)
    labels = [c[0] for c in components]
    thresholds = _thresholds(components, near_zero, _residual_scale(fit), marginal)
    post = summarise_draws({label: draws for label, draws, _, _ in components}, ci_prob)
    lo, hi = (1 - ci_prob) / 2, (1 + ci_prob) / 2
    rows = {}
    for (label, draws, prior, _), t in zip(components, thresholds, strict=True):
        draws = np.asarray(draws).ravel()
        rows[label] = {
            "quantity": "variance" if marginal else "sd",
            "mean": post.loc[label, "mean"], "sd": post.loc[label, "sd"], "median": float(np.median(draws)),
            "lower": post.loc[label, "lower"], "upper": post.loc[label, "upper"],
            "r_hat": post.loc[label, "r_hat"], "ess_bulk": post.loc[label, "ess_bulk"],
            "threshold": t, "P(near zero)": float(np.mean(np.abs(draws) < t)), "P(< 0)": float(np.mean(draws < 0)),
            "prior median": float(np.median(prior)), "prior lower": float(np.quantile(prior, lo)),
            "prior upper": float(np.quantile(prior, hi)), "prior P(near zero)": float(np.mean(np.abs(prior) < t)),
            "prior P(< 0)": float(np.mean(prior < 0)),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.Index(labels, name="component")
    table.attrs.update(near_zero=near_zero, prior_draws=prior_draws)
    return table


def _thresholds(components: list[tuple[str, Any, Any, float]], near_zero: Any, sigma: float,
                marginal: bool) -> list[float]:
    """Every component's threshold (module notation), or the user's per label."""
    labels = [c[0] for c in components]
    if isinstance(near_zero, Mapping):
        unknown = sorted(set(near_zero) - set(labels))
        if unknown:
            raise SpecError(f"No variance component {unknown} in this fit.", given=unknown, fix=f"Use {labels}.")
        values = {k: _positive(v, f"near_zero[{k}]") for k, v in near_zero.items()}
        c = NEAR_ZERO
    else:
        values, c = {}, _positive(near_zero, "near_zero")
    out = []
    for label, _, _, r in components:
        default = c * sigma / r
        out.append(values.get(label, default**2 if marginal else default))
    return out


def _positive(value: Any, name: str) -> float:
    """``value`` as a positive float; a SpecError otherwise."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0] if np.ndim(value) == 0 else np.nan
    if not number > 0:
        raise SpecError(f"{name} must be a positive number.", given=value, fix="Use e.g. near_zero=0.1.")
    return float(number)
