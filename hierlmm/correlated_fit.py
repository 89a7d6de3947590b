"""REML/ML fits with random effects and serially correlated errors: ``V_i = Z_i D Z_i' + sigma^2 R_i(phi)``.

The per-subject sufficient statistics of :mod:`hierlmm.reml` do not survive a non-identity ``R_i``, so this engine
factorises every ``V_i`` densely, batched by subject size (AIDS: 467 subjects of 1-5 visits in five batches).

Notation
--------
``Delta = D / sigma^2 = Lambda Lambda'`` (log-Cholesky ``theta``), ``W_i = Z_i Delta Z_i' + R_i``, ``u`` the correlation
parameters on the unconstrained scale (:mod:`hierlmm.serial_correlation`). Profiled over ``beta`` and ``sigma^2`` as in
:mod:`hierlmm.marginal_model`:

- ML: ``sigma^2 = r'W^-1r / N``, ``l = -N/2 (log 2 pi sigma^2 + 1) - 1/2 sum_i log|W_i|``;
- REML: ``sigma^2 = r'W^-1r / (N - p)``, ``l = -(N-p)/2 (log 2 pi sigma^2 + 1) - 1/2 sum log|W_i| - 1/2 log|X'W^-1X|``.

Intervals for the correlation parameters follow nlme's ``intervals()``: a normal interval on the unconstrained
scale from the inverse Hessian of the profiled log-likelihood, mapped back (``range`` = exp(u +- 1.96 se)).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.stats
from threadpoolctl import threadpool_limits

from hierlmm.covariance import ThetaLayout
from hierlmm.design import Design
from hierlmm.errors import ConvergenceWarning, DataError, NotSupportedError
from hierlmm.finite_differences import central_gradient, central_hessian
from hierlmm.inference import nlme_fixed_df, t_tests
from hierlmm.serial_correlation import CorrelationStructure, parse_correlation


@dataclass(frozen=True, eq=False)
class SubjectBatches:
    """Rows of the subjects grouped by subject size: per size, (k, n) row indices and (k, n, n) distances."""

    rows: tuple[np.ndarray, ...]
    distances: tuple[np.ndarray, ...]
    n_max: int


def subject_batches(design: Design, data: pd.DataFrame, structure: CorrelationStructure) -> SubjectBatches:
    """Group the design's rows by subject, the subjects by size, with the distances the structure needs."""
    block = design.blocks[0]
    if block.grouping != (structure.group,):
        raise NotSupportedError("The correlation's grouping must be the random effects' grouping factor.",
                                given={"correlation": structure.group, "random": block.factor},
                                fix=f"Write form = ~ time | {block.factor}.")
    if structure.time is not None:
        if structure.time not in data.columns:
            raise DataError(f"The correlation's time column {structure.time!r} is not in the data.",
                            given=structure.time, fix="Use a column of the data.")
        times = np.asarray(data[structure.time].to_numpy()[design.rows], dtype=float)
        if not np.all(np.isfinite(times)):
            raise DataError(f"The correlation's time column {structure.time!r} is missing or not finite in "
                            f"{int((~np.isfinite(times)).sum())} rows the model uses.", given=structure.time,
                            fix="Complete those times, or drop the rows.")
    order = np.argsort(block.group_index, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(block.group_index[order]) != 0])
    groups = np.split(order, starts[1:])
    by_size: dict[int, list[np.ndarray]] = {}
    for g in groups:
        by_size.setdefault(g.size, []).append(g)
    rows, distances = [], []
    for n in sorted(by_size):
        idx = np.stack(by_size[n])
        t = times[idx] if structure.time is not None else np.broadcast_to(np.arange(n, dtype=float), idx.shape)
        rows.append(idx)
        distances.append(np.abs(t[:, :, None] - t[:, None, :]))
    return SubjectBatches(tuple(rows), tuple(distances), max(by_size))


