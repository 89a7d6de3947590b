"""The within-subject error covariance ``sigma^2 S_i R_i S_i`` of a fit, on training or new rows.

For fits with serially correlated and/or heteroscedastic errors (``correlation=``, ``weights=``): a REML/ML
:class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit` (one value) or a Bayesian
:class:`~hierlmm.engines.bayes.correlated_fit.CorrelatedBayesFit` (one value per posterior draw). It completes the
implied marginal covariance ``V_i = Z_i D Z_i' + sigma^2 S_i R_i S_i`` (:func:`hierlmm.implied_covariance`, chapter
section 3.6) and gives the error draws of the posterior predictive (:func:`hierlmm.add_posterior_predictive`) and the SD
ratios of pointwise predictive bands (:func:`hierlmm.trajectories`).

Notation
--------
For rows ``r`` and ``s`` (a subject's training rows, or new rows), with ``g(r)`` the row's subject (the
correlation's grouping factor)::

    E[r, s] = sigma^2 s_r s_s R[r, s] [g(r) = g(s)]

- ``s_r = exp(m_r' omega)`` the SD ratio of row ``r``: ``m_r`` its row of the variance function's ``M``
  (:mod:`hierlmm.structures.variance_functions`; on new rows from
  :meth:`~hierlmm.structures.variance_functions.BoundVarianceFunction.new_rows`,
  with the fitted strata), ``s_r = 1`` without a variance function;
- ``R[r, s]`` the correlation structure (:mod:`hierlmm.structures.serial_correlation`) at ``d = |t_r - t_s|``, ``t`` the
  correlation's time column, or the rows' positions within their subject (in row order) for ``form = ~ 1 | g``;
  ``R = I`` without a structure. ``R`` has a unit diagonal, so ``Var(e_r) = sigma^2 s_r^2``;
- rows of different subjects are independent.

The parameters are the point estimates of a REML/ML fit (``S = 1``) or the posterior draws of a Bayesian fit
(``S`` = chains x draws, in the order of ``posterior`` flattened chain by chain).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, grouping_labels
from hierlmm.engines.bayes.correlated_fit import CHUNK, CorrelatedBayesFit, free_draws
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.errors import DataError, NotSupportedError
from hierlmm.structures.error_parameters import ErrorParameters
from hierlmm.structures.serial_correlation import check_times


def has_error_structure(fit: Any) -> bool:
    """Whether ``fit`` has serially correlated and/or heteroscedastic errors (a CorrelatedFit or CorrelatedBayesFit)."""
    return isinstance(fit, CorrelatedFit | CorrelatedBayesFit)


def error_parameters(fit: Any) -> ErrorParameters:
    """The error model's parameters of a CorrelatedFit (the estimates) or a CorrelatedBayesFit (every draw)."""
    if isinstance(fit, CorrelatedFit):
        omega = fit.omega[None] if fit.variance is not None else None
        return ErrorParameters(fit.structure, fit.n_max, np.array([fit.sigma]), omega,
                               unconstrained=fit._part("correlation"), variance=fit.variance)
    if isinstance(fit, CorrelatedBayesFit):
        bm, post = fit.bayes_model, fit.tree["posterior"]
        sigma = np.asarray(post["sigma"].values, dtype=float).reshape(-1)
        omega = np.asarray(post["omega"].values).reshape(sigma.size, -1) if "omega" in post else None
        free = {k: v.reshape(-1) for k, v in free_draws(bm, post).items()}
        return ErrorParameters(bm.structure, bm.n_max, sigma, omega, free=free, variance=bm.variance)
    raise NotSupportedError("This fit has independent errors of one variance (sigma^2 I): no error structure.",
                            given=type(fit).__name__, fix="Use a fit made with correlation= or weights=.")


def subject_rows(design: Design, subject: Any) -> np.ndarray:
    """Positions among the design's rows of a subject's training rows (a level of the first grouping factor)."""
    block = design.blocks[0]
    key = str(subject)
    if key not in block.levels:
        raise DataError(f"{key!r} is not a level of {block.factor!r}.", given=subject,
                        fix=f"Use one of {', '.join(block.levels[:5])}, ... ({block.n_levels} levels).")
    return np.flatnonzero(block.group_index == block.levels.index(key))


def _training(fit: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Distances (n, n) between a subject's training rows (design positions ``idx``) and their ``M`` rows (n, k)."""
    if isinstance(fit, CorrelatedFit):
        if fit.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches (the times it used).",
                                    given="CorrelatedFit.batches is None",
                                    fix="Refit with hierlmm.fit(..., correlation=..., weights=...).")
        stacks = [(rows, d, None) for rows, d in zip(fit.batches.rows, fit.batches.distances, strict=True)]
        M = None if fit.variance is None else fit.variance.M[idx]
    else:
        stacks = [(b.rows, b.distances, b.M) for b in fit.bayes_model.batches]
        M = None
    for rows, d, batch_M in stacks:
        if rows.shape[1] == idx.size:
            k = np.flatnonzero(rows[:, 0] == idx[0])
            if k.size:
                return d[k[0]], (M if batch_M is None else batch_M[k[0]])
    raise AssertionError("a subject of the design is in no batch")  # pragma: no cover


