"""The hierarchical model with serially correlated and/or heteroscedastic errors, marginalised, in PyMC.

Stage 3 of the Bayesian pipeline for ``correlation=`` and ``weights=``: ``Design + data + structure ->
CorrelatedBayesModel``. The per-subject sufficient statistics of :mod:`hierlmm.kernels.marginalised_op` do not survive a
non-identity ``R_i``, so, with a correlation structure, as in the REML engine
(:mod:`hierlmm.engines.reml.correlated_fit`), every ``V_i`` is built and factorised densely: subjects of equal size
``n`` are stacked into (k, n, n) tensors and one batched Cholesky factorisation and triangular solve per size serve them
all (AIDS: 467 patients of 1-5 visits in five batches; :mod:`hierlmm.kernels.dense_gaussian_op`). Without one (``R_i =
I``: a variance function alone) the error covariance is diagonal and the Woodbury identity needs only ``q x q`` work per
subject (:mod:`hierlmm.kernels.woodbury_op`, on the rows sorted by subject; PBC2 with varPower, 312 subjects of 1-16
visits, q = 2: 0.05 ms per gradient against 0.63 ms with the dense kernel).

Notation
--------
``y_i ~ N(X_i beta, V_i)``, ``V_i = Z_i D Z_i' + sigma^2 S_i R_i(phi) S_i`` (chapter section 3.6 with nlme's
variance functions), with ``R_i`` from :mod:`hierlmm.structures.serial_correlation` (``R_i = I`` without a correlation
structure) and ``S_i`` diagonal, ``log S_i = M_i omega`` (``M``: n_obs x k rows of a log-SD design, ``omega`` its
k parameters; no ``M``: ``S = I``). With a correlation structure, ``C_i = chol(V_i)``, ``w_i = C_i^-1 (y_i - X_i
beta)``::

    log p(y_i) = -1/2 [ n_i log(2 pi) + 2 sum_j log C_i[j, j] + w_i'w_i ].

With ``R_i = I``, ``D = L L'``, ``r_i = y_i - X_i beta``, ``W_i = diag(1 / (sigma^2 s_ij^2))`` (``s_ij`` the
diagonal of ``S_i``), ``A_i = I_q + L'Z_i'W_iZ_iL`` and ``c_i = L'Z_i'W_i r_i``::

    log p(y_i) = -1/2 [ n_i log(2 pi) + sum_j log(sigma^2 s_ij^2) + log|A_i| + r_i'W_i r_i - c_i'A_i^-1 c_i ].

Priors (defaults; ``beta``, ``sigma`` as in :mod:`hierlmm.engines.bayes.priors`, ``D`` per structure as in
:mod:`hierlmm.engines.bayes.random_effects_covariance`):

- range ``phi`` of corExp, corGaus and corCAR1 (corCAR1's ``phi^d`` is ``exp(-d / range)``, its ``phi`` reported as
  ``exp(-1 / range)``): ``LogNormal(log g, 1.5)``, ``g`` the median gap between a subject's consecutive distinct
  times. The range is only meaningful relative to the spacing of the visits: much below the smallest gap the
  errors are independent, far beyond the largest span they are one shared shift (a random intercept), and the
  likelihood is flat in both directions. A log-normal centred on the typical gap, 95% of its mass within a factor
  ``exp(2.94) = 19`` of it, keeps the posterior proper in both flat tails while letting the data place the range
  anywhere over the visit schedule (AIDS: ``g = 4`` months, prior 95% interval (0.21, 76)). NUTS samples
  ``log phi``, where the posterior is close to symmetric.
- ``nugget``: ``Beta(2, 2)`` (mean 1/2, 95% within (0.09, 0.91)): away from 0 and 1, where the range and nugget
  cease to be identified.
- corAR1's ``phi``: ``(phi + 1) / 2 ~ Beta(2, 2)`` on (-1, 1); corCompSymm's ``rho``: ``Beta(2, 2)`` scaled to
  ``(-1 / (n_max - 1), 1)``, the range over which every ``R_i`` is positive definite.
- ``omega ~ Normal(0, 1)``: log SD ratios within a factor ``exp(1.96) = 7`` a priori (per unit of the columns of
  ``M``: a covariate's units set what this prior means).
- With a log-SD design, ``sigma``'s prior (:mod:`hierlmm.engines.bayes.priors`) is on
  ``sigma_centred = sigma exp(mean(M)' omega)``, the error SD where every column of ``M`` is at its mean (varIdent:
  the geometric mean over the rows' strata; varPower: at the geometric mean of the covariate; varExp: at its mean).
  nlme's ``sigma`` (the SD where ``s = 1``: ``x = 1`` for varPower, ``x = 0`` for varExp) may lie far outside the
  data, and a prior there would depend on the covariate's origin; ``sigma`` is reported as nlme's.

Every one can be overridden (``priors={"range": (median, log_sd), "nugget": (a, b), "rho": (a, b)}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from hierlmm.design.design import Design
from hierlmm.design.subject_batches import subject_batches
from hierlmm.engines.bayes.centring import CentredFixedEffects, centring, uncentred
from hierlmm.engines.bayes.priors import Priors, check_priors, default_priors, with_overrides
from hierlmm.engines.bayes.random_effects_covariance import block_factor
from hierlmm.engines.bayes.random_effects_covariance import coords as block_coords
from hierlmm.errors import DataError, SpecError
from hierlmm.kernels.dense_gaussian_op import dense_gaussian_loglik
from hierlmm.kernels.woodbury_op import subject_offsets, woodbury_loglik
from hierlmm.spec.prior_overrides import check_prior_overrides
from hierlmm.structures.serial_correlation import (
    CorrelationStructure,
    correlation_matrix,
    parse_correlation,
)

CORRELATION_PRIOR_KEYS = ("range", "nugget", "rho")
_FORCE_DENSE = False  # benchmarks only (bench/bayes_speed.py --section variance): R_i = I by the dense kernel


@dataclass(frozen=True)
class CorrelationPriors:
    """Priors of the correlation and variance-function parameters (see the module notation).

    Attributes
    ----------
    range_median, range_log_sd
        ``range ~ LogNormal(log range_median, range_log_sd)`` (corExp, corGaus, corCAR1).
    nugget
        ``(a, b)`` of the nugget's Beta prior.
    rho
        ``(a, b)`` of the Beta prior of corAR1's ``(phi + 1) / 2`` or corCompSymm's rescaled ``rho``.
    omega_sd
        SD of the Normal(0, sd) prior of each log-SD parameter.
    """

    range_median: float
    range_log_sd: float = 1.5
    nugget: tuple[float, float] = (2.0, 2.0)
    rho: tuple[float, float] = (2.0, 2.0)
    omega_sd: float = 1.0

    def table(self, structure: CorrelationStructure | None, log_sd_names: tuple[str, ...]) -> list[tuple[str, str]]:
        """(parameter, prior) rows, for printing."""
        rows = [(f"omega[{n}]", f"Normal(0, {self.omega_sd:g})") for n in log_sd_names]
        if log_sd_names:
            rows.append(("sigma_centred", "sigma's prior, on the SD at the mean of M"))
        return rows + ([] if structure is None else structure.prior_rows(self))


@dataclass(frozen=True, eq=False)
class SizeBatch:
    """The subjects of one size ``n``, stacked: rows (k, n), Z (k, n, q), X (k, n, p), y (k, n), distances
    (k, n, n), log-SD design rows (k, n, m) or None, and each subject's position among the block's levels (k,)."""

    rows: np.ndarray
    Z: np.ndarray
    X: np.ndarray
    y: np.ndarray
    distances: np.ndarray
    M: np.ndarray | None
    subjects: np.ndarray


@dataclass(frozen=True, eq=False)
class CorrelatedBayesModel(CentredFixedEffects):
    """The PyMC model of a design with serially correlated errors, and what reading its draws needs.

    Duck-compatible with :class:`hierlmm.engines.bayes.hierarchical_model.BayesModel` where
    :mod:`hierlmm.engines.bayes.posterior_tree` and
    :class:`hierlmm.engines.bayes.bayes_fit.BayesFit` read it (``design``, ``priors``, ``sampler``, ``from_centred``).
    """

    design: Design
    structure: CorrelationStructure | None
    priors: Priors
    correlation_priors: CorrelationPriors
    log_sd_names: tuple[str, ...]
    batches: tuple[SizeBatch, ...]
    n_max: int
    model: Any
    x_mean: np.ndarray
    intercept: int | None
    sampler: str = "marginal"
    centered: tuple[str, ...] = ()
    variance: Any = None  # the bound variance function (hierlmm.structures.variance_functions), if one was given
    log_sd_centre: np.ndarray | None = None  # column means of M: sigma_centred = sigma exp(log_sd_centre' omega)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle what the model is compiled from (the PyMC model holds compiled functions that do not pickle):
        unpickling compiles it again (:func:`compile_correlated_model`)."""
        return compile_correlated_model, (self.design, self.structure, self.priors, self.correlation_priors,
                                          self.log_sd_names, self.batches, self.n_max, self.variance)


