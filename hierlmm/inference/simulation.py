"""Simulate a response from either formulation of a spec: the hierarchical model or its marginal model.

Notation
--------
- ``kind="hierarchical"``: ``b_ki ~ N(0, D_k)`` for every level ``i`` of every grouping factor ``k`` (``D_k`` must be
  positive semi-definite: it is a covariance matrix), ``y = X beta + sum_k Z_k b_k + e``, ``e ~ N(0, sigma^2 I)``.
- ``kind="marginal"``: ``y_i ~ N(X_i beta, V_i)`` subject by subject (outermost grouping factor), with ``V_i`` from
  :mod:`hierlmm.inference.implied_covariance`; ``D_k`` may be indefinite as long as every ``V_i`` is positive definite.

With the same ``beta``, positive semi-definite ``D`` and ``sigma`` the two give the same distribution of ``y``: the
chapter's point that a hierarchical model implies its marginal model (not the other way round).

From a fit (:func:`simulate_fit`, what a parametric bootstrap draws): the fit's own parameters, and its error
structure, on the rows it was fitted to.

- an ML/REML fit of the hierarchical model: ``y = X beta + sum_k Z_k b_k + e`` with ``b_ki ~ N(0, D_k)`` and
  ``e_i ~ N(0, sigma^2 S_i R_i S_i)`` (serially correlated and/or heteroscedastic errors,
  :mod:`hierlmm.inference.error_covariance`; ``sigma^2 I`` without them), at the estimates;
- the marginal model (``kind="marginal"``): ``y_i ~ N(X_i beta, V_i)``, ``V_i = Z_i D Z_i' + sigma^2 I``;
- a Bayesian fit: each simulation picks one posterior draw ``s`` at random (uniformly, with replacement) and draws
  as above at ``beta^(s)``, ``D^(s)``, ``sigma^(s)`` and the draw's error parameters (new ``b``, not the fitted
  ones: a replicate of the study, not of these subjects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, overload

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, build_design
from hierlmm.design.subject_batches import subject_batches
from hierlmm.engines.bayes.posterior_result import PosteriorResult, flat_draws
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.formula.expression import Name, deparse
from hierlmm.inference.error_covariance import error_parameters, has_error_structure
from hierlmm.inference.implied_covariance import _assemble, covariance_draws
from hierlmm.spec.model_spec import ModelSpec, model_spec
from hierlmm.structures.error_parameters import ErrorParameters

KINDS = ("hierarchical", "marginal")
_CHUNK_ELEMENTS = 20_000_000  # simulations x rows x effects drawn at once


@overload
def simulate(model: REMLResult | PosteriorResult, params: int = 1, data: None = None, *,
             seed: int | None = None, nsim: int | None = None) -> np.ndarray: ...


@overload
def simulate(model: ModelSpec | str | None, params: Mapping[str, Any], data: pd.DataFrame | Design, *,
             kind: str = "hierarchical", seed: int | None = None) -> pd.DataFrame | Design: ...


def simulate(model: Any, params: Any = None, data: Any = None, *, kind: str = "hierarchical",
             seed: int | None = None, nsim: int | None = None) -> Any:
    """Draw responses from a fit, ``simulate(fit, nsim=1, seed=None)``, or from a model with given parameters,
    ``simulate(model, params, data, kind=, seed=)`` (see the module notation).

    With a fit (an ML/REML or Bayesian result) as the first argument this is :func:`simulate_fit` (``nsim`` may be
    given second, by position): an (nsim, N) array aligned with ``fit.design.y``. Otherwise it is
    :func:`simulate_from_parameters`.
    """
    if isinstance(model, REMLResult | PosteriorResult):
        if data is not None or kind != "hierarchical":
            raise SpecError("simulate(fit, nsim, seed=) draws from the fit's own model, rows and kind: data= and "
                            "kind= do not apply.", given={"data": data is not None, "kind": kind},
                            fix="Drop data= and kind=, or pass a model and params instead of a fit.")
        if params is not None and nsim is not None:
            raise SpecError("nsim was given twice (by position and by name).", given=(params, nsim),
                            fix="simulate(fit, nsim=100, seed=1).")
        count = nsim if nsim is not None else (1 if params is None else params)
        return simulate_fit(model, count, seed=seed)
    if nsim is not None:
        raise SpecError("nsim= applies to simulate(fit, ...): simulating from given parameters draws one response.",
                        given=nsim, fix="Call it repeatedly with different seeds, or simulate from a fit.")
    if params is None or data is None:
        raise SpecError("simulate() takes a fit, or a model with params and data.", given=type(model).__name__,
                        fix="simulate(fit, nsim=10) or simulate('y ~ t + (t | id)', params, data).")
    return simulate_from_parameters(model, params, data, kind=kind, seed=seed)


def simulate_from_parameters(
    model: ModelSpec | str | None,
    params: Mapping[str, Any],
    data: pd.DataFrame | Design,
    *,
    kind: str = "hierarchical",
    seed: int | None = None,
) -> pd.DataFrame | Design:
    """Draw a response for ``data`` from the hierarchical or the marginal formulation of ``model``.

    Parameters
    ----------
    model
        A :class:`~hierlmm.spec.model_spec.ModelSpec` or an lme4-style formula; its response must be a plain column
        name.
    params
        ``"beta"``: the fixed effects, in the design's column order or as {R column name: value};
        ``"D"``: a (q x q) matrix, or {factor: matrix} with several grouping factors; ``"sigma"``: the residual SD.
    data
        Covariates and grouping columns (the response column is added, or overwritten), or a
        :class:`~hierlmm.design.design.Design` (then ``model`` may be ``None`` and its ``y`` is replaced).
    kind
        ``"hierarchical"`` or ``"marginal"`` (see the module notation).
    seed
        Random seed.

    Returns
    -------
    pandas.DataFrame or Design
        A copy of ``data`` with the simulated response (a Design with the new ``y`` when a Design was given).
    """
    if kind not in KINDS:
        raise SpecError("Unknown kind of model to simulate from.", given=kind, fix="Use 'hierarchical' or 'marginal'.")
    if isinstance(data, Design):
        design, frame, response = data, None, None
    else:
        spec = model if isinstance(model, ModelSpec) else model_spec(model)
        if not isinstance(spec.response, Name):
            raise NotSupportedError("Simulation needs a response that is a plain column.",
                                    given=deparse(spec.response),
                                    fix="Simulate the transformed column, e.g. logBili ~ ..., not log(...) ~ ...")
        response = spec.response.id
        frame = data.reset_index(drop=True).copy()
        frame[response] = 0.0
        design = build_design(spec, frame)
        if design.missing.n_dropped:
            raise DataError("Rows with missing covariates cannot be simulated.", given=design.missing.n_dropped,
                            fix="Drop or complete those rows first.")
    beta, Ds, sigma = _parameters(design, params)
    rng = np.random.default_rng(seed)
    mean = design.X @ beta
    if kind == "hierarchical":
        y = mean + sigma * rng.standard_normal(design.n_obs)
        for block, D in zip(design.blocks, Ds, strict=True):
            if np.linalg.eigvalsh(D)[0] < -1e-12:
                raise SpecError(f"D of {block.factor} is not positive semi-definite, so it is no covariance matrix "
                                "of random effects.", given=D.tolist(),
                                fix="Use kind='marginal', which only needs every V_i positive definite.")
            L = np.linalg.cholesky(D + 1e-12 * np.eye(block.q))
            b = rng.standard_normal((block.n_levels, block.q)) @ L.T
            y = y + (block.Z * b[block.group_index]).sum(axis=1)
    else:
        y = mean.copy()
        outer = design.blocks[0]
        for level in range(outer.n_levels):
            idx = np.flatnonzero(outer.group_index == level)
            V = _assemble([b.Z[idx] for b in design.blocks], [b.group_index[idx] for b in design.blocks],
                          [D[None] for D in Ds], sigma**2 * np.eye(idx.size)[None])[0]
            lowest = np.linalg.eigvalsh(V)[0]
            if lowest <= 0:
                raise SpecError(f"V of {outer.factor} {outer.levels[level]} is not positive definite "
                                f"(smallest eigenvalue {lowest:.3g}).", given=[D.tolist() for D in Ds],
                                fix="Raise sigma or the diagonal of D.")
            y[idx] += np.linalg.cholesky(V) @ rng.standard_normal(idx.size)
    if frame is None:
        return replace(design, y=y)
    frame.loc[design.rows, response] = y
    return frame


def _parameters(design: Any, params: Mapping[str, Any]) -> tuple[np.ndarray, list[np.ndarray], float]:
    missing = {"beta", "D", "sigma"} - set(params)
    if missing:
        raise SpecError(f"params lacks {sorted(missing)}.", given=sorted(params),
                        fix="Give params={'beta': [...], 'D': [[...]], 'sigma': 1.0}.")
    beta_in = params["beta"]
    if isinstance(beta_in, Mapping):
        unknown = set(beta_in) - set(design.fixef_names)
        if unknown or len(beta_in) != design.p:
            raise SpecError("beta must name every fixed effect.", given=dict(beta_in),
                            fix=f"Use the names {list(design.fixef_names)}.")
        beta = np.array([float(beta_in[n]) for n in design.fixef_names])
    else:
        beta = np.asarray(beta_in, dtype=float).ravel()
        if beta.size != design.p:
            raise SpecError(f"beta needs {design.p} values.", given=beta.tolist(),
                            fix=f"One per column: {list(design.fixef_names)}.")
    D_in = params["D"]
    if not isinstance(D_in, Mapping):
        if len(design.blocks) != 1:
            raise SpecError("With several grouping factors D must be {factor: matrix}.", given=D_in,
                            fix=f"Use the factors {[b.factor for b in design.blocks]}.")
        D_in = {design.blocks[0].factor: D_in}
    Ds = []
    for block in design.blocks:
        if block.factor not in D_in:
            raise SpecError(f"D has no matrix for {block.factor}.", given=sorted(D_in),
                            fix=f"Give one for each of {[b.factor for b in design.blocks]}.")
        D = np.atleast_2d(np.asarray(D_in[block.factor], dtype=float))
        if D.shape != (block.q, block.q) or not np.allclose(D, D.T):
            raise SpecError(f"D of {block.factor} must be a symmetric {block.q} x {block.q} matrix "
                            f"({', '.join(block.effect_names)}).", given=D.tolist(), fix="Give a symmetric matrix.")
        Ds.append(D)
    sigma = float(params["sigma"])
    if not sigma > 0:
        raise SpecError("sigma must be positive.", given=params["sigma"], fix="Use e.g. sigma=1.0.")
    return beta, Ds, sigma


def simulate_fit(fit: REMLResult | PosteriorResult, nsim: int = 1, *, seed: int | None = None) -> np.ndarray:
    """Draw ``nsim`` responses from a fitted model (module notation): what a parametric bootstrap refits.

    Parameters
    ----------
    fit
        Any ML/REML fit (nested, crossed, serially correlated or heteroscedastic errors, the marginal model) or any
        Bayesian fit (one posterior draw per simulation, chosen at random).
    nsim
        Number of responses.
    seed
        Random seed (the same seed gives the same draws).

    Returns
    -------
    numpy.ndarray
        (nsim, N): row ``j`` is a response for the fit's rows, in the order of ``fit.design.y`` (the data rows
        ``fit.design.rows``), e.g. for :func:`hierlmm.engines.reml.refit.refit`.
    """
    if not isinstance(fit, REMLResult | PosteriorResult):
        raise SpecError("simulate_fit() takes a hierlmm fit.", given=type(fit).__name__,
                        fix="Pass the result of hierlmm.fit or hierlmm.fit_bayes.")
    if isinstance(nsim, bool) or not isinstance(nsim, int | np.integer) or nsim < 1:
        raise SpecError("nsim must be a positive whole number.", given=nsim, fix="Use e.g. nsim=100.")
    rng = np.random.default_rng(seed)
    design = fit.design
    draws = _fit_parameters(fit, int(nsim), rng)
    out = np.empty((int(nsim), design.n_obs))
    per_simulation = design.n_obs * max(1, sum(b.q for b in design.blocks))
    chunk = max(1, _CHUNK_ELEMENTS // per_simulation)
    for start in range(0, int(nsim), chunk):
        part = draws.subset(slice(start, min(start + chunk, int(nsim))))
        if fit.kind == "marginal":
            out[start:start + part.size] = _marginal_draws(design, part, rng)
        else:
            out[start:start + part.size] = _hierarchical_draws(fit, part, rng)
    return out


@dataclass(frozen=True, eq=False)
class _Parameters:
    """The parameters of each simulation: one set shared by all (an ML/REML fit: leading size 1) or one posterior
    draw per simulation (leading size ``size``)."""

    size: int
    beta: np.ndarray  # (1 or size, p)
    D: list[np.ndarray]  # per block (1 or size, q, q)
    sigma: np.ndarray  # (1 or size,)
    errors: ErrorParameters | None

    def subset(self, index: slice) -> _Parameters:
        size = len(range(*index.indices(self.size)))
        if self.sigma.size == 1:
            return replace(self, size=size)
        errors = None if self.errors is None else self.errors.draws(index)
        return _Parameters(size, self.beta[index], [D[index] for D in self.D], self.sigma[index], errors)


def _fit_parameters(fit: REMLResult | PosteriorResult, nsim: int, rng: np.random.Generator) -> _Parameters:
    Ds, sigma = covariance_draws(fit)
    errors = error_parameters(fit) if has_error_structure(fit) else None
    if isinstance(fit, REMLResult):
        return _Parameters(nsim, np.asarray(fit.beta, dtype=float)[None], Ds, sigma, errors)
    pick = rng.integers(sigma.size, size=nsim)  # one posterior draw per simulation
    return _Parameters(nsim, flat_draws(fit, "beta")[pick], [D[pick] for D in Ds], sigma[pick],
                       None if errors is None else errors.draws(pick))


def _psd_factor(D: np.ndarray, factor: str) -> np.ndarray:
    """``F`` with ``F F' = D`` (S, q, q) for positive semi-definite ``D`` (eigen-decomposition: D may be singular)."""
    w, U = np.linalg.eigh(D)
    if np.any(w < -1e-8 * np.maximum(1.0, np.abs(w).max(axis=-1, keepdims=True))):
        raise SpecError(f"D of {factor} is not positive semi-definite, so it is no covariance matrix of random "
                        "effects.", given=np.asarray(D)[0].tolist(),
                        fix="Simulate from the marginal model (kind='marginal'), which only needs V_i positive "
                            "definite.")
    return U * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def _hierarchical_draws(fit: Any, part: _Parameters, rng: np.random.Generator) -> np.ndarray:
    design = fit.design
    y = np.broadcast_to(part.beta @ design.X.T, (part.size, design.n_obs)).copy()
    for block, D in zip(design.blocks, part.D, strict=True):
        F = _psd_factor(D, block.factor)  # (1 or S, q, q)
        b = rng.standard_normal((part.size, block.n_levels, block.q)) @ np.swapaxes(F, -1, -2)  # rows b' = z'F'
        y += np.einsum("nq,snq->sn", block.Z, b[:, block.group_index])
    if part.errors is None:
        return y + part.sigma[:, None] * rng.standard_normal(y.shape)
    for rows, distances, M in _error_batches(fit):
        C = np.linalg.cholesky(part.errors.matrices(distances, M))  # (1 or S, k, n, n)
        z = rng.standard_normal((part.size, *rows.shape))
        y[:, rows] += (C @ z[..., None])[..., 0]
    return y


