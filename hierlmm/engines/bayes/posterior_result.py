"""What every Bayesian result shares: the :class:`~hierlmm.engines.fit_result.BayesResult` interface, read from the
posterior draws of its DataTree.

A result class (:class:`~hierlmm.engines.bayes.bayes_fit.BayesFit` and its correlated-errors subclass,
:class:`~hierlmm.engines.bayes.marginal_model.MarginalBayesFit`) derives from :class:`PosteriorResult` and provides
``design``, ``tree``, ``kind``, the posterior tables (``summary``, ``fixef``, ``varcorr``, ``ranef``) and
``_D_draws()``; this class derives the point summaries (posterior means), fitted values, residuals (nlme's
response, pearson and normalized types, the latter two averaged over the draws) and the mean's draws for new rows
(:func:`mean_draws`, read by :func:`hierlmm.predict`), and refuses what a posterior does not have (a maximised
likelihood, hence AIC and BIC).

Notation
--------
``S`` draws (chains x draws, flattened chain by chain). For new rows with fixed-effects covariates ``X`` and, per
block, random-effects covariates ``Z``: the draws of the mean response are ``X beta_s`` (level 0) and
``X beta_s + Z b_s`` (level 1), ``b_s`` the subject's drawn effects, or for a subject the model was not fitted on
a draw ``b_s ~ N(0, D_s)``. ``predict`` reports their mean, SD and equal-tailed interval.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, grouping_labels, new_model_matrices
from hierlmm.engines.bayes.hierarchical_model import var_name
from hierlmm.engines.bayes.posterior_tree import block_factors
from hierlmm.engines.fit_result import check_level, check_residual_type
from hierlmm.errors import DataError, NotSupportedError
from hierlmm.structures.error_parameters import ErrorParameters


def flat_draws(fit: Any, name: str) -> np.ndarray:
    """A posterior variable's draws with chain and draw flattened: (S, ...)."""
    values = fit.tree["posterior"][name].values
    return values.reshape(-1, *values.shape[2:])


def mean_draws(fit: Any, newdata: pd.DataFrame, level: int = 0, seed: int | np.random.Generator | None = 1
               ) -> np.ndarray:
    """Draws (S, n) of the mean response for ``newdata`` at ``level`` 0 (population) or 1 (subject; see the module
    notation)."""
    check_level(level)
    X, Zs = new_model_matrices(fit.design, newdata)  # the chapter's X
    mu = flat_draws(fit, "beta") @ X.T
    if level == 0:
        return mu
    if fit.kind == "marginal":
        raise NotSupportedError("The marginal model has no random effects, so no subject-level (level=1) "
                                "predictions: D is only a parameter of V_i and may be indefinite.",
                                given="level=1",
                                fix="Use level=0, or fit the hierarchical model (kind='hierarchical').")
    rng = np.random.default_rng(seed)
    post = fit.tree["posterior"].to_dataset()
    factors = [f.reshape(-1, *f.shape[2:]) for f in block_factors(fit.bayes_model, post)]
    for block, Z, L in zip(fit.design.blocks, Zs, factors, strict=True):  # the chapter's Z, D = L L'
        missing = [c for c in block.grouping if c not in newdata.columns]
        if missing:
            raise DataError(f"Level-1 predictions need the grouping column(s) {missing}.",
                            given=list(newdata.columns), fix="Add the subject identifiers, or use level=0.")
        labels = grouping_labels(newdata.reset_index(drop=True), block.grouping)
        index = {lv: k for k, lv in enumerate(block.levels)}
        b_all = flat_draws(fit, var_name("b", block.factor))  # (S, levels, q)
        for label in dict.fromkeys(labels):
            rows = np.array([k for k, lv in enumerate(labels) if lv == label])
            if label in index:
                b = b_all[:, index[label], :]
            else:  # a new subject: b ~ N(0, D) draw by draw
                b = np.einsum("sab,sb->sa", L, rng.standard_normal((L.shape[0], block.q)))
            mu[:, rows] += b @ Z[rows].T
    return mu