def median_gap(batches: tuple[SizeBatch, ...]) -> float:
    """Median gap between a subject's consecutive distinct times (positions for ``~ 1 | g``); 1 if there is none."""
    # distances from an extreme time (the row reaching the span) are the sorted times shifted: their gaps are the
    # gaps between consecutive times
    gaps = [np.diff(np.unique(d[np.argmax(d.max(axis=1))])) for b in batches for d in b.distances]
    flat = np.concatenate(gaps) if gaps else np.zeros(0)
    flat = flat[flat > 0]
    return float(np.median(flat)) if flat.size else 1.0


def log_sd_matrix(log_sd_design: Any, design: Design) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """``(M, names)`` from ``None``, a ``(M, names)`` pair, or an object with ``.M`` and ``.names`` (a bound variance
    function); checked against the design."""
    if log_sd_design is None:
        return None, ()
    if hasattr(log_sd_design, "M"):
        M, names = log_sd_design.M, log_sd_design.names
    else:
        try:
            M, names = log_sd_design
        except (TypeError, ValueError):
            raise SpecError("log_sd_design must be a pair (M, names).", given=type(log_sd_design).__name__,
                            fix="Pass (an n_obs x k array, k parameter names), or None.") from None
    M = np.asarray(M, dtype=float)
    names = tuple(str(n) for n in names)
    if M.ndim == 1:
        M = M[:, None]
    if M.ndim != 2 or M.shape[0] != design.n_obs or M.shape[1] != len(names):
        raise SpecError("The log-SD design must have one row per observation used and one column per name.",
                        given={"shape": M.shape, "n_obs": design.n_obs, "names": names},
                        fix="Build it on the design's rows (design.rows), one column per parameter.")
    if not np.all(np.isfinite(M)):
        raise DataError("The log-SD design has missing or infinite entries.", given=int((~np.isfinite(M)).sum()),
                        fix="Complete the variance covariate, or drop those rows.")
    return M, names


