"""Bayes against ML: one table of REML estimates next to posterior summaries, and the shrinkage of b_i.

Notation
--------
For every parameter: the REML (or ML) estimate and, for fixed effects, its standard error, next to the posterior
mean, sd and equal-tailed interval. For random effects: the empirical-Bayes ``b_i`` (the posterior mean of
``p(b_i | y_i; theta_hat)`` with ``theta`` fixed at its estimate) next to the full posterior mean of ``b_i``
(``theta`` integrated out).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.hierarchical_model import cor_label, sd_label
from hierlmm.engines.reml.ml_fit import MLFit
from hierlmm.errors import SpecError
from hierlmm.structures.random_effects import correlated_pairs, sd_corr


def ml_parameters(fit: MLFit) -> pd.DataFrame:
    """REML/ML estimates in the Bayesian parameter names (``beta[...]``, ``sd[...]``, ``cor[...]``, ``sigma``, and a
    correlated fit's ``range``/``phi``/``rho``/``nugget`` and variance-function parameters)."""
    rows = {}
    table = fit.fixef()
    for name, row in table.iterrows():
        rows[f"beta[{name}]"] = (row["Value"], row["Std.Error"])
    for block, D in zip(fit.design.blocks, fit.D, strict=True):
        sd, corr = sd_corr(D)
        for j, name in enumerate(block.effect_names):
            rows[sd_label(block.factor, name)] = (sd[j], np.nan)
        for j, k in correlated_pairs(block):
            rows[cor_label(block.factor, block.effect_names[k], block.effect_names[j])] = (corr[j, k], np.nan)
    rows["sigma"] = (fit.sigma, np.nan)
    # a fit with correlated or heteroscedastic errors (engines.reml.correlated_fit): nlme's parameters under the
    # names of engines.bayes.correlated_fit's summaries
    rows.update({k: (v, np.nan) for k, v in getattr(fit, "correlation_parameters", {}).items()})
    variance = getattr(fit, "variance", None)
    if variance is not None:
        rows.update({k: (v, np.nan) for k, v in zip(variance.labels, variance.natural(fit.omega), strict=True)})
    return pd.DataFrame.from_dict(rows, orient="index", columns=["estimate", "se"])


def compare(bayes: BayesFit, ml: MLFit, ci_prob: float = 0.95) -> pd.DataFrame:
    """Each parameter's ML/REML estimate (and SE) beside its posterior mean, sd and interval.

    The column ``z`` is ``(posterior mean - estimate) / posterior sd``: how far apart the two are, in posterior SDs.
    """
    if bayes.design.fixef_names != ml.design.fixef_names:
        raise SpecError("The two fits are of different models.", given=(bayes.design.spec.formula,
                        ml.design.spec.formula), fix="Fit the same specification both ways.")
    post = bayes.summary(ci_prob)
    est = ml_parameters(ml).reindex(post.index)
    out = pd.DataFrame({
        f"{ml.method}": est["estimate"], f"{ml.method} SE": est["se"], "posterior mean": post["mean"],
        "posterior sd": post["sd"], "lower": post["lower"], "upper": post["upper"], "r_hat": post["r_hat"],
    })
    out["z"] = (out["posterior mean"] - out[ml.method]) / out["posterior sd"]
    return out


def compare_ranef(bayes: BayesFit, ml: MLFit) -> dict[str, pd.DataFrame]:
    """Per grouping factor: empirical-Bayes ``b_i`` (ML/REML) beside the posterior mean of ``b_i``."""
    out = {}
    post = bayes.ranef()
    for factor, effects in ml.ranef().items():
        frames = {}
        for name in effects.mean.columns:
            frames[(name, "empirical Bayes")] = effects.mean[name]
            frames[(name, "posterior mean")] = post[factor][(name, "mean")]
        out[factor] = pd.DataFrame(frames)
    return out