def _error_batches(fit: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Rows (k, n), distances (k, n, n) and variance-function rows (k, n, m) or None of every subject batch."""
    if isinstance(fit, CorrelatedFit):
        if fit.batches is None:
            raise NotSupportedError("This CorrelatedFit was built without its subject batches (the times it used).",
                                    given="CorrelatedFit.batches is None",
                                    fix="Refit with hierlmm.fit(..., correlation=..., weights=...).")
        M = None if fit.variance is None else fit.variance.M
        return [(rows, d, None if M is None else M[rows])
                for rows, d in zip(fit.batches.rows, fit.batches.distances, strict=True)]
    return [(b.rows, b.distances, b.M) for b in fit.bayes_model.batches]


def _marginal_draws(design: Design, part: _Parameters, rng: np.random.Generator) -> np.ndarray:
    """``y_i ~ N(X_i beta, Z_i D Z_i' + sigma^2 I)`` by subject, the subjects batched by size."""
    y = np.broadcast_to(part.beta @ design.X.T, (part.size, design.n_obs)).copy()
    block = design.blocks[0]
    batches = subject_batches(design, None, None)  # no correlation structure: the data are not read
    for rows in batches.rows:
        Z = block.Z[rows]  # (k, n, q)
        V = np.einsum("kaq,sqr,kbr->skab", Z, part.D[0], Z) + (part.sigma**2)[:, None, None, None] * np.eye(
            rows.shape[1])
        try:
            C = np.linalg.cholesky(V)
        except np.linalg.LinAlgError:
            raise SpecError("A subject's V_i is not positive definite at these parameters.",
                            given=np.asarray(part.D[0])[0].tolist(), fix="Check the fit's D and sigma.") from None
        z = rng.standard_normal((part.size, *rows.shape))
        y[:, rows] += (C @ z[..., None])[..., 0]
    return y


__all__: Sequence[str] = ("simulate", "simulate_fit", "simulate_from_parameters")
