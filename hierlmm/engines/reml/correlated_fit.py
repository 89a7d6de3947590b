"""REML/ML fits with random effects, serially correlated and heteroscedastic errors:
``V_i = Z_i D Z_i' + sigma^2 S_i R_i(phi) S_i``.

The fitting driver (:func:`fit_correlated`) and the result (:class:`CorrelatedFit`). The profiled likelihood it
maximises, and its gradient, are :mod:`hierlmm.engines.reml.correlated_likelihood`: the per-subject sufficient
statistics of :mod:`hierlmm.engines.reml.profiled_likelihood` do not survive a non-identity ``S_i R_i S_i``, so every
``V_i`` is factorised densely, batched by subject size (AIDS: 467 subjects of 1-5 visits in five batches).

Notation
--------
As in :mod:`hierlmm.engines.reml.correlated_likelihood`. Intervals for the correlation and variance-function
parameters follow nlme's ``intervals()``: a normal interval on the unconstrained scale from the inverse Hessian of
the profiled log-likelihood, mapped back (``range`` = exp(u +- 1.96 se), a varIdent ratio exp(omega +- 1.96 se), a
power or exponent omega +- 1.96 se). The Hessian is by central differences at step 1e-4 on the unconstrained
scale. nlme's ``fdHess`` default (``.relStep`` ~ 6e-6) divides rounding noise by products of steps ~1e-11; where the
likelihood is nearly flat in the correlation (the chapter's Model II) nlme's default interval is that noise, (0.067,
4.07), while ``lmeControl(.relStep = 1e-3)`` gives hierlmm's (0.0178, 15.37) (docs/serial_correlation.md).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats
from threadpoolctl import threadpool_limits

from hierlmm.design.design import Design
from hierlmm.design.subject_batches import SubjectBatches, subject_batches
from hierlmm.engines.reml.correlated_likelihood import factor_of, profile, profile_and_gradient, split_theta
from hierlmm.engines.reml.covariance_parameters import ErrorModel
from hierlmm.engines.reml.finite_differences import central_hessian, clearly_positive_definite
from hierlmm.engines.reml.profiled_likelihood import layout_for
from hierlmm.engines.reml.result import RandomEffects, REMLResult, random_effects
from hierlmm.engines.reml.start import starting_fit
from hierlmm.errors import ConvergenceWarning, NotSupportedError, SpecError
from hierlmm.structures.error_parameters import ErrorParameters
from hierlmm.structures.serial_correlation import CorrelationStructure, parse_correlation
from hierlmm.structures.variance_functions import BoundVarianceFunction, VarianceFunction, describe, parse_weights


@dataclass(frozen=True, eq=False)
class CorrelatedFit(REMLResult):
    """A REML/ML fit with serially correlated and/or heteroscedastic errors (see the module notation).

    ``structure`` is None without a correlation structure, ``weights`` and ``variance`` (the variance function and
    its bound ``M``) None without a variance function. ``batches`` are the subjects' rows and the distances between
    their times (or positions) that the fit used (for :func:`hierlmm.implied_covariance` of a training subject).
    ``D`` (a one-block tuple) and ``sigma`` are on the scale of y (nlme's): ``V_i = Z_i D Z_i' + sigma^2 S_i R_i S_i``.
    Random effects are ``b_i = D Z_i' V_i^-1 r_i`` with the chapter's covariances
    (:mod:`hierlmm.engines.reml.result`), from the dense ``V_i`` of every subject.
    """

    design: Design
    method: str
    structure: CorrelationStructure | None
    beta: np.ndarray
    cov_beta: np.ndarray
    D: tuple[np.ndarray, ...]
    sigma: float
    loglik: float
    theta: np.ndarray
    cov_theta: np.ndarray | None  # inverse Hessian: its correlation and variance-function blocks are nlme's
    n_max: int
    converged: bool
    weights: VarianceFunction | None = None
    variance: BoundVarianceFunction | None = None
    batches: SubjectBatches | None = None

    @property
    def correlation_parameters(self) -> dict[str, float]:
        """The correlation structure's parameters (``range``, ``phi``, ``rho``, ``nugget``; empty without one)."""
        if self.structure is None:
            return {}
        return self.structure.parameters(self._part("correlation"), self.n_max)

    @property
    def omega(self) -> np.ndarray:
        """The variance function's unconstrained parameters (``log s = M omega``; empty without one)."""
        return self._part("variance")

    @property
    def variance_parameters(self) -> dict[str, float]:
        """The variance function's parameters as nlme reports them (varIdent's SD ratios of strata 2..K, varPower's
        ``power``, varExp's ``expon``; empty without one)."""
        return {} if self.variance is None else self.variance.parameters(self.omega)

    def correlation_intervals(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """nlme-style intervals of the correlation parameters (empty where the Hessian is not positive definite)."""
        if self.structure is None:
            return {}
        return self._intervals("correlation", lambda u: self.structure.parameters(u, self.n_max), level)

    def variance_intervals(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """nlme-style intervals of the variance function's parameters (empty where the Hessian is not positive
        definite)."""
        if self.variance is None:
            return {}
        return self._intervals("variance", self.variance.parameters, level)

    def error_parameters(self) -> ErrorParameters:
        """The error model at the estimates (:class:`~hierlmm.structures.error_parameters.ErrorParameters`)."""
        omega = self.omega[None] if self.variance is not None else None
        return ErrorParameters(self.structure, self.n_max, np.array([self.sigma]), omega,
                               unconstrained=self._part("correlation"), variance=self.variance)

    def error_model(self) -> ErrorModel:
        """``S R S`` as a function of the correlation's unconstrained parameters and the variance function's
        ``omega`` (:class:`~hierlmm.engines.reml.covariance_parameters.ErrorModel`), on the fit's subject batches."""
        if self.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches (the times it used).",
                                    given="CorrelatedFit.batches is None",
                                    fix="Refit with hierlmm.fit(..., correlation=..., weights=...).")
        correlation = self._part("correlation")
        names = [f"{name} (unconstrained)" for name in self.correlation_parameters][:correlation.size]
        names += [f"correlation[{j}]" for j in range(len(names), correlation.size)]
        names += [f"omega[{j}]" for j in range(self.omega.size)]
        return ErrorModel(tuple(names), np.r_[correlation, self.omega], self.batches.rows, self.batches.distances,
                          self.structure, self.n_max, correlation.size,
                          None if self.variance is None else self.variance.M)

    def ranef(self) -> dict[str, RandomEffects]:
        """Empirical-Bayes random effects with the chapter's covariances (module notation of
        :mod:`hierlmm.engines.reml.result`), from every subject's dense ``V_i``."""
        if self.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches, which the random "
                                    "effects need.", given="batches=None", fix="Fit it with fit_correlated.")
        block, errors, (D,) = self.design.blocks[0], self.error_parameters(), self.D
        pieces = []
        XtVX = np.zeros((self.design.p, self.design.p))
        for idx, d in zip(self.batches.rows, self.batches.distances, strict=True):
            Z, X = block.Z[idx], self.design.X[idx]  # (k, n, q), (k, n, p)
            r = self.design.y[idx] - X @ self.beta
            M = None if self.variance is None else self.variance.M[idx]
            V = Z @ D @ np.swapaxes(Z, -1, -2) + errors.matrices(d, M)[0]
            V_inv = np.linalg.inv(V)  # subjects of a few rows
            ZtV = np.swapaxes(Z, -1, -2) @ V_inv
            XtVX += np.einsum("knp,knm,kmr->pr", X, V_inv, X)
            pieces.append((idx, ZtV @ r[..., None], ZtV @ Z, ZtV @ X))
        XtVX_inv = np.linalg.inv(XtVX)
        q, n = block.q, block.n_levels
        mean, cov_est = np.zeros((n, q)), np.zeros((n, q, q))
        for idx, ZtVr, ZtVZ, ZtVX in pieces:
            levels = block.group_index[idx[:, 0]]
            mean[levels] = (D @ ZtVr)[..., 0]
            cov_est[levels] = D @ (ZtVZ - ZtVX @ XtVX_inv @ np.swapaxes(ZtVX, -1, -2)) @ D
        return {block.factor: random_effects(block, mean, cov_est, D[None] - cov_est)}

    def error_sd(self) -> np.ndarray:
        """Every row's error SD ``sigma s_r``, ``s_r = exp(m_r' omega)`` the variance function's SD ratio (nlme's
        ``sigma / varWeights``)."""
        sd = np.full(self.design.n_obs, float(self.sigma))
        return sd if self.variance is None else sd * np.exp(self.variance.M @ self.omega)

    def decorrelate(self, values: np.ndarray) -> np.ndarray:
        """``L_i^-1 v_i`` per subject, ``L_i`` the lower Cholesky factor of its error correlation ``R_i`` at the
        estimates (nlme's ``recalc`` of the corStruct; the rows in the order the fit used)."""
        out = np.array(values, dtype=float)
        if self.structure is None:
            return out
        if self.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches (the times it used).",
                                    given="CorrelatedFit.batches is None",
                                    fix="Refit with hierlmm.fit(..., correlation=..., weights=...).")
        u = self._part("correlation")
        for idx, d in zip(self.batches.rows, self.batches.distances, strict=True):
            L = np.linalg.cholesky(self.structure.from_distances(u, d, self.n_max))  # (k, n, n)
            out[idx] = np.linalg.solve(L, out[idx][..., None])[..., 0]
        return out

    def _error_structure_lines(self) -> list[str]:
        lines = []
        if self.structure is not None:
            params = pd.DataFrame([self.correlation_parameters]).to_string(index=False,
                                                                           float_format=lambda v: f"{v:.6g}")
            lines += ["", f"Correlation Structure: {self.structure.description}",
                      f" Formula: {self.structure.form}", " Parameter estimate(s):",
                      *(" " + line for line in params.splitlines())]
        if self.weights is not None and self.variance is not None:
            lines += ["", describe(self.weights, self.variance, self.omega)]
        return lines

    def _slice(self, part: str) -> slice:
        k = layout_for(self.design).size
        n_corr = self.structure.n_params if self.structure is not None else 0
        return slice(k, k + n_corr) if part == "correlation" else slice(k + n_corr, self.theta.size)

    def _part(self, part: str) -> np.ndarray:
        return self.theta[self._slice(part)]

    def _intervals(self, part: str, natural, level: float) -> dict[str, tuple[float, float]]:
        """Normal intervals on the unconstrained scale, mapped to the natural one parameter by parameter."""
        if self.cov_theta is None:
            return {}
        z = scipy.stats.norm.ppf(0.5 + level / 2)
        u = self._part(part)
        se = np.sqrt(np.diag(self.cov_theta)[self._slice(part)])
        out = {}
        for j, name in enumerate(natural(u)):
            lo, hi = u.copy(), u.copy()
            lo[j], hi[j] = u[j] - z * se[j], u[j] + z * se[j]
            a, b = natural(lo)[name], natural(hi)[name]
            out[name] = (min(a, b), max(a, b))
        return out


