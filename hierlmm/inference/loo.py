"""Bayesian model comparison by predictive accuracy: PSIS-LOO through ArviZ, per subject or per observation.

A Bayesian fit has no maximised likelihood, hence no AIC, BIC or likelihood-ratio test
(:attr:`~hierlmm.engines.bayes.posterior_result.PosteriorResult.loglik` refuses them). Fits are compared instead by
how well they predict data they were not fitted to, estimated by Pareto-smoothed importance sampling leave-one-out
cross-validation (PSIS-LOO; Vehtari, Gelman and Gabry 2017) from the log-likelihood draws every fit stores in its
DataTree. ArviZ 1.x offers no WAIC, and hierlmm does not write one: PSIS-LOO estimates the same quantity, and its
Pareto-k diagnostic says when the estimate cannot be trusted, which WAIC cannot.

Notation
--------
``S`` posterior draws ``theta^(s)``. The unit ``u`` left out is

- ``level="subject"``: subject ``i`` of the outermost grouping factor, with ``b_i`` integrated out:
  ``log p(y_i | theta) = log N(y_i | X_i beta, V_i)`` (``log_likelihood/y_subject``, stored by every fit with
  nested grouping factors). Leaving subject ``i`` out and predicting it is predicting a new subject;
- ``level="observation"``: observation ``j`` of subject ``i``, conditional on the drawn ``b_i``:
  ``log N(y_ij | x_ij'beta + z_ij'b_i, sigma^2)`` (``log_likelihood/y``, stored by the hierarchical model with
  independent errors when ``pointwise`` is on).

With ``ll_us = log p(y_u | theta^(s))``::

    lppd_u     = log( 1/S sum_s exp(ll_us) )                    (in-sample)
    elpd_loo_u = log( sum_s w_us exp(ll_us) / sum_s w_us )       w_us ~ 1 / exp(ll_us), Pareto-smoothed
    p_loo      = sum_u (lppd_u - elpd_loo_u)

and ``k_u``, the estimated shape of the Pareto tail of the weights ``w_us``. ArviZ's threshold is
``good_k = min(1 - 1 / log10(S), 0.7)`` (0.7 from about 2200 draws on; Vehtari et al. 2024): above it the
importance-sampling estimate of ``elpd_loo_u`` is unreliable; above 1 it is meaningless.

Why the subject level for hierarchical models: conditional on ``b``, leaving out observation ``y_ij`` still leaves
``b_i`` in the model, fitted from the subject's other observations and from ``y_ij`` itself. A subject's own data
dominate the posterior of its ``b_i``, so the leave-one-out posterior differs much from the full one, the
importance weights become heavy-tailed and PSIS breaks down (high ``k``), most of all for subjects with few
observations. With ``b_i`` integrated out (the subject level) a subject is one unit, and leaving it out removes it
and its ``b_i`` together.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import arviz_stats as azs
import numpy as np
import pandas as pd

from hierlmm.design.design import data_difference
from hierlmm.engines.bayes.correlated_fit import CorrelatedBayesFit
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, ParetoKWarning, SpecError

LEVELS = ("subject", "observation")
LOG_LIKELIHOOD = {"subject": "y_subject", "observation": "y"}
SHOWN_UNITS = 5  # labels of the worst units named in the warning


def describe(fit: Any) -> str:
    """What kind of Bayesian fit this is, in words (for messages)."""
    if getattr(fit, "kind", "hierarchical") == "marginal":
        return "the marginal model (kind='marginal')"
    if isinstance(fit, CorrelatedBayesFit):
        return "the hierarchical model with correlated or heteroscedastic errors (correlation=/weights=)"
    return f"the hierarchical model (sampler='{fit.sampler}')"


ML_INSTEAD = "Compare ML/REML fits by fit.aic and fit.bic, or test nested models with hierlmm.lrt(fit0, fit1)"


def require_bayes(fit: Any, what: str, instead: str) -> PosteriorResult:
    """``fit`` if it is a Bayesian fit; otherwise a hierlmm error: NotSupportedError for an ML/REML fit (with what to
    use ``instead``), DataError for anything else. The posterior checks read it too."""
    if isinstance(fit, PosteriorResult):
        return fit
    if isinstance(fit, REMLResult):
        raise NotSupportedError(f"{what} needs posterior draws; an ML/REML fit has none.",
                                given=f"a {type(fit).__name__} ({fit.method})",
                                fix=f"{instead}; or fit the model with hierlmm.fit_bayes(design).")
    raise DataError(f"{what} needs a Bayesian fit from hierlmm.fit_bayes.", given=type(fit).__name__,
                    fix="Pass the result of hierlmm.fit_bayes(design, ...).")


def check_level(level: str) -> None:
    """``level`` is ``"subject"`` or ``"observation"``."""
    if level not in LEVELS:
        raise SpecError("Unknown LOO level.", given=level,
                        fix="Use level='subject' (leave one subject out, b integrated out) or level='observation'.")


def log_likelihood_name(fit: PosteriorResult, level: str) -> str:
    """The ``log_likelihood`` variable of ``fit`` at ``level``; a hierlmm error saying why it is absent."""
    check_level(level)
    name = LOG_LIKELIHOOD[level]
    group = fit.tree["log_likelihood"] if "log_likelihood" in fit.tree.children else None
    if group is not None and name in group.data_vars:
        return name
    kind = describe(fit)
    if level == "subject":
        raise NotSupportedError(
            f"This fit of {kind} has no per-subject log-likelihood: with crossed grouping factors there are no "
            "independent subjects to leave out (every observation shares effects with rows of other levels).",
            given=f"grouping factors {[b.factor for b in fit.design.blocks]}",
            fix="Use level='observation' (conditional on b; read its Pareto-k warning), or compare by K-fold "
                "cross-validation over the levels of one factor, refitting each fold.")
    if fit.kind == "marginal":
        why = ("the marginal model has no random effects to condition on, and its observations within a subject are "
               "dependent (V_i), so a subject is its smallest independent unit")
    elif isinstance(fit, CorrelatedBayesFit):
        why = ("hierlmm stores only the per-subject log-likelihood of fits with correlated or heteroscedastic errors "
               "(with a correlation structure a subject's errors are dependent even given b_i, so one observation "
               "is not a unit that can be left out on its own)")
    else:
        why = ("the hierarchical fit was made without the per-observation log-likelihood (pointwise=False, or draws "
               "x observations above the default limit)")
    raise NotSupportedError(
        f"This fit of {kind} has no per-observation log-likelihood: {why}.", given="level='observation'",
        fix="Use level='subject' (recommended: leave one subject out, b integrated out)"
            + ("; or refit the hierarchical model with hierlmm.fit_bayes(design, pointwise=True)."
               if fit.kind != "marginal" and not isinstance(fit, CorrelatedBayesFit) else "."))


def _psis_loo(fit: PosteriorResult, name: str) -> Any:
    """ArviZ's PSIS-LOO of one log-likelihood variable, pointwise, with ArviZ's own Pareto-k warning silenced (the
    caller raises a more specific one)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return azs.loo(fit.tree, var_name=name, pointwise=True)


