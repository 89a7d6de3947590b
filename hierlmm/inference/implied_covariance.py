"""The marginal structure a fitted mixed model implies: ``V_i``, its correlations, the variance function, the ICC.

Works for ML/REML fits (one value) and Bayesian fits (one value per posterior draw, summarised with credible
intervals), of the hierarchical model or of the marginal model (``kind="marginal"``, where D may be
indefinite), and for fits with serially correlated and/or heteroscedastic errors (``correlation=``, ``weights=``;
chapter section 3.6), whose errors add ``sigma^2 S_i R_i S_i`` (:mod:`hierlmm.inference.error_covariance`). Chapter
section
3.3: the hierarchical model implies this marginal model; ML fits only it.

Notation
--------
For rows ``r``, ``s`` with ``z_k(r)`` row ``r`` of block ``k``'s Z and ``g_k(r)`` its level of grouping factor ``k``::

    V[r, s] = sigma^2 [r = s] + sum_k [g_k(r) = g_k(s)] z_k(r)' D_k z_k(s)

(for one subject of a single-factor model ``V_i = Z_i D Z_i' + sigma^2 I``; with serially correlated and/or
heteroscedastic errors ``V_i = Z_i D Z_i' + sigma^2 S_i R_i S_i``, ``S_i`` the rows' SD ratios, ``R_i`` their
correlation). The variance function is the diagonal, ``Var(y(t)) = z(t)' D z(t) + sigma^2``; the correlation of ``y(t)``
and ``y(s)`` is ``V[t, s] / sqrt(V[t, t] V[s, s])``. For a random intercept the intra-class correlation is ``ICC = D_00
/ (D_00 + sigma^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, grouping_labels, new_model_matrices
from hierlmm.engines.bayes.posterior_tree import block_factors
from hierlmm.errors import DataError, NotSupportedError
from hierlmm.inference.error_covariance import error_covariance, has_error_structure, subject_rows


def covariance_draws(fit: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """Every block's ``D_k`` and ``sigma``: (S, q, q) per block and (S,), with S = 1 for an ML/REML fit."""
    if getattr(fit, "kind", "hierarchical") == "marginal":  # one block; D may be indefinite
        if hasattr(fit, "tree"):
            post = fit.tree["posterior"]
            D = post["D"].values
            return [D.reshape(-1, *D.shape[2:])], post["sigma"].values.reshape(-1)
        return [np.asarray(fit.D[0])[None]], np.array([fit.sigma])
    if hasattr(fit, "tree"):  # a BayesFit
        post = fit.tree["posterior"].to_dataset()
        C, S = post.sizes["chain"], post.sizes["draw"]
        factors = block_factors(fit.bayes_model, post)
        Ds = [(Lk @ np.swapaxes(Lk, -1, -2)).reshape(C * S, *Lk.shape[2:]) for Lk in factors]
        return Ds, post["sigma"].values.reshape(C * S)
    return [np.asarray(D)[None] for D in fit.D], np.array([fit.sigma])


@dataclass(frozen=True)
class ImpliedCovariance:
    """The implied covariance of some rows, per draw.

    Attributes
    ----------
    rows
        The rows ``V`` refers to (the training rows of a subject, or new data such as a time grid).
    V
        (S, n, n): one matrix for an ML/REML fit (S = 1), one per posterior draw for a Bayesian fit.
    """

    rows: pd.DataFrame
    V: np.ndarray

    @property
    def correlation(self) -> np.ndarray:
        """(S, n, n) correlation matrices."""
        sd = np.sqrt(np.diagonal(self.V, axis1=-2, axis2=-1))
        return self.V / (sd[..., :, None] * sd[..., None, :])

    @property
    def variance(self) -> np.ndarray:
        """(S, n) the variance function at the rows."""
        return np.diagonal(self.V, axis1=-2, axis2=-1).copy()

    def summary(self, which: str = "V", ci_prob: float = 0.95) -> dict[str, np.ndarray]:
        """Posterior mean and equal-tailed ``ci_prob`` interval of ``V``, ``correlation`` or ``variance``
        (for an ML/REML fit all three are the estimate)."""
        values = {"V": self.V, "correlation": self.correlation, "variance": self.variance}[which]
        tail = (1 - ci_prob) / 2
        return {"mean": values.mean(axis=0), "lower": np.quantile(values, tail, axis=0),
                "upper": np.quantile(values, 1 - tail, axis=0)}

    def is_positive_definite(self) -> np.ndarray:
        """(S,) whether each ``V`` is positive definite (smallest eigenvalue > 0)."""
        return np.linalg.eigvalsh(self.V)[:, 0] > 0