def fit_correlated(design: Design, data: pd.DataFrame, correlation: CorrelationStructure | str | None = None,
                   method: str = "REML", *, weights: VarianceFunction | str | None = None) -> CorrelatedFit:
    """Fit ``design`` with serially correlated and/or heteroscedastic errors by REML or ML.

    Parameters
    ----------
    design
        A design with one random-effects grouping factor.
    data
        The data the design was built from (for the correlation's time column and the variance covariates).
    correlation
        A :class:`~hierlmm.structures.serial_correlation.CorrelationStructure` or nlme's syntax
        (``"corExp(form = ~ obstime | patient)"``); None for independent errors.
    method
        ``"REML"`` or ``"ML"``.
    weights
        A variance function (:mod:`hierlmm.structures.variance_functions`) or nlme's syntax (``"varIdent(form = ~ 1 |
        drug)"``); None for a constant error variance.
    """
    structure = None if correlation is None else (
        correlation if isinstance(correlation, CorrelationStructure) else parse_correlation(correlation))
    function = None if weights is None else parse_weights(weights)
    batches = subject_batches(design, data, structure)
    variance = None if function is None else function.bind(design, data)
    return fit_correlated_pieces(design, batches, structure, method, function, variance)


def fit_correlated_pieces(design: Design, batches: SubjectBatches, structure: CorrelationStructure | None,
                          method: str = "REML", function: VarianceFunction | None = None,
                          variance: BoundVarianceFunction | None = None, *, start: np.ndarray | None = None,
                          ) -> CorrelatedFit:
    """:func:`fit_correlated` from what it builds from the data (a fit's own ``batches``, ``structure``, ``weights``
    and ``variance``), so that a fit can be repeated without its data frame (:func:`hierlmm.engines.reml.refit.refit`),
    optionally from a start on the optimiser's scale (:func:`optimiser_theta`)."""
    method = method.upper()
    if method not in ("REML", "ML"):
        raise SpecError("Unknown estimation method.", given=method, fix="Use 'REML' or 'ML'.")
    reml = method == "REML"
    shift, centred = _centred(function, variance)
    if start is None:
        start = _start(design, structure, batches, method, variance)

    def objective(theta: np.ndarray) -> float:
        try:
            return -profile(design, batches, structure, theta, reml, centred)[0]
        except np.linalg.LinAlgError:
            return np.inf

    def objective_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            value, gradient = profile_and_gradient(design, batches, structure, theta, reml, centred)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros_like(theta)
        return -value, -gradient

    with threadpool_limits(1, user_api="blas"):  # small batched factorisations: BLAS threads only add wake-ups
        result = scipy.optimize.minimize(objective_and_gradient, start, jac=True, method="BFGS",
                                         options={"gtol": 1e-6, "maxiter": 1000})
        if _on_boundary(result.x, design):  # such optima can be local: the best of a few other starts wins
            for other in _other_starts(start, design, structure):
                candidate = scipy.optimize.minimize(objective_and_gradient, other, jac=True, method="BFGS",
                                                    options={"gtol": 1e-6, "maxiter": 1000})
                if np.isfinite(candidate.fun) and candidate.fun < result.fun - 1e-8:
                    result = candidate
        theta = result.x
        loglik, beta, sigma2, XtWX = profile(design, batches, structure, theta, reml, centred)
        hessian = central_hessian(objective, theta)
        grad = objective_and_gradient(theta)[1]
    cov_theta = None
    # a variance at its boundary (Model III: a log-scale element of D's factor at -19) leaves an eigenvalue that is
    # zero up to rounding, whose sign is noise: positive definite means clearly positive, relative to the largest
    if clearly_positive_definite(hessian):
        cov_theta = np.linalg.inv(hessian)
    else:
        warnings.warn("The Hessian of the profiled log-likelihood is not positive definite at the optimum: the "
                      "likelihood is flat in some variance parameters (for instance a random-effects variance "
                      "going to 0), they are poorly determined, and no intervals are given. Simplify the random "
                      "effects or the correlation, or see their posterior in a Bayesian fit.",
                      ConvergenceWarning, stacklevel=2)
    optimum = bool(result.success or np.max(np.abs(grad)) < 1e-2)
    converged = optimum and cov_theta is not None  # a stationary point with a singular Hessian is no clear maximum
    if not optimum:
        warnings.warn(f"The optimiser stopped before the maximum (largest gradient {np.max(np.abs(grad)):.3g} on the "
                      f"unconstrained scale; {result.message}): the likelihood is flat in some variance parameters, "
                      "as the chapter reports for richer random effects with serial correlation. Simplify the "
                      "random effects or the correlation, or see their posterior in a Bayesian fit.",
                      ConvergenceWarning, stacklevel=2)
    layout = layout_for(design)
    Lam = factor_of(theta, design)
    N, p = design.n_obs, design.p
    scale = sigma2 * (1.0 if reml else N / (N - p))
    D = (sigma2 * Lam @ Lam.T,)
    sigma = float(np.sqrt(sigma2) * np.exp(-shift @ split_theta(theta, design, structure)[1]))  # back to nlme's S_i
    theta = np.concatenate([layout.from_factors([Lam * np.sqrt(sigma2) / sigma]), theta[layout.size:]])
    return CorrelatedFit(design, method, structure, beta, scale * np.linalg.inv(XtWX), D, sigma, loglik, theta,
                         cov_theta, batches.n_max, converged, function, variance, batches)


