"""The one interface every fit offers, whatever its engine and kind of model.

Every ML/REML result (:mod:`hierlmm.engines.reml`: nested, crossed, with serially correlated or heteroscedastic
errors, the marginal model) satisfies :class:`FitResult`, and every Bayesian result (:mod:`hierlmm.engines.bayes`)
satisfies :class:`BayesResult`: the same names, read the same way. Code that takes a fit (summaries, plots,
comparisons, and the tests and residuals to come) reads these and nothing else. Where a quantity does not exist
for a kind of fit (random effects of the marginal model, a maximised likelihood of a posterior), the method raises
:class:`~hierlmm.errors.NotSupportedError` saying why, never ``AttributeError``.

Notation
--------
The chapter's: ``y_i = X_i beta + Z_i b_i + e_i``, ``b_i ~ N(0, D)`` (one ``D`` per random-effects block, in the
design's order), ``e_i ~ N(0, sigma^2 S_i R_i S_i)`` (``S_i = R_i = I`` without a variance function or a
correlation structure), and the implied marginal covariance ``V_i = Z_i D Z_i' + sigma^2 S_i R_i S_i``.

- ``beta``, ``cov_beta``: the fixed effects and their covariance (ML/REML: GLS estimates, nlme's ``vcov``;
  Bayes: posterior mean and posterior covariance).
- ``D``: a tuple, one ``q x q`` array per block (Bayes: posterior means). In the marginal model ``D`` need not be
  positive semi-definite.
- ``sigma``: the residual SD (nlme's, where a variance function sets the scale).
- ``fitted(level)``: ``level=0`` the population mean ``X beta``; ``level=1`` adds every block's ``Z b``.
- ``residuals(level, type)``: nlme's ``resid(fit, level, type)``. For row ``r`` of subject ``i``, with
  ``e = y - fitted(level)`` (``type="response"``): ``type="pearson"`` is ``e_r / (sigma s_r)``, the error SD the
  variance function gives the row (``s_r = 1`` without one); ``type="normalized"`` is ``L_i^-1`` times subject
  ``i``'s pearson residuals, ``L_i`` the lower Cholesky factor of the error correlation ``R_i`` (``R_i = L_i L_i'``;
  nlme's ``recalc`` of the corStruct), at level 0 as at level 1: only the modelled error correlation is removed, not
  the random effects' (equal to pearson without a correlation structure). Bayesian fits: posterior means (pearson and
  normalized computed draw by draw, then averaged).

Predictions for new rows, with intervals, are one function for every fit, :func:`hierlmm.predict`
(:mod:`hierlmm.inference.prediction`): they need the error structure on new rows and a subject's history, which
sit above the engines.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from hierlmm.design.design import Design
from hierlmm.errors import DataError, SpecError


def check_level(level: int) -> None:
    """Levels 0 (population: ``X beta``) and 1 (adding every block's ``Z b``) are the ones every fit defines."""
    if isinstance(level, bool) or level not in (0, 1):
        raise DataError("level must be 0 (population) or 1 (subject).", given=level, fix="Use level=0 or level=1.")


#: The residual types of ``residuals(level, type)`` (nlme's ``resid(fit, type = "r" | "p" | "n")``).
RESIDUAL_TYPES = ("response", "pearson", "normalized")


def check_ci_prob(ci_prob: Any) -> float:
    """``ci_prob`` as a float, refused unless it is a probability strictly between 0 and 1 (an interval's mass)."""
    if isinstance(ci_prob, bool) or not isinstance(ci_prob, int | float) or not 0 < ci_prob < 1:
        raise SpecError("ci_prob must be a probability strictly between 0 and 1.", given=ci_prob,
                        fix="Use e.g. ci_prob=0.95.")
    return float(ci_prob)


def check_residual_type(type: str) -> str:
    """The residual type named by ``type``: one of :data:`RESIDUAL_TYPES` or, as nlme's ``match.arg``, a prefix of
    one (``"r"``, ``"p"``, ``"n"``)."""
    matches = [t for t in RESIDUAL_TYPES if isinstance(type, str) and type and t.startswith(type)]
    if len(matches) != 1:
        raise SpecError("Unknown residual type.", given=type,
                        fix='Use type="response" (y - fitted), "pearson" (divided by the error SD) or "normalized" '
                            '(pearson with the within-subject error correlation removed); nlme\'s "r", "p", "n" too.')
    return matches[0]


class _Estimates(Protocol):
    """The members every fit has, whatever its engine (see the module notation)."""

    design: Design
    method: str
    kind: str

    @property
    def beta(self) -> np.ndarray: ...

    @property
    def cov_beta(self) -> np.ndarray: ...

    @property
    def D(self) -> tuple[np.ndarray, ...]: ...

    @property
    def sigma(self) -> float: ...

    @property
    def loglik(self) -> float: ...

    @property
    def aic(self) -> float: ...

    @property
    def bic(self) -> float: ...

    def fitted(self, level: int = 1) -> np.ndarray: ...

    def residuals(self, level: int = 1, type: str = "response") -> np.ndarray: ...


@runtime_checkable
class FitResult(_Estimates, Protocol):
    """What every ML/REML result offers (:mod:`hierlmm.engines.reml`; see the module notation).

    ``method`` is ``"REML"`` or ``"ML"``; ``kind`` the formulation, ``"hierarchical"`` or ``"marginal"`` (the
    command line's ``--kind``). ``loglik`` is the maximised (restricted) log-likelihood in nlme's form, ``aic`` and
    ``bic`` nlme's (REML: ``N - p`` observations). ``fixef()`` is nlme's table (Value, Std.Error, DF, t-value,
    p-value), ``varcorr()`` per grouping factor the variances, SDs and correlations (and ``"Residual"``),
    ``ranef()`` per grouping factor a :class:`~hierlmm.engines.reml.result.RandomEffects`, ``summary()`` nlme-like
    text.
    """

    @property
    def converged(self) -> bool: ...

    def fixef(self) -> pd.DataFrame: ...

    def varcorr(self) -> dict[str, pd.DataFrame]: ...

    def ranef(self) -> dict[str, Any]: ...

    def summary(self, data_name: str | None = None) -> str: ...


@runtime_checkable
class BayesResult(_Estimates, Protocol):
    """What every Bayesian result offers (:mod:`hierlmm.engines.bayes`; see the module notation).

    ``method`` is ``"NUTS"``; ``kind`` the formulation, ``"hierarchical"`` or ``"marginal"``; ``tree`` the ArviZ
    DataTree. Point quantities (``beta``, ``cov_beta``, ``D``, ``sigma``, ``fitted``, ``residuals``) are
    posterior means (pearson and normalized residuals computed draw by draw, then averaged); ``fixef()``,
    ``varcorr()``, ``ranef()`` and ``summary()`` posterior tables (mean, sd,
    equal-tailed interval, R-hat, ESS). Predictions of every fit are :func:`hierlmm.predict`'s.
    ``loglik``, ``aic`` and ``bic`` raise :class:`~hierlmm.errors.NotSupportedError`: a posterior has no maximised
    likelihood.
    """

    tree: Any

    def fixef(self, ci_prob: float = 0.95) -> pd.DataFrame: ...

    def varcorr(self, ci_prob: float = 0.95) -> pd.DataFrame: ...

    def ranef(self, ci_prob: float = 0.95) -> dict[str, pd.DataFrame]: ...

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame: ...

    def diagnostics(self) -> Any: ...
