"""Shrinkage (partial pooling, chapter 3.4): each subject's own least-squares coefficients next to its empirical-Bayes
(REML) or posterior-mean (Bayes) coefficients, and the population coefficients they are pulled towards.

Notation
--------
For the grouping factor of one block, subject ``i`` has rows ``y_i``, ``X_i``, ``Z_i`` (``q`` random effects). The
subject's coefficients are ``theta_i = beta_Z + b_i``, where ``beta_Z`` holds the fixed effects named like the
columns of ``Z`` (``"(Intercept)"``, ``"obstime"``; 0 for a random effect with no such fixed effect) and ``b_i`` its
random effects. The remaining fixed-effect columns ``X_i^o`` (between-subject covariates, interactions such as
``obstime:drug``) are an offset:

- **no pooling** (nlme's ``lmList`` when every fixed effect has a random counterpart): the least-squares fit of
  ``y_i - X_i^o beta_o`` on ``Z_i`` alone,
  ``theta_i_OLS = (Z_i' Z_i)^-1 Z_i' (y_i - X_i^o beta_o)``; it needs ``n_i >= q`` rows and ``Z_i`` of full column
  rank. A subject without it is reported (``Shrinkage.too_few``), never dropped silently.
- **partial pooling**: ``theta_i_EB = beta_Z + b_i`` with the empirical-Bayes ``b_i = D Z_i' V_i^-1 (y_i - X_i beta)``
  (REML/ML: ``fit.ranef()``), or the posterior means of ``beta_Z`` and ``b_i`` (Bayes: ``theta`` integrated out);
- **complete pooling**: ``beta_Z`` (the population).

With iid errors, ``V_i = Z_i D Z_i' + sigma^2 I``, ``b_i = (D^-1 + Z_i'Z_i / sigma^2)^-1 Z_i'Z_i / sigma^2
(theta_i_OLS - beta_Z)``: the EB estimate is a matrix-weighted average of the subject's own estimate and the
population, close to the first when the subject has many rows or ``D`` is large against ``sigma^2 (Z_i'Z_i)^-1``.
For a random intercept the weight is the scalar ``n_i d / (n_i d + sigma^2)`` in (0, 1)
(``Shrinkage.shrinkage_factor``).
With more than one grouping factor, the other factors' predicted effects are part of the offset as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.design.design import RandomEffectsBlock
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import NotSupportedError, SpecError


@dataclass(frozen=True)
class Shrinkage:
    """Subjects' no-pooling and partial-pooling coefficients of one grouping factor (see the module notation).

    Attributes
    ----------
    factor
        The grouping factor.
    effect_names
        The random effects (columns of ``Z``).
    ols
        Levels x effects: ``theta_i_OLS`` (NaN for the subjects in ``too_few``).
    eb
        Levels x effects: ``theta_i_EB`` (REML/ML) or the posterior mean of ``beta_Z + b_i`` (NUTS).
    population
        ``beta_Z``, by effect (posterior mean for NUTS).
    n_rows
        Rows per level.
    too_few
        Levels without least-squares estimates (``n_i < q`` or ``Z_i`` rank-deficient).
    engine
        ``"REML"``, ``"ML"`` or ``"NUTS"``.
    """

    factor: str
    effect_names: tuple[str, ...]
    ols: pd.DataFrame
    eb: pd.DataFrame
    population: pd.Series
    n_rows: pd.Series
    too_few: tuple[str, ...]
    engine: str

    @property
    def n_too_few(self) -> int:
        """How many levels have no least-squares estimates."""
        return len(self.too_few)

    @property
    def shrinkage_factor(self) -> pd.DataFrame:
        """Per level and effect, ``(theta_EB - beta_Z) / (theta_OLS - beta_Z)``: the fraction of the subject's own
        departure from the population that partial pooling keeps (in (0, 1) for a random intercept); NaN where the
        least-squares estimate equals the population value (no departure to keep)."""
        departure = self.ols - self.population
        return (self.eb - self.population) / departure.where(departure != 0)

    @property
    def caption(self) -> str:
        """Where the estimates come from, and how many levels have no least-squares fit."""
        eb = "posterior means" if self.engine == "NUTS" else "empirical-Bayes estimates"
        text = (f"{self.factor}: per-level least squares (no pooling) -> {eb} of beta_Z + b_i ({self.engine}, partial "
                f"pooling); population beta_Z marked.")
        if self.too_few:
            text += (f" {self.n_too_few} of {len(self.eb)} levels have too few rows for least squares "
                     f"(n_i < {len(self.effect_names)} or Z_i rank-deficient): shown with their {eb} only.")
        return text


def _choose_block(fit: Any, block: str | int | None) -> int:
    blocks = fit.design.blocks
    names = [b.factor for b in blocks]
    if block is None:
        if len(blocks) != 1:
            raise NotSupportedError(
                f"The fit has {len(blocks)} grouping factors: shrinkage is drawn for one at a time.",
                given=names, fix=f"Choose one with block=, e.g. block={names[-1]!r}.")
        return 0
    if isinstance(block, int | np.integer) and not isinstance(block, bool) and 0 <= block < len(blocks):
        return int(block)
    if isinstance(block, str) and block in names:
        return names.index(block)
    raise SpecError("block must name a grouping factor of the fit (or be its position).", given=block,
                    fix=f"Use one of {names}.")


def _ranef_means(fit: Any) -> dict[str, pd.DataFrame]:
    """Each factor's b_i (levels x effects): EB estimates, or posterior means."""
    ranef = fit.ranef()
    if isinstance(fit, PosteriorResult):
        return {factor: pd.DataFrame({name: table[(name, "mean")] for name in dict.fromkeys(
            table.columns.get_level_values(0))}) for factor, table in ranef.items()}
    return {factor: table.mean for factor, table in ranef.items()}


