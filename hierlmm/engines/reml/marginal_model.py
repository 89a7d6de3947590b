"""The marginal model of a spec, fitted by ML or REML: ``y_i ~ N(X_i beta, Z_i D Z_i' + sigma^2 I)`` with D free
to be indefinite, as long as every ``V_i`` is positive definite (chapter section 3.3).

The hierarchical model needs ``D`` positive (semi)definite, because ``D`` is the covariance of ``b_i``; the
marginal model only needs every ``V_i`` positive definite. For a random intercept that frees the intra-class
correlation down to ``-1/(n_max - 1)``; the hierarchical fit stops at 0.

Notation
--------
``Delta = D / sigma^2``, ``S_i = Z_i'Z_i``, ``W_i = V_i / sigma^2 = I + Z_i Delta Z_i'``. ``V_i`` is positive definite
iff ``Delta + S_i^-1`` is (for full-rank ``Z_i``). hierlmm parametrises::

    Delta = Lambda Lambda' - kappa I,    kappa = 1 / max_i lambda_max(S_i),

with ``Lambda`` lower triangular with a positive diagonal (log-Cholesky ``theta``, unconstrained). Since
``S_i^-1 >= kappa I`` for every subject, every ``W_i`` is positive definite for every ``theta``: no rejection, no
boundary inside the parameter space, so both an optimiser and NUTS can move freely. For a random intercept
(``S_i = n_i``) the set reached is exactly the admissible one, ``D > -sigma^2 / n_max``; with several random
effects it is the admissible set's largest part of this form (a subset; the fit reports ``kappa``).

With ``K_i = Delta (I + S_i Delta)^-1`` (so ``W_i^-1 = I - Z_i K_i Z_i'``, ``|W_i| = |I + S_i Delta|``) the
profiled log-likelihoods are nlme's (``../shared/notes``): with ``r'W^-1 r`` at the GLS ``beta``,

- ML: ``sigma^2 = r'W^-1r / N``, ``l = -N/2 (log 2 pi sigma^2 + 1) - 1/2 sum_i log|W_i|``;
- REML: ``sigma^2 = r'W^-1r / (N - p)``,
  ``l = -(N-p)/2 (log 2 pi sigma^2 + 1) - 1/2 sum_i log|W_i| - 1/2 log|X'W^-1X|``.

Only one grouping factor (the subject) is supported: the chapter's marginal model is per subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.optimize

from hierlmm.design.design import Design
from hierlmm.design.sufficient_stats import SubjectStats, subject_stats
from hierlmm.engines.reml.finite_differences import central_gradient
from hierlmm.engines.reml.result import RandomEffects, REMLResult
from hierlmm.engines.reml.start import starting_fit
from hierlmm.errors import NotSupportedError, NumericalError, SpecError
from hierlmm.structures.random_effects import ThetaLayout


def check_unstructured(design: Design) -> None:
    """The marginal model's ``D`` is any symmetric matrix that keeps every ``V_i`` positive definite: a structured
    D (pdDiag, pdIdent, pdCompSymm, pdBlocked) is not offered there."""
    block = design.blocks[0]
    if block.structure != "pdSymm" and block.q > 1:
        raise NotSupportedError("The marginal model takes an unstructured D (pdSymm) only.",
                                given=f"{block.structure} for {block.factor}",
                                fix="Use (x | g) / pdSymm with kind='marginal', or kind='hierarchical' for a "
                                    "structured D.")


def kappa_of(stats: SubjectStats) -> float:
    """``1 / max_i lambda_max(Z_i'Z_i)``: the shift that keeps every ``V_i`` positive definite."""
    return float(1.0 / np.linalg.eigvalsh(stats.ZtZ)[:, -1].max())


def delta_of(theta: np.ndarray, q: int, kappa: float) -> np.ndarray:
    """``Delta = Lambda Lambda' - kappa I`` from log-Cholesky ``theta`` (diagonal entries on the log scale)."""
    (Lam,) = ThetaLayout.for_blocks(["pdSymm"], [q]).factors(theta)
    return Lam @ Lam.T - kappa * np.eye(q)


def theta_of(delta: np.ndarray, kappa: float) -> np.ndarray:
    """The ``theta`` of a ``Delta`` in the parametrised set (inverse of :func:`delta_of`)."""
    q = delta.shape[0]
    return ThetaLayout.for_blocks(["pdSymm"], [q]).from_factors([np.linalg.cholesky(delta + kappa * np.eye(q))])


@dataclass(frozen=True)
class MarginalProfile:
    """The profiled quantities at one ``Delta`` (see the module notation)."""

    loglik: float
    beta: np.ndarray
    sigma2: float
    XtWX: np.ndarray
    logdet_W: float


def profile(stats: SubjectStats, delta: np.ndarray, reml: bool) -> MarginalProfile:
    """Profiled ML or REML log-likelihood of the marginal model at ``Delta``."""
    q = delta.shape[0]
    M = np.eye(q)[None] + stats.ZtZ @ delta[None]  # I + S_i Delta
    sign, logdet = np.linalg.slogdet(M)
    if np.any(sign <= 0):
        raise NumericalError("A subject's V_i is not positive definite.", given=delta.tolist(),
                             fix="Report this: the parametrisation should prevent it.")
    K = delta[None] @ np.linalg.inv(M)
    ZtX, Zty = stats.ZtX, stats.Zty
    XtWX = stats.XtX - np.einsum("mqa,mqr,mrb->ab", ZtX, K, ZtX)
    XtWy = stats.Xty - np.einsum("mqa,mqr,mr->a", ZtX, K, Zty)
    ytWy = stats.yty - np.einsum("mq,mqr,mr->", Zty, K, Zty)
    beta = np.linalg.solve(XtWX, XtWy)
    rWr = float(ytWy - beta @ XtWy)
    N, p = int(stats.n_per_subject.sum()), XtWX.shape[0]
    dof = N - p if reml else N
    sigma2 = rWr / dof
    loglik = -0.5 * dof * (np.log(2 * np.pi * sigma2) + 1) - 0.5 * float(logdet.sum())
    if reml:
        loglik -= 0.5 * float(np.linalg.slogdet(XtWX)[1])
    return MarginalProfile(float(loglik), beta, float(sigma2), XtWX, float(logdet.sum()))


@dataclass(frozen=True, eq=False)
class MarginalFit(REMLResult):
    """An ML/REML fit of the marginal model.

    Attributes
    ----------
    design, method
        What was fitted, ``"ML"`` or ``"REML"``.
    beta, cov_beta
        Fixed effects and their covariance ``r'W^-1r / (N - p) (X'W^-1X)^-1`` (nlme's, for ML and REML).
    D, sigma
        The random-effects "covariance" (a one-block tuple; possibly indefinite) and the residual SD.
    loglik
        The maximised log-likelihood (REML: nlme's form).
    kappa, theta
        The parametrisation's shift and the optimum (module notation).
    converged, n_iter
        The optimiser's report.
    """

    design: Design
    method: str
    beta: np.ndarray
    cov_beta: np.ndarray
    D: tuple[np.ndarray, ...]
    sigma: float
    loglik: float
    kappa: float
    theta: np.ndarray
    converged: bool
    n_iter: int
    stats: SubjectStats

    kind = "marginal"
    title = "Marginal model y_i ~ N(X_i beta, Z_i D Z_i' + sigma^2 I), D not necessarily positive definite,"
    df_rule = "residual"  # N - p, as nlme's gls

    @property
    def min_eigen_D(self) -> float:
        """Smallest eigenvalue of D (negative: D is not a covariance matrix, yet every V_i is one)."""
        return float(np.linalg.eigvalsh(self.D[0])[0])

    @property
    def icc(self) -> float | None:
        """``D_00 / (D_00 + sigma^2)`` for a random intercept (None without one)."""
        names = self.design.blocks[0].effect_names
        if "(Intercept)" not in names:
            return None
        d = self.D[0][names.index("(Intercept)"), names.index("(Intercept)")]
        return float(d / (d + self.sigma**2))

    def ranef(self) -> dict[str, RandomEffects]:
        """The marginal model has no random effects: refused with the reason."""
        raise NotSupportedError(
            "The marginal model has no random effects: D is only a parameter of V_i = Z_i D Z_i' + sigma^2 I and may "
            "be indefinite, so there is no distribution b_i ~ N(0, D) to predict b_i from.",
            given=f"a marginal-model fit (smallest eigenvalue of D {self.min_eigen_D:.4g})",
            fix="Fit the hierarchical model (kind='hierarchical', the default) for random effects, subject-specific "
                "fitted values and level-1 predictions; level=0 works here.")

    def marginal_cov(self, subject: str | int) -> np.ndarray:
        """``V_i`` of one subject's rows."""
        block = self.design.blocks[0]
        idx = np.flatnonzero(block.group_index == block.levels.index(str(subject)))
        Z = block.Z[idx]
        return Z @ self.D[0] @ Z.T + self.sigma**2 * np.eye(idx.size)

    def _status_line(self) -> str:
        verdict = ("converged" if self.converged else "stopped before its check passed (BFGS did not report success, "
                   "and the largest gradient on the unconstrained scale is above 1e-2)")
        return f"Optimizer: {verdict}; {self.n_iter} BFGS iterations"

    def _random_effects_lines(self) -> list[str]:
        names = self.design.blocks[0].effect_names
        frame = pd.DataFrame(self.D[0], index=names, columns=names)
        icc = f"; ICC {self.icc:.4f}" if self.icc is not None else ""
        return [f"D (grouping {self.design.blocks[0].factor}; smallest eigenvalue {self.min_eigen_D:.4g}{icc}):",
                frame.to_string(float_format=lambda x: f"{x:.5g}"), f"Residual SD: {self.sigma:.5g}"]


def fit_marginal(design: Design, method: str = "REML") -> MarginalFit:
    """Fit the marginal model of ``design`` by ML or REML (see the module notation)."""
    method = method.upper()
    if method not in ("ML", "REML"):
        raise SpecError("Unknown method for the marginal model.", given=method, fix="Use 'REML' or 'ML'.")
    if len(design.blocks) != 1:
        raise NotSupportedError("The marginal model supports one grouping factor (the subject).",
                                given=[b.factor for b in design.blocks],
                                fix="Use one random-effects term, e.g. (time | subject), or kind='hierarchical'.")
    check_unstructured(design)
    stats = subject_stats(design)
    q, reml = design.blocks[0].q, method == "REML"
    kappa = kappa_of(stats)
    start = _start(design, method, kappa, q)

    def objective(theta: np.ndarray) -> float:
        try:
            return -profile(stats, delta_of(theta, q, kappa), reml).loglik
        except (NumericalError, np.linalg.LinAlgError):
            return np.inf

    result = scipy.optimize.minimize(objective, start, method="BFGS", options={"gtol": 1e-7, "maxiter": 2000})
    # BFGS often ends on "precision loss" at the optimum: judge convergence by the gradient itself
    grad = central_gradient(objective, result.x)
    converged = bool(result.success or np.max(np.abs(grad)) < 1e-2)
    best = profile(stats, delta_of(result.x, q, kappa), reml)
    D = (delta_of(result.x, q, kappa) * best.sigma2,)
    N, p = design.n_obs, design.p
    scale = best.sigma2 * (N / (N - p) if not reml else 1.0)  # nlme scales by r'W^-1r / (N - p) for ML too
    cov_beta = scale * np.linalg.inv(best.XtWX)
    return MarginalFit(design, method, best.beta, cov_beta, D, float(np.sqrt(best.sigma2)), best.loglik, kappa,
                       result.x, converged, int(result.nit), stats)


def _start(design: Design, method: str, kappa: float, q: int) -> np.ndarray:
    """Start at the hierarchical fit's D (a point of the marginal model's parameter set)."""
    hier = starting_fit(design, method)
    if hier is None:
        return np.zeros(q * (q + 1) // 2)
    return theta_of(hier.D[0] / hier.sigma**2 + 1e-6 * np.eye(q), kappa)
