"""What every ML/REML result shares: the :class:`~hierlmm.engines.fit_result.FitResult` interface, built once from
each kind's own estimates.

A result class (:class:`~hierlmm.engines.reml.ml_fit.MLFit`, :class:`~hierlmm.engines.reml.crossed_fit.CrossedFit`,
:class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit`, :class:`~hierlmm.engines.reml.marginal_model.MarginalFit`)
derives from :class:`REMLResult` and provides ``design``, ``method``, ``beta``, ``cov_beta``, ``D`` (a tuple, one
matrix per block), ``sigma``, ``loglik``, ``converged``, ``n_theta`` (its number of covariance parameters besides
``sigma``) and ``ranef()``; this class derives the rest: AIC and BIC, nlme's fixed-effects table, the variance
components, fitted values, residuals (nlme's response, pearson and normalized types) and the printed summary
(predictions: :func:`hierlmm.predict`). A kind with an error structure overrides :meth:`REMLResult.error_sd` and
:meth:`REMLResult.decorrelate`.

Notation
--------
Counted as nlme counts them: ``n_params = p + n_theta + 1`` (fixed effects, covariance parameters, ``sigma``);
``AIC = -2 l + 2 n_params``; ``BIC = -2 l + log(n) n_params`` with ``n = N - p`` under REML and ``N`` under ML.
Empirical-Bayes random effects (chapter 3.4), for subject ``i`` with ``r_i = y_i - X_i beta``:
``b_i = D Z_i' V_i^-1 r_i``, the chapter's ``Var(b_i) = D Z_i' K_i Z_i D`` with
``K_i = V_i^-1 - V_i^-1 X_i (sum_j X_j' V_j^-1 X_j)^-1 X_i' V_i^-1``, and the prediction-error covariance
``Var(b_i - b_i_hat) = D - D Z_i' K_i Z_i D``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.stats

from hierlmm.design.design import Design, RandomEffectsBlock
from hierlmm.engines.fit_result import check_level, check_residual_type
from hierlmm.engines.reml.covariance_parameters import CovarianceParameters, ErrorModel, covariance_parameters
from hierlmm.engines.reml.denominator_df import DDF_METHODS, ParameterInformation, parameter_information
from hierlmm.engines.reml.t_table import fixef_table, nlme_fixed_df, nlme_term_df
from hierlmm.errors import NotSupportedError, SpecError
from hierlmm.structures.random_effects import correlated_pairs, sd_corr

_STRUCTURE = {
    "pdSymm": "General positive-definite, Log-Cholesky parametrization",
    "pdDiag": "Diagonal",
    "pdIdent": "Multiple of an Identity",
    "pdCompSymm": "Compound Symmetry",
}


def structure_label(block: RandomEffectsBlock) -> str:
    """nlme's name of a block's structure (``Structure:`` line of ``print.lme``)."""
    if block.structure != "pdBlocked":
        return _STRUCTURE.get(block.structure, block.structure)
    parts, first = [], 0
    for structure, q in block.parts:
        parts.append(f"{_STRUCTURE.get(structure, structure)} for {', '.join(block.effect_names[first:first + q])}")
        first += q
    return "Blocked: " + "; ".join(parts)


@dataclass(frozen=True, eq=False)
class RandomEffects:
    """Empirical-Bayes random effects of one grouping factor (see the module notation).

    Attributes
    ----------
    factor
        Grouping factor.
    mean
        DataFrame (levels x effects) of the posterior means ``b_i``.
    cov_estimator
        (levels, q, q): the chapter's ``D Z_i' K Z_i D``.
    cov_prediction
        (levels, q, q): ``D - D Z_i' K Z_i D``, the prediction-error covariance.
    """

    factor: str
    mean: pd.DataFrame
    cov_estimator: np.ndarray
    cov_prediction: np.ndarray

    def intervals(self, level: float = 0.95) -> pd.DataFrame:
        """Pointwise prediction intervals ``b_i +- z * sqrt(diag(cov_prediction))``."""
        z = scipy.stats.norm.ppf(0.5 + level / 2)
        se = np.sqrt(np.clip(np.diagonal(self.cov_prediction, axis1=1, axis2=2), 0, None))
        frames = {}
        for j, name in enumerate(self.mean.columns):
            frames[(name, "estimate")] = self.mean[name]
            frames[(name, "lower")] = self.mean[name] - z * se[:, j]
            frames[(name, "upper")] = self.mean[name] + z * se[:, j]
        return pd.DataFrame(frames, index=self.mean.index)


def random_effects(block: RandomEffectsBlock, mean: np.ndarray, cov_estimator: np.ndarray,
                   cov_prediction: np.ndarray) -> RandomEffects:
    """A block's :class:`RandomEffects` from arrays ordered like its levels."""
    frame = pd.DataFrame(mean, index=pd.Index(block.levels, name=block.factor), columns=block.effect_names)
    return RandomEffects(block.factor, frame, cov_estimator, cov_prediction)