def _assemble(Zs: list[np.ndarray], groups: list[np.ndarray], Ds: list[np.ndarray], errors: np.ndarray,
              ) -> np.ndarray:
    """``sum_k [same level] Z_k D_k Z_k'`` plus the errors' covariance ``errors`` (S, n, n)."""
    V = np.array(errors, dtype=float)
    for Z, g, D in zip(Zs, groups, Ds, strict=True):
        same = (g[:, None] == g[None, :]).astype(float)
        V = V + np.einsum("ra,sab,tb->srt", Z, D, Z) * same
    return V


def implied_covariance(fit: Any, subject: str | None = None, rows: pd.DataFrame | None = None) -> ImpliedCovariance:
    """``V`` (see the module notation) of one subject's training rows, or of new rows (e.g. a time grid).

    Parameters
    ----------
    fit
        An ML/REML fit or a Bayesian fit; with serially correlated and/or heteroscedastic errors (a
        ``CorrelatedFit`` or ``CorrelatedBayesFit``) the errors' block is ``sigma^2 S_i R_i S_i``.
    subject
        A level of the outermost grouping factor: its rows in the data the fit was built from (with their times
        and variance covariates).
    rows
        New data with every column the model uses (the response may be absent): ``V`` of these rows, rows sharing
        a level sharing its random effects. With correlated errors the new rows also need the correlation's time
        column (``form = ~ 1 | g``: their positions within the subject, in row order, are the times) and with a
        variance function its covariate and strata (strata the fit saw).

    Raises
    ------
    DataError
        Neither or both of ``subject`` and ``rows``, an unknown subject, a column missing from ``rows``, a stratum
        of the variance function the fit did not see.
    """
    design: Design = fit.design
    Ds, sigma = covariance_draws(fit)
    if (subject is None) == (rows is None):
        raise DataError("Give either subject= or rows=.", given={"subject": subject, "rows": rows is not None},
                        fix="implied_covariance(fit, subject='450') or implied_covariance(fit, rows=grid).")
    if subject is not None:
        idx = subject_rows(design, subject)
        Zs = [b.Z[idx] for b in design.blocks]
        groups = [b.group_index[idx] for b in design.blocks]
        frame = pd.DataFrame({"row": design.rows[idx]})
    else:
        data = rows.reset_index(drop=True)
        _, Zs = new_model_matrices(design, data)
        groups = [np.asarray(grouping_labels(data, b.grouping)) for b in design.blocks]
        frame = data
    if has_error_structure(fit):
        errors = error_covariance(fit, subject=subject, rows=None if rows is None else frame)
    else:
        errors = (sigma**2)[:, None, None] * np.eye(len(frame))
    return ImpliedCovariance(frame, _assemble(Zs, groups, Ds, errors))


def icc(fit: Any, ci_prob: float = 0.95) -> pd.DataFrame:
    """Intra-class correlation ``D_00 / (D_00 + sigma^2)`` of every block with a random intercept: the estimate
    (ML/REML) or the posterior mean and interval (Bayesian)."""
    design: Design = fit.design
    if has_error_structure(fit):
        raise NotSupportedError("The ICC D_00 / (D_00 + sigma^2) assumes independent errors of one variance; with "
                                "serially correlated or heteroscedastic errors the correlation of two visits depends "
                                "on their times and strata.", given=type(fit).__name__,
                                fix="Read it from hierlmm.implied_covariance(fit, subject=...).correlation (or "
                                    "rows= for chosen times).")
    Ds, sigma = covariance_draws(fit)
    out = []
    tail = (1 - ci_prob) / 2
    for block, D in zip(design.blocks, Ds, strict=True):
        if "(Intercept)" not in block.effect_names:
            continue
        j = block.effect_names.index("(Intercept)")
        value = D[:, j, j] / (D[:, j, j] + sigma**2)
        out.append({"factor": block.factor, "icc": value.mean(), "lower": np.quantile(value, tail),
                    "upper": np.quantile(value, 1 - tail)})
    return pd.DataFrame(out).set_index("factor") if out else pd.DataFrame(columns=["icc", "lower", "upper"])
