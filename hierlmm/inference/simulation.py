"""Simulate a response from either formulation of a spec: the hierarchical model or its marginal model.

Notation
--------
- ``kind="hierarchical"``: ``b_ki ~ N(0, D_k)`` for every level ``i`` of every grouping factor ``k`` (``D_k`` must be
  positive semi-definite: it is a covariance matrix), ``y = X beta + sum_k Z_k b_k + e``, ``e ~ N(0, sigma^2 I)``.
- ``kind="marginal"``: ``y_i ~ N(X_i beta, V_i)`` subject by subject (outermost grouping factor), with ``V_i`` from
  :mod:`hierlmm.inference.implied_covariance`; ``D_k`` may be indefinite as long as every ``V_i`` is positive definite.

With the same ``beta``, positive semi-definite ``D`` and ``sigma`` the two give the same distribution of ``y``: the
chapter's point that a hierarchical model implies its marginal model (not the other way round).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.design.design import Design, build_design
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.formula.expression import Name, deparse
from hierlmm.inference.implied_covariance import _assemble
from hierlmm.spec.model_spec import ModelSpec, model_spec

KINDS = ("hierarchical", "marginal")


def simulate(
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


__all__: Sequence[str] = ("simulate",)