def _on_boundary(theta: np.ndarray, design: Design) -> bool:
    """Whether some random-effect SD is (numerically) 0 relative to the largest: where the profiled likelihood of a
    model with serial correlation has local optima (a random intercept traded for the correlation)."""
    L = factor_of(theta, design)
    sd = np.sqrt(np.diag(L @ L.T))
    return bool(sd.size and np.min(sd) < 1e-4 * max(float(np.max(sd)), 1e-300))


def _other_starts(start: np.ndarray, design: Design, structure: CorrelationStructure | None) -> list[np.ndarray]:
    """Starts for a second look after a boundary optimum: the random-effects factor shrunk towards a common scale
    (the log-Cholesky diagonal times 0.3), and the correlation's parameters moved by log(1/4) and log(4) (a shorter
    and a longer range)."""
    k = layout_for(design).size
    n_corr = structure.n_params if structure is not None else 0
    out = [np.concatenate([start[:k] * 0.3, start[k:]])]
    for step in (np.log(0.25), np.log(4.0)) if n_corr else ():
        moved = start.copy()
        moved[k:k + n_corr] += step
        out.append(moved)
    return out


def optimiser_theta(fit: CorrelatedFit) -> np.ndarray:
    """A fit's ``theta`` on the optimiser's scale (the inverse of the last step of :func:`fit_correlated_pieces`):
    ``Lambda`` relative to the engine's ``sigma``, which for an unstratified varPower/varExp is ``sigma e^(c omega)``
    (:func:`_centred`)."""
    layout = layout_for(fit.design)
    shift, _ = _centred(fit.weights, fit.variance)
    ratio = float(np.exp(shift @ fit.omega)) if shift.size else 1.0  # engine's sigma / nlme's sigma
    factors = [L / ratio for L in layout.factors(fit.theta[:layout.size])]
    return np.concatenate([layout.from_factors(factors), fit.theta[layout.size:]])