def _unit_label(fit: PosteriorResult, level: str, result: Any, u: int) -> str:
    """A unit in words: the subject's label, or the observation's data row (``iloc``) and its subject."""
    k = result.pareto_k
    if level == "subject":
        return str(k[k.dims[0]].values[u]) if k.dims[0] in k.coords else f"subject {u}"
    design = fit.design
    block = design.blocks[0]
    return f"data row {int(design.rows[u])} ({block.factor} {block.levels[block.group_index[u]]})"


def _warn_high_k(fit: PosteriorResult, result: Any, level: str, label: str | None = None) -> None:
    """A plain warning when some units' Pareto k exceed ArviZ's ``good_k`` (module notation): how many, which, and
    what to do."""
    k = np.asarray(result.pareto_k.values, dtype=float).ravel()
    high = np.flatnonzero(k > result.good_k)
    if high.size == 0:
        return
    unit = "subjects" if level == "subject" else "observations"
    worst = high[np.argsort(-k[high])][:SHOWN_UNITS]
    named = ", ".join(f"{_unit_label(fit, level, result, u)} (k = {k[u]:.2f})" for u in worst)
    verb = "has" if high.size == 1 else "have"
    head = (f"PSIS-LOO{'' if label is None else f' of {label!r}'} at level='{level}': {high.size} of {k.size} "
            f"{unit} {verb} Pareto k > {result.good_k:.2f} ({int(np.sum(k > 1))} above 1): the PSIS estimate of "
            f"their elpd_loo, and so of the total, may be far off. Worst: {named}.")
    if level == "observation":  # only the hierarchical model with independent errors has this level
        advice = (" For a hierarchical model use level='subject': conditional on b, leaving out one observation "
                  "leaves the subject's own b_i fitted from its other observations, and a subject's data dominate "
                  "its b_i, so the leave-one-out posterior is far from the full one and importance sampling breaks "
                  "down. With b_i integrated out the subject is left out as a whole, which is also the question of "
                  "predicting a new subject.")
    else:
        advice = (" Such subjects are influential (outlying, or with many observations). Check them, refit "
                  "without each of them for an exact leave-one-out value, run longer chains (k is estimated from "
                  "the draws), or use a model that is less sensitive to them.")
    warnings.warn(head + advice, ParetoKWarning, stacklevel=3)


