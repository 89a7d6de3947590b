"""The short path through the pipeline: ``spec -> design -> ML/REML fit`` in one call.

Every stage stays public (:func:`hierlmm.spec.ModelSpec`, :func:`hierlmm.design.build_design`,
:func:`hierlmm.reml.profiled_deviance`, :func:`fit_ml`), so a user can stop at any step.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from hierlmm.correlated_fit import CorrelatedFit, fit_correlated
from hierlmm.crossed_fit import CrossedFit, fit_crossed
from hierlmm.design import Design, build_design
from hierlmm.errors import SpecError
from hierlmm.fit_result import MLFit, build_fit
from hierlmm.marginal_model import MarginalFit, fit_marginal
from hierlmm.reml import optimize_theta
from hierlmm.spec import ModelSpec, PdMat
from hierlmm.sufficient_stats import outermost_block
from hierlmm.variance_function import VarianceFunction


def model_spec(
    formula: str | None = None,
    *,
    fixed: str | None = None,
    random: str | PdMat | Mapping[str, str | PdMat] | None = None,
    method: str = "REML",
) -> ModelSpec:
    """Build a :class:`ModelSpec` from lme4 syntax (``formula``) or nlme syntax (``fixed`` + ``random``)."""
    if formula is not None and fixed is not None:
        raise SpecError(
            "Both 'formula' and 'fixed' were given.",
            given=f"formula={formula!r}, fixed={fixed!r}",
            fix="Use formula= (lme4 style) or fixed= with random= (nlme style), not both.",
        )
    if formula is not None:
        if random is not None:
            return ModelSpec.from_nlme(formula, random, method=method)
        return ModelSpec.from_formula(formula, method=method)
    if fixed is None:
        raise SpecError("No model formula was given.", given=None, fix="Pass formula='y ~ x + (1 | g)'.")
    return ModelSpec.from_nlme(fixed, random, method=method)


def fit_ml(design: Design, method: str | None = None, *, start: np.ndarray | None = None) -> MLFit:
    """Fit a design by ML or REML (default: the spec's method), optionally from a starting ``theta``
    (log-Cholesky scale, see :mod:`hierlmm.covariance`)."""
    method = (method or design.spec.method).upper()
    if method not in ("REML", "ML"):
        raise SpecError("Unknown estimation method.", given=method, fix="Use 'REML' or 'ML'.")
    t0 = time.perf_counter()
    theta, layout, stats, report = optimize_theta(design, method, start)
    return build_fit(design, method, layout, stats, theta, report, time.perf_counter() - t0)


def starting_fit(design: Design, method: str = "REML") -> MLFit | CrossedFit | None:
    """A quiet ML/REML fit to start another engine from (marginal model, serial correlation, NUTS chains), or
    ``None`` when it fails: a start is a convenience, and boundary or convergence warnings are expected there.
    Crossed designs get lme4's engine (:func:`hierlmm.crossed_fit.fit_crossed`); both results have ``beta``,
    ``sigma`` and ``D``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if design.blocks and outermost_block(design) is None:
                return fit_crossed(design, method)
            return fit_ml(design, method)
    except Exception:  # noqa: BLE001 - the caller falls back to its default start
        return None


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
        (:func:`hierlmm.marginal_model.fit_marginal`).
    correlation
        Serially correlated errors in nlme's syntax, e.g. ``"corExp(form = ~ obstime | patient)"``
        (:func:`hierlmm.correlated_fit.fit_correlated`).
    weights
        A variance function (heteroscedastic errors) in nlme's syntax, e.g. ``"varIdent(form = ~ 1 | drug)"``, or
        ``hierlmm.varPower("~ x")`` (:mod:`hierlmm.variance_function`); with or without ``correlation``.

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
    design = build_design(spec, data)
    if correlation is not None or weights is not None:
        if kind != "hierarchical":
            raise SpecError("Serial correlation and variance functions are fitted with the hierarchical model's "
                            "random effects only.", given={"kind": kind, "correlation": correlation,
                                                           "weights": weights},
                            fix="Drop kind=, or correlation= and weights=.")
        return fit_correlated(design, data, correlation, method or spec.method, weights=weights)
    if kind == "marginal":
        return fit_marginal(design, method or spec.method)
    if design.blocks and outermost_block(design) is None:  # crossed factors: lme4's dense PLS engine
        return fit_crossed(design, method or spec.method)
    if kind != "hierarchical":
        raise SpecError("Unknown kind of model.", given=kind, fix="Use kind='hierarchical' or kind='marginal'.")
    result = fit_ml(design, method)
    return MLFit(result.design, result.method, result.layout, result.stats, result.theta, result.state,
                 result.optimizer, time.perf_counter() - t0)