def stack_batches(design: Design, data: pd.DataFrame, structure: CorrelationStructure | None,
                  M: np.ndarray | None) -> tuple[tuple[SizeBatch, ...], int]:
    """The design's subjects stacked by size (see :class:`SizeBatch`), and the largest size."""
    block = design.blocks[0]
    sb = subject_batches(design, data, structure)  # checks the grouping and the time column
    out = []
    for idx, d in zip(sb.rows, sb.distances, strict=True):
        out.append(SizeBatch(idx, block.Z[idx], design.X[idx], design.y[idx], d,
                             None if M is None else M[idx], block.group_index[idx[:, 0]]))
    return tuple(out), sb.n_max


def correlation_priors(structure: CorrelationStructure | None, batches: tuple[SizeBatch, ...],
                       overrides: Mapping[str, Any] | None) -> CorrelationPriors:
    """The default correlation priors for these data, with user overrides (keys ``range``, ``nugget``, ``rho``;
    checked by :func:`hierlmm.spec.prior_overrides.check_prior_overrides`)."""
    out = CorrelationPriors(range_median=median_gap(batches))
    overrides = check_prior_overrides({k: v for k, v in (overrides or {}).items() if k in CORRELATION_PRIOR_KEYS}) or {}
    if "range" in overrides:
        median, log_sd = overrides["range"]
        out = replace(out, range_median=median, range_log_sd=log_sd)
    for key in ("nugget", "rho"):
        if key in overrides:
            out = replace(out, **{key: tuple(overrides[key])})
    return out


def _batch_loglik(pt: Any, batch: SizeBatch, structure: CorrelationStructure | None, beta: Any, chol: Any, sigma: Any,
                  free: Mapping[str, Any], omega: Any, n_max: int) -> Any:
    """Sum of ``log p(y_i)`` over one size batch (module notation), as a PyTensor graph; the Gaussian log-density
    and its gradient are :mod:`hierlmm.kernels.dense_gaussian_op`'s kernel."""
    n = batch.y.shape[1]
    r = batch.y - pt.tensordot(batch.X, beta, axes=[[2], [0]])  # (k, n)
    ZL = pt.tensordot(batch.Z, chol, axes=[[2], [0]])  # (k, n, q)
    R = correlation_matrix(structure, free, batch.distances, n, n_max, pt)
    if omega is not None:
        s = pt.exp(pt.tensordot(batch.M, omega, axes=[[2], [0]]))  # (k, n)
        E = sigma**2 * s[:, :, None] * R * s[:, None, :]
    else:
        E = sigma**2 * R
    V = pt.matmul(ZL, ZL.transpose(0, 2, 1)) + E
    return dense_gaussian_loglik(V, r)


def _independent_loglik(pt: Any, design: Design, M: np.ndarray | None, beta: Any, chol: Any, sigma: Any,
                        omega: Any) -> Any:
    """Sum of ``log p(y_i)`` over all subjects with ``R_i = I``, as a PyTensor graph:
    :mod:`hierlmm.kernels.woodbury_op`'s
    kernel on the rows sorted by subject, with log error variances ``2 log sigma + 2 M omega``."""
    block = design.blocks[0]
    order, offsets = subject_offsets(block.group_index, block.n_levels)
    r = design.y[order] - pt.dot(design.X[order], beta)
    log_var = 2.0 * pt.log(sigma) * np.ones(order.size)
    if omega is not None:
        log_var = log_var + 2.0 * pt.dot(M[order], omega)
    return woodbury_loglik(r, log_var, chol, block.Z[order], offsets)