def loo(fit: Any, level: str = "subject", *, pointwise: bool = False) -> Any:
    """PSIS-LOO of a Bayesian fit, leaving out one subject (``b`` integrated out) or one observation.

    Parameters
    ----------
    fit
        A Bayesian fit of any kind (:func:`hierlmm.fit_bayes`): the hierarchical model (either sampler), the marginal
        model, or the hierarchical model with correlated or heteroscedastic errors.
    level
        ``"subject"`` (default): leave one subject of the outermost grouping factor out, ``b_i`` integrated out
        (``log_likelihood/y_subject``). ``"observation"``: leave one observation out, conditional on ``b``
        (``log_likelihood/y``; only the hierarchical model with independent errors stores it, when fitted with
        ``pointwise`` on).
    pointwise
        Keep the per-unit ``elpd_i`` and ``pareto_k`` in the result (needed to see which units are influential).

    Returns
    -------
    arviz_stats.ELPDDataLOO
        ArviZ's result: ``elpd`` (elpd_loo), ``se``, ``p`` (p_loo), ``n_data_points`` (the units left out),
        ``good_k``, ``warning`` and, with ``pointwise=True``, ``elpd_i`` and ``pareto_k`` per unit.

    Raises
    ------
    NotSupportedError
        For an ML/REML fit (compare those by AIC/BIC or :func:`hierlmm.lrt`), or when the fit has no
        log-likelihood at ``level`` (the message says why and what to do).

    Warns
    -----
    ParetoKWarning
        When some units' Pareto k exceed ArviZ's ``good_k``: how many, the worst of them, and, at the observation
        level of a hierarchical model, why the subject level is the one to use.

    Notation
    --------
    ``elpd_loo = sum_u log p(y_u | y_-u)`` estimated by PSIS from ``ll_us = log p(y_u | theta^(s))``; ``p_loo =
    lppd - elpd_loo`` with ``lppd = sum_u log mean_s exp(ll_us)``; ``k_u`` the Pareto shape of unit ``u``'s
    importance weights (see the module notation).
    """
    fit = require_bayes(fit, "loo (predictive accuracy, from posterior draws)", ML_INSTEAD)
    name = log_likelihood_name(fit, level)
    result = _psis_loo(fit, name)
    _warn_high_k(fit, result, level)
    return result if pointwise else replace(result, elpd_i=None, pareto_k=None)


def _named_fits(fits: tuple[Any, ...]) -> dict[str, Any]:
    """``compare_bayes``'s arguments as {name: fit}: one mapping, or fits named by their formula."""
    if len(fits) == 1 and isinstance(fits[0], Mapping):
        named = {str(k): v for k, v in fits[0].items()}
    elif any(isinstance(f, Mapping) for f in fits):
        raise SpecError("Give the fits either as one mapping {name: fit} or as separate arguments, not both.",
                        given=[type(f).__name__ for f in fits], fix="Use compare_bayes({'m0': fit0, 'm1': fit1}).")
    else:
        named = {}
        for fit in fits:
            design = getattr(fit, "design", None)
            base = design.spec.formula if design is not None else type(fit).__name__
            if getattr(fit, "kind", "") == "marginal":
                base += " (marginal model)"
            elif isinstance(fit, CorrelatedBayesFit):
                base += " (correlated errors)"
            label, n = base, 2
            while label in named:
                label, n = f"{base} #{n}", n + 1
            named[label] = fit
    if len(named) < 2:
        raise SpecError("compare_bayes needs two or more fits.", given=list(named),
                        fix="Pass the fits to compare, e.g. compare_bayes(fit0, fit1).")
    return named