def profile(design: Design, batches: SubjectBatches, structure: CorrelationStructure, theta: np.ndarray,
            reml: bool) -> tuple[float, np.ndarray, float, np.ndarray]:
    """(log-likelihood, beta, sigma^2, X'W^-1X) at ``theta`` = (log-Cholesky of Lambda, correlation params)."""
    block = design.blocks[0]
    q = block.q
    Lam = _factor(theta, q)  # noqa: N806
    delta = Lam @ Lam.T
    u = theta[q * (q + 1) // 2:]
    p = design.p
    XtWX, XtWy, ytWy, logdet = np.zeros((p, p)), np.zeros(p), 0.0, 0.0  # noqa: N806
    for idx, d in zip(batches.rows, batches.distances, strict=True):
        Z, X, y = block.Z[idx], design.X[idx], design.y[idx]  # noqa: N806  (k, n, q), (k, n, p), (k, n)
        W = Z @ delta @ np.swapaxes(Z, -1, -2) + structure.from_distances(u, d, batches.n_max)  # noqa: N806
        C = np.linalg.cholesky(W)  # noqa: N806
        logdet += 2 * np.log(np.diagonal(C, axis1=-2, axis2=-1)).sum()
        A = np.linalg.solve(C, np.concatenate([X, y[..., None]], axis=-1))  # noqa: N806  C^-1 [X y]
        G = np.einsum("kna,knb->ab", A, A)  # noqa: N806
        XtWX += G[:p, :p]
        XtWy += G[:p, p]
        ytWy += G[p, p]
    beta = np.linalg.solve(XtWX, XtWy)
    rWr = ytWy - beta @ XtWy  # noqa: N806
    N = design.n_obs  # noqa: N806
    dof = N - p if reml else N
    sigma2 = rWr / dof
    loglik = -0.5 * dof * (np.log(2 * np.pi * sigma2) + 1) - 0.5 * logdet
    if reml:
        loglik -= 0.5 * np.linalg.slogdet(XtWX)[1]
    return float(loglik), beta, float(sigma2), XtWX


@dataclass(frozen=True, eq=False)
class CorrelatedFit:
    """A REML/ML fit with serially correlated errors (see the module notation)."""

    design: Design
    method: str
    structure: CorrelationStructure
    beta: np.ndarray
    cov_beta: np.ndarray
    D: np.ndarray
    sigma: float
    loglik: float
    theta: np.ndarray
    cov_theta: np.ndarray | None
    n_max: int
    converged: bool

    @property
    def correlation_parameters(self) -> dict[str, float]:
        """The correlation structure's parameters (``range``, ``phi``, ``rho``, ``nugget``)."""
        q = self.design.blocks[0].q
        return self.structure.parameters(self.theta[q * (q + 1) // 2:], self.n_max)

    def correlation_intervals(self, level: float = 0.95) -> dict[str, tuple[float, float]]:
        """nlme-style intervals of the correlation parameters (None where the Hessian is not positive definite)."""
        q = self.design.blocks[0].q
        k = q * (q + 1) // 2
        if self.cov_theta is None:
            return {}
        z = scipy.stats.norm.ppf(0.5 + level / 2)
        u = self.theta[k:]
        se = np.sqrt(np.diag(self.cov_theta)[k:])
        out = {}
        for j, name in enumerate(self.correlation_parameters):
            lo, hi = u.copy(), u.copy()
            lo[j], hi[j] = u[j] - z * se[j], u[j] + z * se[j]
            a, b = self.structure.parameters(lo, self.n_max)[name], self.structure.parameters(hi, self.n_max)[name]
            out[name] = (min(a, b), max(a, b))
        return out

    def fixef(self) -> pd.DataFrame:
        """nlme's fixed-effects table (nlme's denominator degrees of freedom)."""
        se = np.sqrt(np.diag(self.cov_beta))
        df = nlme_fixed_df(self.design)
        t, p = t_tests(self.beta, se, df)
        return pd.DataFrame({"Value": self.beta, "Std.Error": se, "DF": df.astype(int), "t-value": t, "p-value": p},
                            index=pd.Index(self.design.fixef_names, name="term"))


def fit_correlated(design: Design, data: pd.DataFrame, correlation: CorrelationStructure | str,
                   method: str = "REML") -> CorrelatedFit:
    """Fit ``design`` with serially correlated errors by REML or ML.

    Parameters
    ----------
    design
        A design with one random-effects grouping factor.
    data
        The data the design was built from (for the correlation's time column).
    correlation
        A :class:`~hierlmm.serial_correlation.CorrelationStructure` or nlme's syntax
        (``"corExp(form = ~ obstime | patient)"``).
    method
        ``"REML"`` or ``"ML"``.
    """
    structure = correlation if isinstance(correlation, CorrelationStructure) else parse_correlation(correlation)
    if len(design.blocks) != 1:
        raise NotSupportedError("Serial correlation is supported with one random-effects grouping factor.",
                                given=[b.factor for b in design.blocks], fix="Use one random-effects term.")
    method = method.upper()
    reml = method == "REML"
    batches = subject_batches(design, data, structure)
    start = _start(design, structure, batches, method)

    def objective(theta: np.ndarray) -> float:
        try:
            return -profile(design, batches, structure, theta, reml)[0]
        except np.linalg.LinAlgError:
            return np.inf

    with threadpool_limits(1, user_api="blas"):  # small batched factorisations: BLAS threads only add wake-ups
        result = scipy.optimize.minimize(objective, start, method="BFGS", options={"gtol": 1e-6, "maxiter": 1000})
    theta = result.x
    loglik, beta, sigma2, XtWX = profile(design, batches, structure, theta, reml)  # noqa: N806
    hessian = central_hessian(objective, theta)
    cov_theta = None
    if np.all(np.isfinite(hessian)) and np.linalg.eigvalsh(hessian)[0] > 0:
        cov_theta = np.linalg.inv(hessian)
    else:
        warnings.warn("The Hessian of the profiled log-likelihood is not positive definite at the optimum: the "
                      "variance parameters are poorly determined, and no intervals are given. A Bayesian fit gives "
                      "their posterior instead.", ConvergenceWarning, stacklevel=2)
    grad = central_gradient(objective, theta)
    converged = bool(result.success or np.max(np.abs(grad)) < 1e-2)
    if not converged:
        warnings.warn(f"The optimiser stopped before the maximum (largest gradient {np.max(np.abs(grad)):.3g} on the "
                      f"unconstrained scale; {result.message}): the likelihood is flat in some variance parameters, "
                      "as the chapter reports for richer random effects with serial correlation. Simplify the "
                      "random effects or the correlation, or see their posterior in a Bayesian fit.",
                      ConvergenceWarning, stacklevel=2)
    Lam = _factor(theta, design.blocks[0].q)  # noqa: N806
    N, p = design.n_obs, design.p  # noqa: N806
    scale = sigma2 * (1.0 if reml else N / (N - p))
    return CorrelatedFit(design, method, structure, beta, scale * np.linalg.inv(XtWX), sigma2 * Lam @ Lam.T,
                         float(np.sqrt(sigma2)), loglik, theta, cov_theta, batches.n_max, converged)


def _factor(theta: np.ndarray, q: int) -> np.ndarray:
    """``Lambda`` from the leading log-Cholesky part of ``theta``."""
    layout = ThetaLayout.for_blocks(["pdSymm"], [q])
    return layout.factors(theta[: layout.size])[0]


def _start(design: Design, structure: CorrelationStructure, batches: SubjectBatches, method: str) -> np.ndarray:
    from hierlmm.api import fit_ml

    q = design.blocks[0].q
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hier = fit_ml(design, method)
        L = np.linalg.cholesky(hier.D[0] / hier.sigma**2 + 1e-6 * np.eye(q))  # noqa: N806
        first = ThetaLayout.for_blocks(["pdSymm"], [q]).from_factors([L])
    except Exception:  # noqa: BLE001 - any start will do
        first = np.zeros(q * (q + 1) // 2)
    span = np.concatenate([d.ravel() for d in batches.distances])
    return np.concatenate([first, structure.start(span)])