class REMLResult:
    """The :class:`~hierlmm.engines.fit_result.FitResult` interface from a result's own estimates (see the module
    docstring for what a subclass provides)."""

    design: Design
    method: str
    kind: ClassVar[str] = "hierarchical"
    title: ClassVar[str] = "Linear mixed-effects model"

    # fixed-effects degrees of freedom: nlme's between/within rule, or N - p (crossed factors, nlme's gls)
    df_rule: ClassVar[str] = "nlme"

    # ---- provided by each kind ---------------------------------------------------------------------------------
    @property
    def n_theta(self) -> int:
        """Number of covariance parameters besides ``sigma`` (random effects, correlation, variance function): the
        size of the result's ``theta`` unless the kind says otherwise."""
        return int(self.theta.size)

    def ranef(self) -> dict[str, RandomEffects]:
        """Empirical-Bayes random effects of every grouping factor (see the module notation)."""
        raise NotImplementedError

    # ---- derived ---------------------------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, covariance parameters and sigma (as nlme)."""
        return self.design.p + self.n_theta + 1

    @property
    def aic(self) -> float:
        """Akaike's information criterion, ``-2 logLik + 2 n_params``."""
        return float(-2 * self.loglik + 2 * self.n_params)

    @property
    def bic(self) -> float:
        """Bayesian information criterion, ``-2 logLik + log(n) n_params`` (REML: ``n = N - p``, as nlme)."""
        n = self.design.n_obs - (self.design.p if self.method == "REML" else 0)
        return float(-2 * self.loglik + np.log(n) * self.n_params)

    @cached_property
    def df(self) -> np.ndarray:
        """Denominator degrees of freedom of each fixed effect: nlme's between/within rule, or ``N - p`` where the
        kind's ``df_rule`` says ``"residual"``."""
        if self.df_rule == "residual":
            return np.full(self.design.p, self.design.n_obs - self.design.p)
        return nlme_fixed_df(self.design)

    @cached_property
    def term_df(self) -> dict[int, float]:
        """Denominator degrees of freedom of every term of the fixed part (keyed by ``design.assign``): nlme's rule,
        or ``N - p`` where the kind's ``df_rule`` says ``"residual"``."""
        if self.df_rule == "residual":
            return {t: float(self.design.n_obs - self.design.p) for t in dict.fromkeys(self.design.assign)}
        return nlme_term_df(self.design)

    def error_model(self) -> ErrorModel:
        """The within-subject errors' relative covariance as a function of their parameters
        (:class:`~hierlmm.engines.reml.covariance_parameters.ErrorModel`): ``I`` unless the kind has an error
        structure."""
        return ErrorModel()

    @cached_property
    def covariance_parameters(self) -> CovarianceParameters:
        """``V(phi)``, the implied covariance as a function of the covariance parameters
        (:mod:`hierlmm.engines.reml.covariance_parameters`)."""
        return covariance_parameters(self.design, self.D, self.sigma, self.error_model())

    @cached_property
    def parameter_information(self) -> ParameterInformation:
        """How ``cov(beta)`` and the deviance move with the covariance parameters: what Satterthwaite's and Kenward
        and Roger's degrees of freedom need (:mod:`hierlmm.engines.reml.denominator_df`)."""
        return parameter_information(self.covariance_parameters, self.design.y, self.design.X, self.method)

    def check_ddf(self, ddf: str) -> None:
        """Refuse an unknown ``ddf`` method, and Kenward-Roger on an ML fit."""
        if ddf not in DDF_METHODS:
            raise SpecError("Unknown method for the denominator degrees of freedom.", given=ddf,
                            fix="Use ddf='nlme' (nlme's between/within rule), 'satterthwaite' (lmerTest's) or "
                                "'kenward-roger' (pbkrtest's).")
        if ddf == "kenward-roger" and self.method != "REML":
            raise NotSupportedError("Kenward and Roger's adjustment is defined for REML fits (its bias correction "
                                    "of cov(beta) is derived from the restricted likelihood); this fit is ML.",
                                    given={"method": self.method, "ddf": ddf},
                                    fix="Refit with method='REML', or use ddf='satterthwaite' (defined for ML too).")

    def fixef(self, ddf: str = "nlme") -> pd.DataFrame:
        """The fixed-effects table: Value, Std.Error, DF, t-value, p-value, indexed by R's column names.

        ``ddf="nlme"`` (default) is nlme's table (``summary(lme)``); ``"satterthwaite"`` lmerTest's
        (``summary(lmer, ddf = "Satterthwaite")``: ``Phi = (X'V^-1X)^-1``, per-coefficient Satterthwaite DF);
        ``"kenward-roger"`` lmerTest's ``ddf = "Kenward-Roger"`` (the adjusted standard errors of ``Phi_A`` and
        Kenward and Roger's DF; REML only). See :mod:`hierlmm.engines.reml.denominator_df`.
        """
        self.check_ddf(ddf)
        if ddf == "nlme":
            return fixef_table(self.design, self.beta, self.cov_beta, self.df)
        info = self.parameter_information
        unit = np.eye(self.design.p)
        if ddf == "satterthwaite":
            return fixef_table(self.design, info.beta, info.Phi, [info.satterthwaite_df(e) for e in unit])
        return fixef_table(self.design, info.beta, info.Phi_adjusted,
                           [info.kenward_roger(e[None])[1] for e in unit])

    def varcorr(self) -> dict[str, pd.DataFrame]:
        """Per grouping factor: the variances, SDs and correlations of the random effects; ``"Residual"``: sigma.

        Correlations with a 0 SD are 0 (:func:`~hierlmm.structures.random_effects.sd_corr`). A negative variance (the
        marginal model) has no SD: its ``StdDev`` and correlations are NaN.
        """
        out: dict[str, pd.DataFrame] = {}
        for block, D in zip(self.design.blocks, self.D, strict=True):  # the chapter's D
            variance = np.diag(D)
            sd, corr = sd_corr(D)
            negative = variance < 0
            sd = np.where(negative, np.nan, sd)
            corr = np.where(negative[:, None] | negative[None, :], np.nan, corr)
            np.fill_diagonal(corr, 1.0)
            frame = pd.DataFrame(corr, index=block.effect_names, columns=block.effect_names)
            frame.insert(0, "StdDev", sd)
            frame.insert(0, "Variance", variance)
            out[block.factor] = frame
        out["Residual"] = pd.DataFrame({"Variance": [self.sigma**2], "StdDev": [self.sigma]}, index=["Residual"])
        return out

    def fitted(self, level: int = 1) -> np.ndarray:
        """Fitted values: ``level=0`` the population mean ``X beta``, ``level=1`` adds every block's ``Z b``."""
        check_level(level)
        if level == 0:
            return self.design.conditional_mean(self.beta)
        return self.design.conditional_mean(self.beta, [e.mean.to_numpy() for e in self.ranef().values()])

    def residuals(self, level: int = 1, type: str = "response") -> np.ndarray:
        """nlme's ``resid(fit, level = level, type = type)`` (module notation of
        :mod:`hierlmm.engines.fit_result`).

        ``type="response"``: ``e = y - fitted(level)``; ``"pearson"``: ``e / error_sd()``; ``"normalized"``: the
        pearson residuals with the error correlation removed, ``L_i^-1`` per subject (:meth:`decorrelate`), at
        either level. nlme's prefixes (``"r"``, ``"p"``, ``"n"``) are accepted.

        Raises
        ------
        SpecError
            An unknown ``type``.
        DataError
            A level other than 0 or 1.
        NotSupportedError
            ``level=1`` on the marginal model (no random effects).
        """
        kind = check_residual_type(type)
        check_level(level)
        e = self.design.y - self.fitted(level)
        if kind == "response":
            return e
        pearson = e / self.error_sd()
        return pearson if kind == "pearson" else self.decorrelate(pearson)

    def error_sd(self) -> np.ndarray:
        """Every row's error SD, ``sigma s_r`` (``s_r`` the variance function's SD ratio; ``sigma`` without one)."""
        return np.full(self.design.n_obs, float(self.sigma))

    def decorrelate(self, values: np.ndarray) -> np.ndarray:
        """``L_i^-1 v_i`` for every subject ``i`` (``R_i = L_i L_i'``, the error correlation): ``values`` as they
        are for independent errors."""
        return np.asarray(values, dtype=float)

    # ---- the printout ----------------------------------------------------------------------------------------------
    def summary(self, data_name: str | None = None, ddf: str = "nlme") -> str:
        """An nlme-like printout (``summary(lme(...))``): fit criteria, random effects, error structure, fixed
        effects (with the t-table of :meth:`fixef` for ``ddf``), counts and the optimiser's verdict."""
        lines = [f"{self.title} fit by {self.method}"]
        if data_name:
            lines.append(f"  Data: {data_name}")
        lines += [f"  {'AIC':>10} {'BIC':>10} {'logLik':>10}",
                  f"  {self.aic:10.3f} {self.bic:10.3f} {self.loglik:10.3f}", ""]
        lines += self._random_effects_lines()
        lines += self._error_structure_lines()
        table = self.fixef(ddf)
        label = {"nlme": "", "satterthwaite": " (Satterthwaite's DF)",
                 "kenward-roger": " (Kenward-Roger's adjusted SE and DF)"}[ddf]
        lines += ["", f"Fixed effects:  {self.design.spec.fixed_formula}{label}"]
        width = max(len(n) for n in table.index)
        df_width = 5 if ddf == "nlme" else 9
        lines.append(f" {'':<{width}} {'Value':>11} {'Std.Error':>10} {'DF':>{df_width}} {'t-value':>9} "
                     f"{'p-value':>8}")
        for name, row in table.iterrows():
            df_cell = f"{int(row['DF']):5d}" if ddf == "nlme" else f"{row['DF']:9.2f}"
            lines.append(f" {name:<{width}} {row['Value']:11.6f} {row['Std.Error']:10.6f} {df_cell} "
                         f"{row['t-value']:9.4f} {row['p-value']:8.4f}")
        lines += ["", f"Number of Observations: {self.design.n_obs}"]
        lines.append("Number of Groups: " + ", ".join(f"{b.factor} {b.n_levels}" for b in self.design.blocks))
        if self.design.missing.n_dropped:
            lines.append(f"Missing values: {self.design.missing}")
        lines.append(self._status_line())
        return "\n".join(lines)

    def _random_effects_lines(self) -> list[str]:
        """The ``Random effects:`` block: per grouping factor its formula, structure, SDs and correlations."""
        lines = ["Random effects:"]
        for block, D in zip(self.design.blocks, self.D, strict=True):  # the chapter's D
            sd, corr = sd_corr(D)
            lines.append(f" Formula: ~{block.effects.deparse()} | {block.factor}")
            lines.append(f" Structure: {structure_label(block)}")
            width = max(11, *(len(n) for n in block.effect_names))
            corr_head = "Corr" if correlated_pairs(block) else ""
            lines.append(f" {'':<{width}} {'StdDev':>10}  {corr_head}")
            for j, name in enumerate(block.effect_names):
                cells = ""
                if corr_head:
                    first = "(Intr)" if block.effect_names[0] == "(Intercept)" else ""
                    cells = " ".join(f"{corr[j, k]:6.3f}" for k in range(j)) if j else first
                lines.append(f" {name:<{width}} {sd[j]:10.7f}  {cells}")
        lines.append(f" {'Residual':<11} {self.sigma:10.7f}")
        return lines

    def _error_structure_lines(self) -> list[str]:
        """Lines on the within-subject errors beyond ``sigma^2 I`` (none for iid errors)."""
        return []

    def _status_line(self) -> str:
        """The optimiser's verdict."""
        return "Optimizer: " + ("converged" if self.converged else "NOT converged (see the warning)")
