"""Refit an ML/REML result with another method and/or another response, with the engine that made it.

What likelihood-ratio tests need: REML fits refitted by ML when their fixed effects differ, and both models refitted
to every simulated response of a parametric bootstrap (hundreds of times). The fit keeps everything its engine needs
(the design; for serially correlated or heteroscedastic errors the subject batches with their times and the bound
variance function), so no data frame is needed, and the refit starts where the engine allows it from the fit's own
estimates.

Notation
--------
The model, its ``X``, ``Z`` and error structure stay as fitted; only ``y`` (same rows, in ``fit.design.y``'s order)
and/or the criterion (``"REML"``: nlme's restricted log-likelihood, ``"ML"``: the log-likelihood) change. Starts:

- nested random effects (:class:`~hierlmm.engines.reml.ml_fit.MLFit`): the fit's ``theta`` on the log-Cholesky
  scale (a scale estimated as 0 starts at ``1e-2``), with the engine's other starts as fall-backs;
- serially correlated / heteroscedastic errors (:class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit`): the
  fit's ``theta`` on the optimiser's scale;
- crossed factors and the marginal model: their engines take no start; they start as a first fit does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hierlmm.engines.reml.correlated_fit import CorrelatedFit, fit_correlated_pieces, optimiser_theta
from hierlmm.engines.reml.crossed_fit import CrossedFit, fit_crossed
from hierlmm.engines.reml.marginal_model import MarginalFit, fit_marginal
from hierlmm.engines.reml.ml_fit import MLFit, fit_ml
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, SpecError

_SMALLEST_START_SCALE = 1e-2


def refit(fit: REMLResult, *, method: str | None = None, y: np.ndarray | None = None) -> REMLResult:
    """Fit the same model again by ``method`` and/or to a new response ``y``, with the engine that made ``fit``.

    Parameters
    ----------
    fit
        An ML/REML result: :class:`~hierlmm.engines.reml.ml_fit.MLFit`,
        :class:`~hierlmm.engines.reml.crossed_fit.CrossedFit`,
        :class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit` or
        :class:`~hierlmm.engines.reml.marginal_model.MarginalFit`.
    method
        ``"REML"`` or ``"ML"``; default: the fit's own.
    y
        A new response for the same rows, in the order of ``fit.design.y`` (e.g. a row of
        :func:`hierlmm.inference.simulation.simulate_fit`); default: the fit's own.

    Returns
    -------
    REMLResult
        A result of the same kind (its ``design`` carries the new ``y``).

    Raises
    ------
    SpecError
        An unknown method.
    DataError
        ``y`` of the wrong length or not finite.
    NotSupportedError
        A result hierlmm's REML engines did not make, or a CorrelatedFit without its subject batches.
    """
    if not isinstance(fit, MLFit | CorrelatedFit | CrossedFit | MarginalFit):
        raise NotSupportedError("refit() takes an ML/REML result of hierlmm's engines.", given=type(fit).__name__,
                                fix="Pass the result of hierlmm.fit (a Bayesian fit is not refitted this way).")
    method = (method or fit.method).upper()
    if method not in ("REML", "ML"):
        raise SpecError("Unknown estimation method.", given=method, fix="Use 'REML' or 'ML'.")
    design = fit.design if y is None else dataclasses.replace(fit.design, y=_checked_response(fit, y))
    if isinstance(fit, MLFit):
        return fit_ml(design, method, start=_log_scale_start(fit))
    if isinstance(fit, CorrelatedFit):
        if fit.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches (the times it used), "
                                    "which a refit needs.", given="CorrelatedFit.batches is None",
                                    fix="Fit it with hierlmm.fit(..., correlation=..., weights=...).")
        return fit_correlated_pieces(design, fit.batches, fit.structure, method, fit.weights, fit.variance,
                                     start=optimiser_theta(fit))
    if isinstance(fit, CrossedFit):
        return fit_crossed(design, method)
    return fit_marginal(design, method)


def _checked_response(fit: REMLResult, y: np.ndarray) -> np.ndarray:
    values = np.asarray(y, dtype=float)
    if values.shape != fit.design.y.shape:
        raise DataError(f"The new response needs one value per row the fit used ({fit.design.n_obs}).",
                        given=f"shape {values.shape}", fix="Pass a vector aligned with fit.design.y.")
    if not np.all(np.isfinite(values)):
        raise DataError("The new response has missing or infinite values.",
                        given=f"{int((~np.isfinite(values)).sum())} non-finite values",
                        fix="Pass a complete response for the fit's rows.")
    return values


def _log_scale_start(fit: MLFit) -> np.ndarray:
    """The fit's ``theta`` (natural scale) on the log-Cholesky scale the nested engine starts from."""
    start = np.array(fit.theta, dtype=float)
    scale = fit.layout.diagonal_mask()
    start[scale] = np.log(np.maximum(start[scale], _SMALLEST_START_SCALE))
    return start


__all__: Sequence[str] = ("refit",)
