"""The result of an ML/REML fit: estimates, their uncertainty, random effects and implied covariances.

Notation
--------
At the estimates, for subject ``i`` (outermost grouping level) with stacked ``Z_i`` and ``r_i = y_i - X_i beta``:

- empirical-Bayes random effects (the mean of ``p(b_i | y_i; theta)``, chapter 3.4):
  ``b_i = D Z_i' V_i^{-1} r_i = Lambda A_i^{-1} Lambda' Z_i' r_i``;
- the chapter's covariance ``D Z_i' K Z_i D`` with
  ``K = V_i^{-1} - V_i^{-1} X_i (sum_i X_i'V_i^{-1}X_i)^{-1} X_i'V_i^{-1}``
  (the variance of the estimator ``b_i``), and the prediction-error covariance ``D - D Z_i' K Z_i D``
  (``Var(b_i - b_i_hat)``, what intervals for ``b_i`` use);
- the implied marginal covariance ``V_i = Z_i D Z_i' + sigma^2 I``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from hierlmm.design.design import Design
from hierlmm.design.sufficient_stats import SubjectStats, stack_factors
from hierlmm.engines.reml.profiled_likelihood import OptimizerReport, ProfiledState, evaluate, optimize_theta
from hierlmm.engines.reml.result import RandomEffects, REMLResult, random_effects
from hierlmm.engines.reml.variance_intervals import varcorr_intervals
from hierlmm.errors import DataError, SpecError
from hierlmm.structures.random_effects import ThetaLayout


@dataclass(frozen=True, eq=False)
class MLFit(REMLResult):
    """An ML or REML fit of a linear mixed model (the implied marginal model).

    Attributes
    ----------
    design, method
        What was fitted, and how (``"REML"`` or ``"ML"``).
    theta
        Relative covariance factors on the natural scale (see :mod:`hierlmm.structures.random_effects`).
    beta, cov_beta
        GLS fixed effects and their covariance ``sigma^2 (X'W^{-1}X)^{-1}``.
    sigma
        Residual SD.
    D
        One covariance matrix per random-effects block (design order).
    loglik
        Log-likelihood (REML: nlme's form).
    optimizer
        The optimiser's report and convergence checks.
    seconds
        Wall time of the fit.
    """

    design: Design
    method: str
    layout: ThetaLayout
    stats: SubjectStats
    theta: np.ndarray
    state: ProfiledState
    optimizer: OptimizerReport
    seconds: float

    # ---- estimates -----------------------------------------------------------------------------------------------
    @property
    def beta(self) -> np.ndarray:
        """Fixed effects."""
        return self.state.beta

    @property
    def sigma(self) -> float:
        """Residual standard deviation."""
        return float(np.sqrt(self.state.sigma2))

    @cached_property
    def cov_beta(self) -> np.ndarray:
        """Covariance of the GLS fixed effects, ``s^2 (X'W^{-1}X)^{-1}``.

        As nlme: ``s^2`` is the REML-scale residual variance ``r'W^{-1}r / (N - p)`` under both methods (under ML
        this is ``sigma^2 N / (N - p)``, which is what nlme's ``vcov`` and standard errors use).
        """
        dof = self.design.n_obs - self.design.p
        return self.state.rss / dof * np.linalg.inv(self.state.XtWX)

    @cached_property
    def D(self) -> tuple[np.ndarray, ...]:
        """Random-effects covariance matrix of every block."""
        return tuple(self.state.sigma2 * L @ L.T for L in self.layout.factors(self.theta, log_diagonal=False))

    @property
    def loglik(self) -> float:
        """Maximised (restricted) log-likelihood."""
        return -0.5 * self.state.deviance

    @property
    def n_theta(self) -> int:
        """Number of random-effects covariance parameters (besides sigma)."""
        return self.layout.size

    @property
    def converged(self) -> bool:
        """Whether the optimiser's convergence checks passed."""
        return self.optimizer.converged

    def varcorr_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Approximate intervals of the random-effect SDs, correlations and sigma, as nlme's
        ``intervals(fit, which = "var-cov")`` (:mod:`hierlmm.engines.reml.variance_intervals`)."""
        return varcorr_intervals(self, level)

    # ---- random effects ------------------------------------------------------------------------------------------
    @cached_property
    def _subject_effects(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stacked b_i (M, Q), the chapter's cov (M, Q, Q) and D_i (Q, Q) of every subject."""
        s, st, Lam = self.stats, self.state, self.state.Lambda
        Ztr = s.Zty - s.ZtX @ st.beta  # (M, Q)
        A_inv = np.linalg.inv(st.A)
        LAL = np.einsum("ab,mbc,dc->mad", Lam, A_inv, Lam)  # Lambda A^-1 Lambda'
        b = np.einsum("mab,mb->ma", LAL, Ztr)
        H = np.einsum("mab,mbp->map", LAL, s.ZtX)  # D Z'V^-1 X  (M, Q, p)
        first = Lam @ Lam.T - LAL
        cov = st.sigma2 * (first - np.einsum("map,pr,mbr->mab", H, np.linalg.inv(st.XtWX), H))
        return b, cov, st.sigma2 * Lam @ Lam.T

    def ranef(self) -> dict[str, RandomEffects]:
        """Empirical-Bayes random effects of every grouping factor, with the chapter's covariance."""
        b, cov, D_stacked = self._subject_effects
        out: dict[str, RandomEffects] = {}
        for lay in self.stats.layouts:
            block = self.design.blocks[lay.block]
            mean = np.zeros((block.n_levels, block.q))
            c = np.zeros((block.n_levels, block.q, block.q))
            for slot in range(lay.n_slots):
                subjects = np.flatnonzero(lay.slot_level[:, slot] >= 0)
                levels = lay.slot_level[subjects, slot]
                sl = slice(lay.offset + slot * lay.q, lay.offset + (slot + 1) * lay.q)
                mean[levels] = b[subjects, sl]
                c[levels] = cov[subjects, sl, sl]
            Db = D_stacked[lay.offset : lay.offset + lay.q, lay.offset : lay.offset + lay.q]
            out[block.factor] = random_effects(block, mean, c, Db[None] - c)
        return out

    def _status_line(self) -> str:
        status = "converged" if self.optimizer.converged else "NOT converged (see the warning)"
        line = (f"Optimizer: {status}; {self.optimizer.n_evaluations} evaluations, scaled gradient "
                f"{self.optimizer.scaled_gradient:.1e}, {self.seconds:.3f} s")
        if self.optimizer.boundary:
            line += f"\nBoundary (singular) fit: {', '.join(self.optimizer.boundary)} estimated as 0"
        return line

    def __repr__(self) -> str:
        return (f"<MLFit {self.method} {self.design.spec.formula!r}: n={self.design.n_obs}, "
                f"logLik={self.loglik:.3f}, converged={self.optimizer.converged}>")

    # ---- implied marginal model ----------------------------------------------------------------------------------
    def subjects(self) -> tuple[str, ...]:
        """Levels of the outermost grouping factor (the subjects of :meth:`marginal_cov`)."""
        return self.design.blocks[self.stats.subject_block].levels

    def marginal_cov(self, subject: str | int) -> pd.DataFrame:
        """The implied marginal covariance ``V_i = Z_i D Z_i' + sigma^2 I`` of one subject (rows in data order)."""
        levels = self.subjects()
        key = str(subject)
        if key not in levels:
            raise DataError(
                f"{key!r} is not a level of the subject factor "
                f"{self.design.blocks[self.stats.subject_block].factor!r}.",
                given=subject,
                fix=f"Use one of {', '.join(levels[:5])}, ... ({len(levels)} levels).",
            )
        i = levels.index(key)
        rows = np.flatnonzero(self.stats.subject_index == i)
        Zi = self.stats.Zs[rows]
        Lam = self.state.Lambda
        V = self.state.sigma2 * (Zi @ Lam @ Lam.T @ Zi.T + np.eye(rows.size))
        index = self.design.rows[rows]
        return pd.DataFrame(V, index=index, columns=index)


def build_fit(
    design: Design, method: str, layout: ThetaLayout, stats: SubjectStats, theta: np.ndarray,
    report: OptimizerReport, seconds: float,
) -> MLFit:
    """Assemble an :class:`MLFit` at ``theta`` (natural scale)."""
    Lam = stack_factors(stats, layout.factors(theta, log_diagonal=False))
    state = evaluate(stats, Lam, method == "REML")
    return MLFit(design, method, layout, stats, theta, state, report, seconds)


def fit_ml(design: Design, method: str | None = None, *, start: np.ndarray | None = None) -> MLFit:
    """Fit a design by ML or REML (default: the spec's method), optionally from a starting ``theta``
    (log-Cholesky scale, see :mod:`hierlmm.structures.random_effects`)."""
    method = (method or design.spec.method).upper()
    if method not in ("REML", "ML"):
        raise SpecError("Unknown estimation method.", given=method, fix="Use 'REML' or 'ML'.")
    t0 = time.perf_counter()
    theta, layout, stats, report = optimize_theta(design, method, start)
    return build_fit(design, method, layout, stats, theta, report, time.perf_counter() - t0)