def build_correlated_bayes_model(
    design: Design,
    data: pd.DataFrame,
    correlation: CorrelationStructure | str | None,
    *,
    priors: Mapping[str, Any] | None = None,
    log_sd_design: Any = None,
) -> CorrelatedBayesModel:
    """Compile the marginalised model with serially correlated and/or heteroscedastic errors to PyMC (see the
    module notation).

    Parameters
    ----------
    design
        A design with one random-effects grouping factor (the correlation's grouping).
    data
        The data the design was built from (for the correlation's time column).
    correlation
        A :class:`~hierlmm.structures.serial_correlation.CorrelationStructure`, nlme's syntax, or None (``R_i = I``:
        then a ``log_sd_design`` is what makes this model differ from
        :func:`hierlmm.engines.bayes.hierarchical_model.build_bayes_model`'s).
    priors
        Overrides: the keys of :func:`hierlmm.engines.bayes.priors.with_overrides` and ``range``, ``nugget``, ``rho``.
    log_sd_design
        ``None`` (homoscedastic), a pair ``(M, names)`` with ``M`` (n_obs x k) such that log SD ratio = ``M omega``,
        or a bound variance function with ``.M`` and ``.names``.
    """

    structure = correlation if correlation is None or isinstance(correlation, CorrelationStructure) \
        else parse_correlation(correlation)
    overrides = check_priors(design, priors, correlation=structure) or {}  # every prior, before any work
    corr_overrides = {k: overrides.pop(k) for k in CORRELATION_PRIOR_KEYS if k in overrides}
    base = with_overrides(default_priors(design), design, overrides)
    M, names = log_sd_matrix(log_sd_design, design)
    batches, n_max = stack_batches(design, data, structure, M)
    cp = correlation_priors(structure, batches, corr_overrides)
    variance = log_sd_design if hasattr(log_sd_design, "M") else None
    return compile_correlated_model(design, structure, base, cp, names, batches, n_max, variance)


def compile_correlated_model(design: Design, structure: CorrelationStructure | None, priors: Priors,
                             corr_priors: CorrelationPriors, log_sd_names: tuple[str, ...],
                             batches: tuple[SizeBatch, ...], n_max: int, variance: Any = None,
                             ) -> CorrelatedBayesModel:
    """Compile the model from its pieces: what :func:`build_correlated_bayes_model` makes of the data and the
    overrides, and what a pickled or saved fit holds (:func:`hierlmm.load`), so that it needs no data frame. The
    log-SD design's rows ``M`` are read back from the batches (every row sits in one batch)."""
    M = None
    if log_sd_names:
        M = np.zeros((design.n_obs, len(log_sd_names)))
        for batch in batches:
            M[batch.rows] = batch.M
    _, x_mean, intercept = centring(design)
    m_centre = None if M is None else M.mean(axis=0)
    block = design.blocks[0]
    coords = {"fixef": list(design.fixef_names), f"{block.factor}__effect": list(block.effect_names),
              **block_coords(block)}
    if log_sd_names:
        coords["log_sd"] = list(log_sd_names)
    with pm.Model(coords=coords) as model:
        beta_c = pm.Normal("beta_centred", mu=np.array(priors.beta_mu), sigma=np.array(priors.beta_sigma),
                           dims="fixef")
        beta = uncentred(beta_c, x_mean, intercept)
        if log_sd_names:  # the prior is on the SD where M is at its mean (see the module notation)
            omega = pm.Normal("omega", 0.0, corr_priors.omega_sd, dims="log_sd")
            sigma_centred = pm.HalfStudentT("sigma_centred", nu=3, sigma=priors.sigma_scale)
            sigma = sigma_centred * pt.exp(-pt.dot(m_centre, omega))
        else:
            omega = None
            sigma = pm.HalfStudentT("sigma", nu=3, sigma=priors.sigma_scale)
        chol = block_factor(pm, pt, block, priors)  # D's structure (pdSymm, pdDiag, pdIdent, ...)
        free = {} if structure is None else structure.free_variables(pm, corr_priors)
        if structure is None and not _FORCE_DENSE:
            loglik = _independent_loglik(pt, design, M, beta, chol, sigma, omega)
        else:
            loglik = sum(_batch_loglik(pt, b, structure, beta, chol, sigma, free, omega, n_max) for b in batches)
        pm.Potential("marginalised_loglik", loglik)
    return CorrelatedBayesModel(design, structure, priors, corr_priors, log_sd_names, batches, n_max, model, x_mean,
                                intercept, variance=variance, log_sd_centre=m_centre)