def _units(fit: PosteriorResult, name: str) -> tuple[str, np.ndarray]:
    """The grouping factor and the labels of the units of a log-likelihood variable."""
    values = fit.tree["log_likelihood"][name]
    dim = values.dims[-1]
    if name == "y":
        return "observation", np.arange(values.sizes[dim])
    labels = np.asarray(values[dim].values).astype(str)
    factor = next((b.factor for b in fit.design.blocks if list(map(str, b.levels)) == list(labels)), dim)
    return factor, labels


def check_same_data(named: Mapping[str, PosteriorResult], level: str) -> None:
    """Refuse fits that were not fitted to the same response on the same rows, or whose units differ."""
    items = list(named.items())
    first_name, first = items[0]
    name = LOG_LIKELIHOOD[level]
    factor0, units0 = _units(first, name)
    for other_name, fit in items[1:]:
        d0, d1 = first.design, fit.design
        pair = f"{first_name!r} and {other_name!r}"
        difference = data_difference(d0, d1)
        if difference is not None:
            raise DataError(f"{pair} were fitted to {difference}: their predictive densities are of different data "
                            "and cannot be compared.", given={first_name: d0.spec.formula, other_name: d1.spec.formula},
                            fix="Fit every model to the same response on the same rows (drop the rows with missing "
                                "values in any model's columns first; a transformed response would need the "
                                "log-Jacobian of the transformation, which compare_bayes does not add).")
        factor1, units1 = _units(fit, name)
        if factor0 != factor1 or units0.shape != units1.shape or not np.array_equal(units0, units1):
            raise DataError(f"{pair} leave out different units at level='{level}' ({factor0!r}: {units0.size} "
                            f"units, {factor1!r}: {units1.size}): their elpd are sums over different units.",
                            given={first_name: factor0, other_name: factor1},
                            fix="Compare models with the same outermost grouping factor (the subject).")


def compare_bayes(*fits: Any, level: str = "subject") -> pd.DataFrame:
    """ArviZ's comparison table of Bayesian fits by PSIS-LOO, all at the same level.

    Parameters
    ----------
    *fits
        Two or more Bayesian fits, or one mapping ``{name: fit}``. Unnamed fits are named by their formula.
    level
        ``"subject"`` (default; leave one subject out, ``b`` integrated out) or ``"observation"`` (see :func:`loo`).

    Returns
    -------
    pandas.DataFrame
        ArviZ's ``compare`` table, best model first, unrounded: ``rank``, ``elpd_diff`` (this model's elpd_loo minus
        the best one's, 0 or negative), ``dse`` (SE of that difference, from the paired per-unit differences),
        ``p_worse``, ``diag_diff``, ``diag_elpd``, ``p`` (p_loo), ``elpd``, ``se`` and the stacking ``weight``.
        ``attrs["level"]`` records the level.

    Raises
    ------
    DataError
        When the fits were fitted to different responses or data rows, or leave out different units.
    NotSupportedError
        For an ML/REML fit, or a fit without a log-likelihood at ``level`` (see :func:`loo`).

    Warns
    -----
    ParetoKWarning
        Per fit with units of high Pareto k (see :func:`loo`).

    Notation
    --------
    For models ``A`` (best) and ``B``: ``elpd_diff = sum_u (elpd_B,u - elpd_A,u)`` and ``dse = sqrt(U var_u(elpd_B,u
    - elpd_A,u))`` over the ``U`` units. A difference of a few ``dse`` or less does not separate the models.
    """
    check_level(level)
    named = {k: require_bayes(v, "compare_bayes (predictive accuracy, from posterior draws)", ML_INSTEAD)
             for k, v in _named_fits(fits).items()}
    name = LOG_LIKELIHOOD[level]
    for fit in named.values():
        log_likelihood_name(fit, level)
    check_same_data(named, level)
    results = {}
    for label, fit in named.items():
        results[label] = _psis_loo(fit, name)
        _warn_high_k(fit, results[label], level, label)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        table = azs.compare(results, round_to="none")
    table.attrs["level"] = level
    return table
