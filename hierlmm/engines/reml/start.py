"""A quiet ML/REML fit that other engines start from (the marginal model, serial correlation, NUTS chains)."""

from __future__ import annotations

import warnings

from hierlmm.design.design import Design
from hierlmm.design.sufficient_stats import is_crossed
from hierlmm.engines.reml.crossed_fit import CrossedFit, fit_crossed
from hierlmm.engines.reml.ml_fit import MLFit, fit_ml


def starting_fit(design: Design, method: str = "REML") -> MLFit | CrossedFit | None:
    """A quiet ML/REML fit to start another engine from (marginal model, serial correlation, NUTS chains), or
    ``None`` when it fails: a start is a convenience, and boundary or convergence warnings are expected there.
    Crossed designs get lme4's engine (:func:`hierlmm.engines.reml.crossed_fit.fit_crossed`); both results have
    ``beta``, ``sigma`` and ``D``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if is_crossed(design):
                return fit_crossed(design, method)
            return fit_ml(design, method)
    except Exception:  # noqa: BLE001 - the caller falls back to its default start
        return None