def _centred(function: VarianceFunction | None, variance: BoundVarianceFunction | None,
             ) -> tuple[np.ndarray, BoundVarianceFunction | None]:
    """Column means ``c`` of an unstratified varPower/varExp's ``M`` and the function with ``M - c``.

    The engine optimises with the centred column (the same model: ``sigma`` absorbs ``exp(c omega)``), which
    decorrelates ``omega`` from the scale; the fit reports nlme's ``sigma = sigma_c exp(-c omega)``. Intervals of
    ``omega`` are unchanged by this reparametrisation of the other parameters.
    """
    if variance is None or function is None or function.kind == "varIdent" or function.strata:
        return np.zeros(0 if variance is None else variance.M.shape[1]), variance
    shift = variance.M.mean(axis=0)
    return shift, dataclasses.replace(variance, M=variance.M - shift)


def _start(design: Design, structure: CorrelationStructure | None, batches: SubjectBatches, method: str,
           variance: BoundVarianceFunction | None = None) -> np.ndarray:
    q, layout = design.blocks[0].q, layout_for(design)
    hier = starting_fit(design, method)
    if hier is None:
        first = np.zeros(layout.size)
    else:
        first = layout.from_factors([np.linalg.cholesky(hier.D[0] / hier.sigma**2 + 1e-6 * np.eye(q))])
    span = np.concatenate([d.ravel() for d in batches.distances])
    corr = structure.start(span) if structure is not None else np.zeros(0)
    return np.concatenate([first, corr, variance.start if variance is not None else np.zeros(0)])