def _new(fit: Any, params: ErrorParameters, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Distances (n, n), same-subject mask (n, n) and ``M`` rows (n, k) of new rows."""
    n = len(data)
    structure = params.structure
    M = new_log_sd_rows(fit, params, data)
    if structure is None:
        return np.zeros((n, n)), np.eye(n, dtype=bool), M
    labels = np.asarray(grouping_labels(data, (structure.group,)), dtype=object)
    same = labels[:, None] == labels[None, :]
    if structure.time is None:  # positions within the subject, in row order
        t = pd.Series(labels).groupby(labels).cumcount().to_numpy(dtype=float)
    else:
        if structure.time not in data.columns:
            raise DataError(f"The new rows lack the correlation's time column {structure.time!r}.",
                            given=list(data.columns),
                            fix=f"Add {structure.time!r} to the new rows: the correlation of two rows of a subject "
                                "depends on the distance between their times.")
        t = pd.to_numeric(data[structure.time], errors="coerce").to_numpy(dtype=float)
        check_times(structure, t, "new rows")
    return np.abs(t[:, None] - t[None, :]), same, M


def new_log_sd_rows(fit: Any, params: ErrorParameters, data: pd.DataFrame) -> np.ndarray | None:
    """The variance function's ``M`` on new rows (n, k); None without a variance function."""
    if params.omega is None:
        return None
    if params.variance is None or getattr(params.variance, "function", None) is None:
        raise NotSupportedError("The fit's log-SD design was given as a matrix (log_sd_design=(M, names)): there is "
                                "no rule to evaluate it on new rows.", given=type(fit).__name__,
                                fix='Fit with weights="varIdent(form = ~ 1 | g)" (or varPower, varExp) instead.')
    return params.variance.new_rows(data)


def error_covariance(fit: Any, subject: Any = None, rows: pd.DataFrame | None = None) -> np.ndarray:
    """``E = sigma^2 S R S`` (S, n, n) (module notation) of one subject's training rows or of new rows.

    Parameters
    ----------
    fit
        A :class:`~hierlmm.engines.reml.correlated_fit.CorrelatedFit` or
        :class:`~hierlmm.engines.bayes.correlated_fit.CorrelatedBayesFit`.
    subject
        A level of the grouping factor: its rows in the data the fit was built from (the times and variance
        covariates the fit used).
    rows
        New rows: the subject column, the correlation's time column (unless the form is ``~ 1 | g``) and the variance
        function's covariate and strata (strata the fit saw).

    Raises
    ------
    DataError
        Neither or both of ``subject`` and ``rows``, an unknown subject, a column missing from ``rows``, an unseen
        stratum.
    """
    if (subject is None) == (rows is None):
        raise DataError("Give either subject= or rows=.", given={"subject": subject, "rows": rows is not None},
                        fix="error_covariance(fit, subject='450') or error_covariance(fit, rows=grid).")
    params = error_parameters(fit)
    if subject is not None:
        d, M = _training(fit, subject_rows(fit.design, subject))
        return params.matrices(d, M)
    d, same, M = _new(fit, params, rows.reset_index(drop=True))
    return params.matrices(d, M, same)


def sd_ratio_draws(fit: Any, data: pd.DataFrame) -> np.ndarray:
    """The rows' SD ratios ``s_r`` (S, n) on new rows (ones without a variance function), per draw."""
    params = error_parameters(fit)
    data = data.reset_index(drop=True)
    M = new_log_sd_rows(fit, params, data)
    return np.broadcast_to(params.sd_ratios(M) if M is not None else np.ones((1, len(data))),
                           (params.sigma.size, len(data)))


def predictive_errors(fit: CorrelatedBayesFit, rng: np.random.Generator) -> np.ndarray:
    """Draws (S, n_obs) of the errors of the training rows, ``e_i ~ N(0, sigma^2 S_i R_i S_i)`` at every posterior
    draw, by a batched Cholesky factorisation per subject size, ``CHUNK`` draws at a time."""
    params = error_parameters(fit)
    S = params.sigma.size
    out = np.zeros((S, fit.design.n_obs))
    for start in range(0, S, CHUNK):
        chunk = slice(start, start + CHUNK)
        part = params.draws(chunk)
        for batch in fit.bayes_model.batches:
            C = np.linalg.cholesky(part.matrices(batch.distances, batch.M))  # (s, k, n, n)
            z = rng.standard_normal(C.shape[:-1])
            out[chunk][:, batch.rows] = (C @ z[..., None])[..., 0]
    return out