class PosteriorResult:
    """The :class:`~hierlmm.engines.fit_result.BayesResult` interface from the posterior draws (see the module
    docstring for what a subclass provides)."""

    design: Design
    tree: Any
    kind: ClassVar[str] = "hierarchical"
    method: ClassVar[str] = "NUTS"

    def _D_draws(self) -> list[np.ndarray]:  # the chapter's D
        """Every block's ``D`` per draw, (S, q, q)."""
        raise NotImplementedError

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior table of every reported parameter (mean, sd, interval, R-hat, ESS, MCSE)."""
        raise NotImplementedError

    def fixef(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior summaries of the fixed effects, indexed by R's column names."""
        table = self.summary(ci_prob).loc[[f"beta[{n}]" for n in self.design.fixef_names]]
        table.index = pd.Index(self.design.fixef_names, name="term")
        return table

    def varcorr(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior summaries of the variance parameters: the random effects' SDs and correlations (the marginal
        model: the entries of D and the ICC), sigma, and any error-structure parameters."""
        table = self.summary(ci_prob)
        return table.loc[[i for i in table.index if not i.startswith("beta[")]]

    @property
    def beta(self) -> np.ndarray:
        """Posterior mean of the fixed effects."""
        return flat_draws(self, "beta").mean(axis=0)

    @property
    def cov_beta(self) -> np.ndarray:
        """Posterior covariance of the fixed effects."""
        return np.atleast_2d(np.cov(flat_draws(self, "beta"), rowvar=False))

    @property
    def D(self) -> tuple[np.ndarray, ...]:  # the chapter's D
        """Posterior mean of every block's ``D``."""
        return tuple(D.mean(axis=0) for D in self._D_draws())

    @property
    def sigma(self) -> float:
        """Posterior mean of the residual SD."""
        return float(flat_draws(self, "sigma").mean())

    @property
    def loglik(self) -> float:
        """Refused: a posterior has no maximised likelihood."""
        raise NotSupportedError(
            "A Bayesian fit has a posterior, not a maximised log-likelihood, so no logLik, AIC or BIC.",
            given=f"a {type(self).__name__}",
            fix="Compare Bayesian fits by their predictive accuracy (hierlmm.loo, hierlmm.compare_models), or fit by "
                "REML/ML for logLik, AIC and BIC.")

    @property
    def aic(self) -> float:
        """Refused: see :attr:`loglik`."""
        return self.loglik

    @property
    def bic(self) -> float:
        """Refused: see :attr:`loglik`."""
        return self.loglik

    def fitted(self, level: int = 1) -> np.ndarray:
        """Posterior mean of the fitted values: ``level=0`` ``X beta``, ``level=1`` adds every block's ``Z b``."""
        check_level(level)
        if level == 0:
            return self.design.conditional_mean(self.beta)
        if self.kind == "marginal":
            raise NotSupportedError("The marginal model has no random effects, so no subject-level fitted values.",
                                    given="level=1", fix="Use level=0, or fit the hierarchical model.")
        effects = [flat_draws(self, var_name("b", block.factor)).mean(axis=0) for block in self.design.blocks]
        return self.design.conditional_mean(self.beta, effects)

    def residuals(self, level: int = 1, type: str = "response") -> np.ndarray:
        """Posterior mean of nlme's residuals of ``type`` at ``level`` (module notation of
        :mod:`hierlmm.engines.fit_result`).

        ``type="response"``: ``y`` minus the posterior mean of the fitted values. ``"pearson"`` and
        ``"normalized"``: computed draw by draw, ``(y - mu_s) / (sigma_s s_r,s)`` and, per subject,
        ``L_i,s^-1`` times those (``R_i,s = L_i,s L_i,s'`` the draw's error correlation), then averaged over the
        draws (module notation). nlme's prefixes (``"r"``, ``"p"``, ``"n"``) are accepted; an unknown type
        (:func:`~hierlmm.engines.fit_result.check_residual_type`), an unknown level and level 1 of the marginal model
        are refused as in :meth:`hierlmm.engines.reml.result.REMLResult.residuals`.
        """
        kind = check_residual_type(type)
        check_level(level)
        fitted = self.fitted(level)  # refuses level 1 of the marginal model
        if kind == "response":
            return self.design.y - fitted
        return self._standardised_residuals(level, kind == "normalized")

    def _standardised_residuals(self, level: int, normalized: bool) -> np.ndarray:
        """Posterior mean of the pearson (or normalized) residuals, draw by draw in chunks (see :meth:`residuals`)."""
        design = self.design
        beta, sigma = flat_draws(self, "beta"), flat_draws(self, "sigma").reshape(-1)
        blocks = () if level == 0 else design.blocks
        effects = [flat_draws(self, var_name("b", block.factor)) for block in blocks]
        errors, batches = self._error_draws(sigma.size)
        total = np.zeros(design.n_obs)
        chunk = max(1, min(250, 2_000_000 // max(design.n_obs, 1)))
        for start in range(0, sigma.size, chunk):
            draws = slice(start, start + chunk)
            mu = beta[draws] @ design.X.T  # (s, n): the chapter's X beta (+ Z b)
            for block, b in zip(blocks, effects, strict=True):
                mu += np.einsum("nq,snq->sn", block.Z, b[draws][:, block.group_index])
            sd = np.broadcast_to(sigma[draws, None], mu.shape).copy()
            part = None if errors is None else errors.draws(draws)
            for batch in batches if part is not None and part.omega is not None else ():
                if batch.M is not None:
                    sd[:, batch.rows] *= part.sd_ratios(batch.M)  # (s, k, n)
            pearson = (design.y - mu) / sd
            if normalized and part is not None and part.structure is not None:
                for batch in batches:
                    L = np.linalg.cholesky(part.matrices(batch.distances, None))  # R (s, k, n, n): sigma = 1
                    pearson[:, batch.rows] = np.linalg.solve(L, pearson[:, batch.rows][..., None])[..., 0]
            total += pearson.sum(axis=0)
        return total / sigma.size

    def _error_draws(self, n_draws: int) -> tuple[ErrorParameters | None, tuple[Any, ...]]:
        """The error model per draw with ``sigma = 1`` (correlation and variance function; None for independent
        errors of one variance) and the model's subject batches (rows, distances, log-SD rows)."""
        model = getattr(self, "bayes_model", None)
        batches = tuple(getattr(model, "batches", ()) or ())
        post = self.tree["posterior"]
        structure = getattr(model, "structure", None)
        if not batches or (structure is None and "omega" not in post):
            return None, ()
        omega = np.asarray(post["omega"].values).reshape(n_draws, -1) if "omega" in post else None
        names = () if structure is None else structure.free_names
        free = {k: np.asarray(post[k].values).reshape(-1) for k in names}
        return ErrorParameters(structure, model.n_max, np.ones(n_draws), omega, free=free), batches
