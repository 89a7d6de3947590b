"""The front door: the short path through the pipeline, ``spec -> design -> fit``, in one call per engine.

:func:`fit` chooses the ML/REML engine for a model (nested, crossed, serially correlated or heteroscedastic errors,
the marginal model), :func:`fit_bayes` the Bayesian one, and :func:`predict` reads any fit. Every stage stays public
(:class:`hierlmm.spec.model_spec.ModelSpec`, :func:`hierlmm.design.design.build_design`,
:func:`hierlmm.engines.reml.profiled_likelihood.profiled_deviance`, :func:`hierlmm.engines.reml.ml_fit.fit_ml`), so a
user can stop at any step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from hierlmm.design.design import Design, build_design, check_response_varies
from hierlmm.design.sufficient_stats import is_crossed
from hierlmm.engines.bayes.bayes_fit import BayesFit, fit_bayes_hierarchical
from hierlmm.engines.bayes.correlated_fit import fit_bayes_correlated
from hierlmm.engines.bayes.marginal_model import MarginalBayesFit, fit_bayes_marginal
from hierlmm.engines.bayes.sampling import SamplerOptions
from hierlmm.engines.fit_result import BayesResult
from hierlmm.engines.reml.correlated_fit import CorrelatedFit, fit_correlated
from hierlmm.engines.reml.crossed_fit import CrossedFit, fit_crossed
from hierlmm.engines.reml.marginal_model import MarginalFit, fit_marginal
from hierlmm.engines.reml.ml_fit import MLFit, fit_ml
from hierlmm.errors import NotSupportedError, SpecError
from hierlmm.inference.likelihood_ratio import ComparisonTable
from hierlmm.inference.likelihood_ratio import compare_models as compare_ml_models
from hierlmm.inference.loo import compare_bayes
from hierlmm.inference.prediction import Prediction, predict  # noqa: F401  (the front door: hierlmm.predict)
from hierlmm.spec.model_spec import ModelSpec, PdMat, model_spec
from hierlmm.structures.variance_functions import VarianceFunction


def fit(
    model: ModelSpec | str,
    data: pd.DataFrame,
    *,
    random: str | PdMat | Mapping[str, str | PdMat] | None = None,
    method: str | None = None,
    kind: str = "hierarchical",
    correlation: str | None = None,
    weights: str | VarianceFunction | None = None,
) -> MLFit | MarginalFit | CorrelatedFit | CrossedFit:
    """Fit a linear mixed model by REML (default) or ML.

    Parameters
    ----------
    model
        A :class:`ModelSpec`, an lme4-style formula (``"CD4 ~ obstime + (obstime | patient)"``), or nlme's fixed
        formula when ``random`` is given.
    data
        The data.
    random
        nlme-style random part (``"~ obstime | patient"`` or ``{"patient": pdDiag("~ obstime")}``).
    method
        ``"REML"`` or ``"ML"``.
    kind
        ``"hierarchical"`` (default: ``D`` is a covariance matrix) or ``"marginal"``: the implied marginal model,
        where ``D`` may be indefinite as long as every ``V_i`` is positive definite
        (:func:`hierlmm.engines.reml.marginal_model.fit_marginal`).
    correlation
        Serially correlated errors in nlme's syntax, e.g. ``"corExp(form = ~ obstime | patient)"``
        (:func:`hierlmm.engines.reml.correlated_fit.fit_correlated`).
    weights
        A variance function (heteroscedastic errors) in nlme's syntax, e.g. ``"varIdent(form = ~ 1 | drug)"``, or
        ``hierlmm.varPower("~ x")`` (:mod:`hierlmm.structures.variance_functions`); with or without ``correlation``.

    Examples
    --------
    >>> import hierlmm
    >>> pbc2 = hierlmm.datasets.load("pbc2")
    >>> fit = hierlmm.fit("log(serBilir) ~ year + sex + (year | id)", pbc2)
    >>> round(fit.loglik, 1)
    -1531.6
    """
    spec = model if isinstance(model, ModelSpec) else model_spec(model, random=random)
    t0 = time.perf_counter()
    result = fit_design(build_design(spec, data), data, method=method, kind=kind, correlation=correlation,
                        weights=weights)
    if isinstance(result, MLFit):  # the fit's seconds count building the design too
        return dataclasses.replace(result, seconds=time.perf_counter() - t0)
    return result


def fit_design(
    design: Design,
    data: pd.DataFrame | None = None,
    *,
    method: str | None = None,
    kind: str = "hierarchical",
    correlation: str | None = None,
    weights: str | VarianceFunction | None = None,
) -> MLFit | MarginalFit | CorrelatedFit | CrossedFit:
    """Fit a design by REML or ML with the engine its model needs (what :func:`fit` and ``hierlmm fit`` run).

    Serially correlated or heteroscedastic errors go to :func:`~hierlmm.engines.reml.correlated_fit.fit_correlated`
    (which needs ``data``, the data the design was built from), ``kind="marginal"`` to
    :func:`~hierlmm.engines.reml.marginal_model.fit_marginal`, crossed grouping factors to lme4's engine
    (:func:`~hierlmm.engines.reml.crossed_fit.fit_crossed`), everything else to
    :func:`~hierlmm.engines.reml.ml_fit.fit_ml`. The arguments are :func:`fit`'s; ``method`` defaults to the spec's.
    """
    method = method or design.spec.method
    if kind not in ("hierarchical", "marginal"):
        raise SpecError("Unknown kind of model.", given=kind, fix="Use kind='hierarchical' or kind='marginal'.")
    check_response_varies(design)
    if correlation is not None or weights is not None:
        if kind != "hierarchical":
            raise SpecError("Serial correlation and variance functions are fitted with the hierarchical model's "
                            "random effects only.", given={"kind": kind, "correlation": correlation,
                                                           "weights": weights},
                            fix="Drop kind=, or correlation= and weights=.")
        if data is None:
            raise SpecError("Serial correlation and variance functions need the data the design was built from (for "
                            "the times and the variance covariates).", given="data=None", fix="Pass data=.")
        return fit_correlated(design, data, correlation, method, weights=weights)
    if kind == "marginal":
        return fit_marginal(design, method)
    if is_crossed(design):  # crossed factors: lme4's dense PLS engine
        return fit_crossed(design, method)
    return fit_ml(design, method)


def fit_bayes(
    design: Design,
    *,
    sampler: str = "marginal",
    options: SamplerOptions | None = None,
    chains: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    cores: int | None = None,
    seed: int | None = None,
    target_accept: float | None = None,
    progressbar: bool | None = None,
    priors: Mapping[str, Any] | None = None,
    centered: Sequence[str] | str = (),
    pointwise: bool | None = None,
    kind: str = "hierarchical",
    correlation: Any = None,
    data: pd.DataFrame | None = None,
    log_sd_design: Any = None,
    weights: str | None = None,
) -> BayesFit | MarginalBayesFit:
    """Sample the posterior of ``design``'s model with NUTS (nutpie).

    Parameters
    ----------
    design
        The design.
    sampler
        ``"marginal"`` (default: NUTS on the marginalised likelihood, then exact draws of ``b``) or ``"joint"``.
    options
        NUTS settings, a :class:`~hierlmm.engines.bayes.sampling.SamplerOptions` (4 chains x (1000 tuning + 1000)
        draws, 2 cores, seed 1 by default); or give any of them as keywords instead (not both):
    chains, draws, tune, cores, seed, target_accept, progressbar
        ``draws`` and ``tune`` per chain; ``tune`` 1000 by default, 2000 with a correlation structure;
        ``target_accept`` nutpie's default (0.8), 0.9 for the joint sampler and for correlated or heteroscedastic
        errors. Checked before anything is compiled (:class:`~hierlmm.engines.bayes.sampling.SamplerOptions`:
        whole numbers, ``chains``, ``draws``, ``cores`` >= 1, ``tune`` >= 0, ``seed`` in [0, 2**32),
        ``target_accept`` in (0, 1)).
    priors
        Overrides of the default priors (:func:`hierlmm.engines.bayes.priors.with_overrides`), checked against this
        model before any work (:func:`hierlmm.engines.bayes.priors.check_priors`: shapes, finite positive scales,
        names the model has).
    centered
        Random effects the joint sampler samples centred: factor names, ``factor:effect`` labels, or ``"auto"``
        (:mod:`hierlmm.engines.bayes.parametrisation`).
    pointwise
        Store the per-observation log-likelihood (default: when draws x observations <= 5e7). Only for the
        hierarchical model with independent errors; the other fits store the per-subject one (``y_subject``).
    kind
        ``"hierarchical"`` (default) or ``"marginal"``: the marginal model, D free to be indefinite
        (:func:`hierlmm.engines.bayes.marginal_model.fit_bayes_marginal`, which returns a ``MarginalBayesFit``).
    correlation, data, log_sd_design
        Serially correlated (and heteroscedastic) errors: nlme's syntax (``"corExp(form = ~ obstime | patient)"``),
        the data the design was built from, and optionally ``(M, names)`` with log SD ratio = ``M omega``
        (:func:`hierlmm.engines.bayes.correlated_fit.fit_bayes_correlated`, which returns a ``CorrelatedBayesFit``).
    weights
        A variance function in nlme's syntax (``"varIdent(form = ~ 1 | drug)"``), the same as ``log_sd_design``
        bound from it (:mod:`hierlmm.structures.variance_functions`), with or without a ``correlation``; its
        parameters are reported under nlme's names.
    """
    options = SamplerOptions.resolve(options, chains=chains, draws=draws, tune=tune, cores=cores, seed=seed,
                                     target_accept=target_accept, progressbar=progressbar)
    if kind not in ("hierarchical", "marginal"):
        raise SpecError("Unknown kind of model.", given=kind, fix="Use kind='hierarchical' or kind='marginal'.")
    check_response_varies(design)
    if correlation is not None or log_sd_design is not None or weights is not None:
        if data is None or sampler != "marginal" or centered or kind != "hierarchical" or pointwise:
            raise SpecError("Correlated or heteroscedastic errors are sampled with the marginal sampler of the "
                            "hierarchical model, need the data (for the times and the variance covariates), and "
                            "store the per-subject log-likelihood only.",
                            given={"correlation": correlation, "weights": weights,
                                   "data": None if data is None else "given", "sampler": sampler, "kind": kind,
                                   "centered": centered, "pointwise": pointwise},
                            fix="Pass data=, and drop sampler=, centered=, kind= and pointwise=.")
        return fit_bayes_correlated(design, data, correlation, weights=weights, log_sd_design=log_sd_design,
                                    options=options, priors=priors)
    if kind == "marginal":
        if sampler != "marginal" or centered or pointwise:
            raise SpecError("The marginal model has no random effects to sample or condition on: sampler, centered "
                            "and pointwise do not apply (it stores the per-subject log-likelihood).",
                            given={"sampler": sampler, "centered": centered, "pointwise": pointwise},
                            fix="Drop sampler=, centered= and pointwise=.")
        return fit_bayes_marginal(design, options=options, priors=priors)
    return fit_bayes_hierarchical(design, sampler=sampler, options=options, priors=priors, centered=centered,
                                  pointwise=pointwise)


def compare_models(*fits: Any, level: str | None = None, **options: Any) -> ComparisonTable | pd.DataFrame:
    """Compare fits of the same data: nlme's ``anova(m1, m2, ...)`` table for ML/REML fits, ArviZ's LOO table for
    Bayesian fits.

    ML/REML fits go to :func:`hierlmm.inference.likelihood_ratio.compare_models` (``refit``, ``null``, ``nsim``,
    ``seed``, ``progressbar``, ``names`` as there: df, AIC, BIC, logLik and a likelihood-ratio test of each model
    against the one before it). Bayesian fits (positionally or as one ``{name: fit}`` mapping) go to
    :func:`hierlmm.inference.loo.compare_bayes`: elpd differences and their SE at ``level`` (``"subject"`` by
    default: leave one subject out). The two kinds answer different questions and do not mix.
    """
    bayes = [isinstance(f, BayesResult) or (isinstance(f, Mapping) and all(isinstance(v, BayesResult)
                                                                          for v in f.values())) for f in fits]
    if fits and all(bayes):
        if options:
            raise SpecError("Bayesian fits are compared by PSIS-LOO: the likelihood-ratio options do not apply.",
                            given=sorted(options), fix="Drop them; choose the LOO level with level=.")
        return compare_bayes(*fits, level=level or "subject")
    if any(bayes):
        raise NotSupportedError("Bayesian and ML/REML fits cannot share one comparison table (expected predictive "
                                "accuracy and likelihood ratios answer different questions).",
                                given=[type(f).__name__ for f in fits],
                                fix="Compare the Bayesian fits together (LOO) and the ML/REML fits together (LRT); "
                                    "hierlmm.compare(bayes_fit, reml_fit) sets one posterior beside one REML fit.")
    if level is not None:
        raise SpecError("level= chooses the LOO level of Bayesian fits; ML/REML fits are compared by likelihood.",
                        given=level, fix="Drop level=.")
    return compare_ml_models(*fits, **options)