def shrinkage(fit: Any, block: str | int | None = None) -> Shrinkage:
    """Least-squares, empirical-Bayes (or posterior-mean) and population coefficients of every level of one
    grouping factor (module notation).

    Parameters
    ----------
    fit
        An ML/REML (``hierlmm.fit``) or Bayesian (``hierlmm.fit_bayes``) fit of the hierarchical model.
    block
        The grouping factor (name or position); needed when the fit has several.

    Returns
    -------
    Shrinkage

    Raises
    ------
    NotSupportedError
        A marginal-model fit (no random effects), a fit with several grouping factors and no ``block``, or not a
        hierlmm fit.
    SpecError
        ``block`` names no grouping factor of the fit.
    """
    if not isinstance(fit, REMLResult | PosteriorResult):
        raise NotSupportedError("shrinkage needs a fit made by hierlmm.fit (ML/REML) or hierlmm.fit_bayes (NUTS).",
                                given=type(fit).__name__, fix="Pass the result of hierlmm.fit or hierlmm.fit_bayes.")
    if fit.kind == "marginal":
        raise NotSupportedError(
            "The marginal model has no random effects b_i, so there is nothing to shrink: D is only a parameter of "
            "V_i and may be indefinite.", given="kind='marginal'",
            fix="Fit the hierarchical model (kind='hierarchical') to see partial pooling.")
    design = fit.design
    k = _choose_block(fit, block)
    chosen: RandomEffectsBlock = design.blocks[k]
    beta = np.asarray(fit.beta, dtype=float)
    fixef = dict(zip(design.fixef_names, range(design.p), strict=True))
    matched = [fixef.get(name) for name in chosen.effect_names]
    population = np.array([beta[j] if j is not None else 0.0 for j in matched])
    other = np.ones(design.p, dtype=bool)
    other[[j for j in matched if j is not None]] = False
    offset = design.X[:, other] @ beta[other]
    means = _ranef_means(fit)
    for j, blk in enumerate(design.blocks):
        if j != k:  # the other factors' predicted effects are part of the offset (module notation)
            b = means[blk.factor].to_numpy()
            offset = offset + np.einsum("nq,nq->n", blk.Z, b[blk.group_index])
    target = design.y - offset
    q = chosen.q
    ols = np.full((chosen.n_levels, q), np.nan)
    n_rows = np.bincount(chosen.group_index, minlength=chosen.n_levels)
    order = np.argsort(chosen.group_index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(n_rows)])
    too_few = []
    for i in range(chosen.n_levels):
        rows = order[starts[i]:starts[i + 1]]
        Z_i = chosen.Z[rows]
        if rows.size < q or np.linalg.matrix_rank(Z_i) < q:
            too_few.append(chosen.levels[i])
            continue
        ols[i] = np.linalg.lstsq(Z_i, target[rows], rcond=None)[0]
    index = pd.Index(chosen.levels, name=chosen.factor)
    columns = list(chosen.effect_names)
    b = means[chosen.factor].reindex(index)[columns].to_numpy()
    return Shrinkage(chosen.factor, tuple(columns), pd.DataFrame(ols, index=index, columns=columns),
                     pd.DataFrame(b + population, index=index, columns=columns),
                     pd.Series(population, index=columns, name="population"),
                     pd.Series(n_rows, index=index, name="n_rows"), tuple(too_few), str(fit.method))
