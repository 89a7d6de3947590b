"""Predictions of every fit, with intervals: population means, subject trajectories, and dynamic predictions of
subjects the fit never saw from a partial history (chapter sections 3.2 and 3.4).

This is the one home of predictions: :func:`hierlmm.predict` is :func:`predict`, and
:func:`hierlmm.trajectories` reads its draws.

Notation
--------
For a subject (a level of the outermost grouping factor; with crossed factors, all rows at once) with history rows
``h`` (observed ``y_h``) and rows ``f`` to predict, stack the subject's random effects of every grouping factor into
``b`` with block-diagonal covariance ``D`` and design ``Z`` (rows ``h`` then ``f``); ``E = sigma^2 S R S`` is the
errors' covariance (``sigma^2 I`` for independent errors of one variance) and ``V = Z D Z' + E``. With
``r_h = y_h - X_h beta``:

- the conditional distribution of the random effects given the history::

      b | y_h ~ N( D Z_h' V_hh^-1 r_h ,  D - D Z_h' V_hh^-1 Z_h D )

  (no history: ``N(0, D)``);
- the mean trajectory (level 1) ``m_f = X_f beta + Z_f b``; its expected value given the history is
  ``X_f beta + Z_f E(b | y_h)``;
- a new outcome ``y_f = m_f + e_f``; with serially correlated errors the future errors depend on the past ones,
  ``E(y_f | y_h) = X_f beta + V_fh V_hh^-1 r_h`` and ``Var(y_f | y_h) = V_ff - V_fh V_hh^-1 V_hf``;
- level 0 (population): ``X_f beta``, and a new outcome of a new subject has variance ``diag(V_ff)``.

ML/REML fits plug the estimates in (the variance parameters are treated as known) and add beta's uncertainty
exactly: with ``A = X_f - Z_f D Z_h' V_hh^-1 X_h`` the mean's error variance is
``A Cov(beta) A' + Z_f Var(b | y_h) Z_f'`` (for a subject in the fit this is Henderson's prediction-error variance
of ``x' beta + z' b``), and the new outcome's is ``A_y Cov(beta) A_y' + V_ff - V_fh V_hh^-1 V_hf`` with
``A_y = X_f - V_fh V_hh^-1 X_h``. Intervals are ``estimate +- z_{(1+ci_prob)/2} se``.

Bayesian fits repeat this for every posterior draw ``s``: ``beta^(s)``, ``D^(s)``, ``sigma^(s)`` and the error
structure's parameters. A subject in the fit uses its posterior draws of ``b``; a subject with a ``history`` gets an
exact Gaussian draw from ``b | y_h`` at the draw's parameters; a new subject without one a draw of ``N(0, D^(s))``.
A new outcome adds ``e_f`` drawn from its (conditional) distribution at the draw. Intervals are equal-tailed
quantiles of the draws.

Which rows condition a subject: its rows in ``history`` when it has any there; otherwise, for a subject in the fit,
its training rows; otherwise none.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats
import xarray as xr

from hierlmm.design.design import Design, grouping_labels, new_model_matrices, new_response
from hierlmm.design.sufficient_stats import is_crossed, outermost_block
from hierlmm.engines.bayes.posterior_result import PosteriorResult, flat_draws, mean_draws
from hierlmm.engines.fit_result import check_ci_prob, check_level
from hierlmm.engines.reml.covariance_parameters import MAX_DENSE_ROWS
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, SpecError, UnusedOutcomesWarning
from hierlmm.formula.expression import names_in
from hierlmm.inference.error_covariance import (
    error_covariance,
    error_parameters,
    has_error_structure,
    new_log_sd_rows,
)
from hierlmm.inference.implied_covariance import covariance_draws
from hierlmm.structures.error_parameters import ErrorParameters
from hierlmm.structures.serial_correlation import check_times

INTERVALS = ("confidence", "prediction")
CHUNK = 250  # posterior draws handled at once (bounds the memory of the batched matrices)


@dataclass(frozen=True, eq=False)
class Prediction:
    """Predictions of a fit for new rows (see the module notation).

    Attributes
    ----------
    table
        Indexed like ``newdata``: ``fit`` (the mean response: level 0 ``x' beta``, level 1 ``x' beta + z' b``) and its
        ``se`` (ML/REML) or posterior ``sd`` (Bayes); with ``interval="prediction"`` also ``y_fit`` and ``y_se`` /
        ``y_sd``, a new outcome's expected value and uncertainty; ``lower`` and ``upper`` bound the chosen interval
        (of ``fit`` for ``"confidence"``, of a new outcome for ``"prediction"``).
    level, interval, ci_prob
        What was asked.
    engine
        ``"REML"``, ``"ML"`` or ``"NUTS"``.
    uncertainty
        What the intervals include, in words.
    b
        Random effects of the subjects conditioned on a ``history`` or new without one (rows ``(factor, level)``,
        columns the effects): the conditional mean ``E(b | y_h)`` (ML/REML) or the posterior mean of the draws.
    b_cov
        Their covariance ``Var(b | y_h)`` (ML/REML) or the draws' covariance (Bayes), keyed like ``b``'s rows.
    draws
        Bayes only: a DataTree whose ``predictions`` group holds ``mu`` (chain, draw, row) and, with
        ``interval="prediction"``, ``y``; ``row`` is ``newdata``'s index (positions if it has duplicates).
    """

    table: pd.DataFrame
    level: int
    interval: str | None
    ci_prob: float
    engine: str
    uncertainty: str
    b: pd.DataFrame = field(default_factory=pd.DataFrame)
    b_cov: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    draws: xr.DataTree | None = None

    def __getitem__(self, column: Any) -> Any:
        """A column (or list of columns) of :attr:`table`."""
        wanted = column if isinstance(column, list) else [column]
        absent = [c for c in wanted if c not in self.table.columns]
        if absent:
            alias = {"se": "sd", "sd": "se", "y_se": "y_sd", "y_sd": "y_se"}
            hint = [alias[c] for c in absent if alias.get(c) in self.table.columns]
            raise DataError(f"This {self.engine} prediction has no column {absent}.", given=list(self.table.columns),
                            fix=(f"Use {hint} (ML/REML report standard errors 'se', Bayesian fits posterior SDs 'sd')."
                                 if hint else "Ask for interval='prediction' for y_fit and its spread."))
        return self.table[column]

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        what = "population" if self.level == 0 else "subject-specific"
        band = f", {self.interval} intervals at {self.ci_prob:g}" if self.interval else ""
        return f"Prediction ({what}, {self.engine}{band}; {self.uncertainty})\n{self.table!r}"

    def _repr_html_(self) -> str:
        what = "population" if self.level == 0 else "subject-specific"
        band = f", {self.interval} intervals at {self.ci_prob:g}" if self.interval else ""
        return f"<p><b>Prediction</b> ({what}, {self.engine}{band}): {self.uncertainty}</p>" + self.table.to_html()


# ---- checks -------------------------------------------------------------------------------------------------------
def check_interval(interval: Any) -> str | None:
    """``interval`` is ``"confidence"``, ``"prediction"`` or None (a number is refused with the fix)."""
    if interval is None or (isinstance(interval, str) and interval in INTERVALS):
        return interval
    fix = "Pass interval='confidence' (of the mean), 'prediction' (of a new outcome) or None."
    if isinstance(interval, int | float) and not isinstance(interval, bool):
        fix += f" The coverage is ci_prob= (ci_prob={interval!r})."
    raise SpecError("interval is the kind of interval, not its coverage.", given=interval, fix=fix)


def _check_seed(seed: Any, engine: str) -> None:
    """``seed``: None or a non-negative integer, and only for a fit whose predictions are draws (Bayes)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SpecError("seed is a non-negative integer (or None for fresh randomness).", given=seed,
                        fix="Pass seed=1, for example.")
    if engine != "NUTS":
        raise SpecError("An ML/REML prediction is computed, not drawn: a seed has nothing to seed.",
                        given=f"seed={seed} with a {engine} fit", fix="Drop seed=.")


def _engine(fit: Any) -> str:
    if isinstance(fit, REMLResult):
        return str(fit.method)
    if isinstance(fit, PosteriorResult):
        return "NUTS"
    raise SpecError("predict() takes a hierlmm fit.", given=type(fit).__name__,
                    fix="Pass the result of hierlmm.fit, hierlmm.fit_ml or hierlmm.fit_bayes.")


def _check_frame(frame: Any, name: str) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{name} must be a pandas DataFrame.", given=type(frame).__name__,
                        fix=f"Pass {name} as a DataFrame with the columns the model uses.")
    if len(frame) == 0:
        raise DataError(f"{name} has no rows.", given=list(frame.columns), fix=f"Pass the rows to {name}.")
    return frame


# ---- parameters ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Parameters:
    """beta (S, p), Cov(beta) (ML/REML only), every block's D (S, q, q) and the error model, per draw."""

    beta: np.ndarray
    cov_beta: np.ndarray | None
    D: list[np.ndarray]
    errors: ErrorParameters

    @property
    def n_draws(self) -> int:
        return self.beta.shape[0]

    def chunk(self, index: slice) -> _Parameters:
        if self.n_draws == 1:
            return self
        return _Parameters(self.beta[index], None, [D[index] for D in self.D], self.errors.draws(index))


def _parameters(fit: Any) -> _Parameters:
    Ds, sigma = covariance_draws(fit)
    if isinstance(fit, REMLResult):
        beta, cov_beta = np.asarray(fit.beta, dtype=float)[None], np.asarray(fit.cov_beta, dtype=float)
    else:
        beta, cov_beta = flat_draws(fit, "beta"), None
    errors = error_parameters(fit) if has_error_structure(fit) else ErrorParameters(None, 1, sigma, None)
    return _Parameters(beta, cov_beta, [np.asarray(D, dtype=float) for D in Ds], errors)


# ---- rows ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Rows:
    """The model's matrices on some rows, and what their errors need."""

    X: np.ndarray  # (n, p)
    Z: list[np.ndarray]  # per block (n, q_k)
    labels: list[np.ndarray]  # per block (n,) level labels
    times: np.ndarray | None  # the correlation's times (None: no correlation structure)
    same: np.ndarray | None  # (n,) the correlation's group labels
    M: np.ndarray | None  # (n, k) the variance function's rows
    y: np.ndarray | None = None  # observed outcomes (history rows)

    def take(self, idx: np.ndarray) -> _Rows:
        """The rows at positions ``idx``."""
        return _Rows(self.X[idx], [Z[idx] for Z in self.Z], [g[idx] for g in self.labels], _pick(self.times, idx),
                     _pick(self.same, idx), _pick(self.M, idx), _pick(self.y, idx))


def _pick(values: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[idx]


def _join(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else np.concatenate([a, b])


def _rows(fit: Any, frame: pd.DataFrame, params: ErrorParameters, *, with_y: bool, source: str) -> _Rows:
    design: Design = fit.design
    frame = frame.reset_index(drop=True)
    X, Zs = new_model_matrices(design, frame, source)
    for column in dict.fromkeys(c for b in design.blocks for c in b.grouping):
        missing = np.flatnonzero(frame[column].isna().to_numpy()) if column in frame.columns else []
        if len(missing):
            raise DataError(f"The grouping column {column!r} is missing in {len(missing)} row(s) of {source} "
                            f"(rows {missing[:5].tolist()}): those rows belong to no subject.", given=column,
                            fix=f"Give every row its {column!r}, or predict them at level=0.")
    labels = [np.asarray(grouping_labels(frame, b.grouping), dtype=object) for b in design.blocks]
    times = same = M = None
    structure = params.structure
    if structure is not None:
        same = np.asarray(grouping_labels(frame, (structure.group,)), dtype=object)
        if structure.time is not None:
            if structure.time not in frame.columns:  # (``~ 1 | g``: positions, from the rows' order)
                raise DataError(f"{source.capitalize()} lack the correlation's time column {structure.time!r}.",
                                given=list(frame.columns),
                                fix=f"Add {structure.time!r}: the correlation of two rows of a subject depends on "
                                    "the distance between their times.")
            times = pd.to_numeric(frame[structure.time], errors="coerce").to_numpy(dtype=float)
            if not np.isfinite(times).all():
                raise DataError(f"The time column {structure.time!r} is missing or not numeric in {source}.",
                                given=structure.time, fix="Give every row its time.")
    M = new_log_sd_rows(fit, params, frame)
    y = new_response(design, frame, source) if with_y else None
    if with_y and structure is not None and times is not None and not structure.nugget:
        _refuse_repeated_times(structure.time, times, same, source)
    return _Rows(X, Zs, labels, times, same, M, y)


def _refuse_repeated_times(time: str, times: np.ndarray, same: np.ndarray, source: str) -> None:
    """Two observed rows of a subject at one time have perfectly correlated errors without a nugget: ``V_hh`` would
    be singular (the fit refuses such data for the same reason)."""
    keys = pd.DataFrame({"g": same, "t": times})
    repeated = keys.duplicated(keep=False).to_numpy()
    if repeated.any():
        first = int(np.flatnonzero(repeated)[0])
        raise DataError(f"{source.capitalize()} have two rows of one subject at the same {time!r} (e.g. {same[first]} "
                        f"at {time} = {times[first]:g}): without a nugget their errors would be perfectly correlated.",
                        given=time, fix="Combine or drop the repeated rows (or fit with nugget = TRUE).")


def _stack(a: _Rows | None, b: _Rows) -> _Rows:
    if a is None:
        return b
    return _Rows(np.vstack([a.X, b.X]), [np.vstack([u, v]) for u, v in zip(a.Z, b.Z, strict=True)],
                 [np.concatenate([u, v]) for u, v in zip(a.labels, b.labels, strict=True)], _join(a.times, b.times),
                 _join(a.same, b.same), _join(a.M, b.M), None)


# ---- one subject (group) ------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Group:
    """A subject's rows: ``history`` (with y; None: no history), ``future`` (positions ``target`` in newdata),
    the stacked random-effects design over both, and the error covariance's pieces (None: computed from rows)."""

    key: str
    source: str  # "history", "training" or "none"
    history: _Rows | None
    future: _Rows
    target: np.ndarray
    effects: list[tuple[int, str]]  # (block, level) of every stacked random effect
    Z_h: np.ndarray  # (n_h, Q)
    Z_f: np.ndarray  # (n_f, Q)
    E_hh: np.ndarray | None = None  # training rows' error covariance (S, n_h, n_h) when known only from the fit


def _stacked_design(fit: Any, history: _Rows | None, future: _Rows) -> tuple[list[tuple[int, str]], np.ndarray,
                                                                               np.ndarray]:
    """Every random effect the subject's rows touch, and the (n, Q) designs of history and future rows."""
    effects, cols_h, cols_f = [], [], []
    rows = [r for r in (history, future) if r is not None]
    for k in range(len(fit.design.blocks)):
        levels = list(dict.fromkeys(np.concatenate([r.labels[k] for r in rows]).tolist()))
        for level in levels:
            effects.append((k, level))
            for r, cols in ((history, cols_h), (future, cols_f)):
                if r is not None:
                    cols.append(r.Z[k] * (r.labels[k] == level)[:, None])
    n_h = 0 if history is None else history.X.shape[0]
    Z_h = np.hstack(cols_h) if cols_h else np.zeros((n_h, 0))
    Z_f = np.hstack(cols_f)
    return effects, Z_h, Z_f


def _stacked_D(D: list[np.ndarray], effects: list[tuple[int, str]]) -> np.ndarray:
    """(S, Q, Q) block-diagonal covariance of the stacked random effects."""
    S = D[0].shape[0]
    sizes = [D[k].shape[-1] for k, _ in effects]
    out = np.zeros((S, sum(sizes), sum(sizes)))
    first = 0
    for (k, _), q in zip(effects, sizes, strict=True):
        out[:, first:first + q, first:first + q] = D[k]
        first += q
    return out


def _positions(labels: np.ndarray) -> np.ndarray:
    return pd.Series(labels).groupby(labels).cumcount().to_numpy(dtype=float)


def _errors(params: ErrorParameters, rows: _Rows) -> np.ndarray:
    """``E`` (S, n, n) of some rows of one subject (history rows first)."""
    n = rows.X.shape[0]
    if params.structure is None:
        d, same = np.zeros((n, n)), None
    else:
        t = rows.times
        if params.structure.time is None:
            t = _positions(rows.same)
        else:
            check_times(params.structure, t, "the subject's rows")
        d = np.abs(t[:, None] - t[None, :])
        same = rows.same[:, None] == rows.same[None, :]
    return params.matrices(d, rows.M, same)


# ---- grouping -----------------------------------------------------------------------------------------------------
def _subject_keys(fit: Any, rows: _Rows) -> tuple[np.ndarray, int | None]:
    design = fit.design
    if is_crossed(design):
        return np.zeros(rows.X.shape[0], dtype=object), None
    top = outermost_block(design)
    return rows.labels[top], top


def _training_rows(fit: Any, idx: np.ndarray, subject: str | None) -> tuple[_Rows, np.ndarray | None]:
    """A subject's training rows from the design, with what their errors need: the variance function's rows and
    the correlation's times and groups (from :attr:`Design.covariates`). When the correlation's time column is not
    a column of the model (so not kept), the fit's own error covariance of those rows is returned instead."""
    design = fit.design
    labels = [np.asarray(b.levels, dtype=object)[b.group_index[idx]] for b in design.blocks]
    structure, variance = getattr(fit, "structure", None), getattr(fit, "variance", None)
    M = None if variance is None else variance.M[idx]
    times = same = None
    if structure is not None:
        kept = design.covariates
        if structure.group not in kept or (structure.time is not None and structure.time not in kept):
            rows = _Rows(design.X[idx], [b.Z[idx] for b in design.blocks], labels, None, None, M, design.y[idx])
            return rows, error_covariance(fit, subject=subject)
        same = np.asarray(grouping_labels(pd.DataFrame({structure.group: kept[structure.group][idx]}),
                                          (structure.group,)), dtype=object)
        if structure.time is not None:
            times = np.asarray(kept[structure.time][idx], dtype=float)
    rows = _Rows(design.X[idx], [b.Z[idx] for b in design.blocks], labels, times, same, M, design.y[idx])
    return rows, None


def _positions_by_key(keys: np.ndarray) -> dict[Any, np.ndarray]:
    """Row positions of every key, keys in order of first appearance."""
    return {k: np.asarray(v) for k, v in pd.Series(keys).groupby(keys, sort=False).indices.items()}


def _groups(fit: Any, future: _Rows, history: _Rows | None, use_training: bool) -> list[_Group]:
    """One group per subject of the rows to predict, with the rows that condition it (module docstring)."""
    design = fit.design
    keys_f, top = _subject_keys(fit, future)
    keys_h = None if history is None else _subject_keys(fit, history)[0]
    with_history = set() if keys_h is None else set(keys_h.tolist())
    fitted = set() if top is None else set(design.blocks[top].levels)
    out = []
    history_rows = {} if keys_h is None else _positions_by_key(keys_h)
    for key, target in _positions_by_key(keys_f).items():
        f_rows = future.take(target)
        h_rows, E_hh, from_training = None, None, False
        if key in with_history:
            h_rows = history.take(history_rows[key])
        elif use_training and (top is None or key in fitted):
            if top is None:
                if design.n_obs > MAX_DENSE_ROWS:
                    raise NotSupportedError(
                        f"Level-1 intervals of a model with crossed grouping factors condition on all {design.n_obs} "
                        f"rows at once (one dense covariance matrix), more than {MAX_DENSE_ROWS}.",
                        given=design.n_obs, fix="Ask for interval=None (the empirical-Bayes point predictions), or "
                                                "predict at level=0.")
                idx = np.arange(design.n_obs)
            else:
                idx = np.flatnonzero(design.blocks[top].group_index == design.blocks[top].levels.index(key))
            h_rows, E_hh = _training_rows(fit, idx, None if top is None else key)
            from_training = True
        effects, Z_h, Z_f = _stacked_design(fit, h_rows, f_rows)
        source = "none" if h_rows is None else ("training" if from_training else "history")
        out.append(_Group(str(key), source, h_rows, f_rows, target, effects, Z_h, Z_f, E_hh))
    return out


# ---- the conditional computation ----------------------------------------------------------------------------------
def _rowdiag(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``diag(A C A')`` for (..., n, m) ``A`` and (..., m, m) ``C``."""
    return np.einsum("...ij,...jk,...ik->...i", A, C, A)


_PAST_ERRORS = ("A new outcome of a subject in the fit depends on its past errors (serially correlated errors), and "
                "the times of its training rows are not known here (the correlation's time column is not a column of "
                "the model, or the fit is Bayesian: its subjects' past errors are not conditioned on).")
_PAST_ERRORS_FIX = ("Pass history= with the subject's rows of the data (history=data works): their outcomes and times "
                    "condition the prediction.")


def _sqrt_psd(C: np.ndarray) -> np.ndarray:
    """A square root ``R`` with ``R R' = C`` of (..., m, m) positive semi-definite matrices."""
    try:
        return np.linalg.cholesky(C + 1e-12 * np.eye(C.shape[-1]))
    except np.linalg.LinAlgError:
        w, U = np.linalg.eigh(C)
        return U * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def _batches(groups: list[_Group]) -> list[list[_Group]]:
    """Groups of one shape (source, history and future sizes, stacked effects' blocks), to be solved together."""
    out: dict[tuple, list[_Group]] = {}
    for g in groups:
        n_h = 0 if g.history is None else g.history.X.shape[0]
        key = (g.source, n_h, g.future.X.shape[0], tuple(k for k, _ in g.effects), g.E_hh is None)
        out.setdefault(key, []).append(g)
    return list(out.values())


def _plugin_batch(params: _Parameters, groups: list[_Group], prediction: bool) -> dict[str, np.ndarray]:
    """ML/REML for k subjects of one shape: the plug-in conditional mean, its error variance with beta's, a new
    outcome's, and ``b | y_h`` (module notation). Arrays (k, n_f) and (k, Q), (k, Q, Q)."""
    first = groups[0]
    beta, Cb, errors = params.beta[0], params.cov_beta, params.errors
    D = _stacked_D(params.D, first.effects)[0]
    Z_f = np.stack([g.Z_f for g in groups])
    X_f = np.stack([g.future.X for g in groups])
    has_history = first.history is not None
    n_h = first.history.X.shape[0] if has_history else 0
    E_fh = None
    if first.source == "training" and (first.E_hh is not None or errors.is_independent):
        if prediction and errors.structure is not None:
            raise DataError(_PAST_ERRORS, given="interval='prediction', history=None", fix=_PAST_ERRORS_FIX)
        E_ff = errors.matrices(*_error_inputs(errors, [g.future for g in groups]))[0]
        E_hh = (np.stack([g.E_hh[0] for g in groups]) if first.E_hh is not None
                else errors.sigma[0] ** 2 * np.broadcast_to(np.eye(n_h), (len(groups), n_h, n_h)))
    else:
        rows = [_stack(g.history, g.future) if has_history else g.future for g in groups]
        E = errors.matrices(*_error_inputs(errors, rows))[0]
        E_hh, E_ff = E[:, :n_h, :n_h], E[:, n_h:, n_h:]
        if has_history and errors.structure is not None:
            E_fh = E[:, n_h:, :n_h]
    G_ff = Z_f @ D @ np.swapaxes(Z_f, -1, -2)
    mean_f = X_f @ beta
    if not has_history:
        var = _rowdiag(X_f, Cb) + np.diagonal(G_ff, axis1=-2, axis2=-1)
        return {"fit": mean_f, "var": var, "y_fit": mean_f, "y_var": var + np.diagonal(E_ff, axis1=-2, axis2=-1),
                "b": np.zeros((len(groups), D.shape[0])), "b_cov": np.broadcast_to(D, (len(groups), *D.shape))}
    Z_h = np.stack([g.Z_h for g in groups])
    X_h = np.stack([g.history.X for g in groups])
    r_h = np.stack([g.history.y for g in groups]) - X_h @ beta
    DZ = D @ np.swapaxes(Z_h, -1, -2)  # D Z_h' (k, Q, n_h)
    V_hh = Z_h @ DZ + E_hh
    Q = D.shape[0]
    solved = np.linalg.solve(V_hh, np.concatenate([np.swapaxes(DZ, -1, -2), r_h[..., None], X_h], axis=-1))
    mean_b = (DZ @ solved[..., Q:Q + 1])[..., 0]
    cov_b = D - DZ @ solved[..., :Q]
    cov_b = 0.5 * (cov_b + np.swapaxes(cov_b, -1, -2))
    A = X_f - Z_f @ (DZ @ solved[..., Q + 1:])
    out = {"fit": mean_f + (Z_f @ mean_b[..., None])[..., 0], "b": mean_b, "b_cov": cov_b,
           "var": _rowdiag(A, Cb) + _rowdiag(Z_f, cov_b)}
    if prediction:
        V_fh = Z_f @ DZ + (0.0 if E_fh is None else E_fh)
        K = np.swapaxes(np.linalg.solve(V_hh, np.swapaxes(V_fh, -1, -2)), -1, -2)  # V_fh V_hh^-1
        out["y_fit"] = mean_f + (K @ r_h[..., None])[..., 0]
        out["y_var"] = (_rowdiag(X_f - K @ X_h, Cb) + np.diagonal(G_ff + E_ff, axis1=-2, axis2=-1)
                        - np.einsum("kfh,kfh->kf", K, V_fh))
    return out


def _error_inputs(params: ErrorParameters, rows: list[_Rows]) -> tuple[np.ndarray, np.ndarray | None,
                                                                       np.ndarray | None]:
    """Distances (k, n, n), the variance function's rows (k, n, m) and same-group masks (k, n, n) of k subjects'
    rows of one size (history rows first), for :meth:`ErrorParameters.matrices`."""
    n = rows[0].X.shape[0]
    M = np.stack([r.M for r in rows]) if params.omega is not None else None
    if params.structure is None:
        return np.zeros((len(rows), n, n)), M, None
    d, same = [], []
    for r in rows:
        t = _positions(r.same) if params.structure.time is None else r.times
        if params.structure.time is not None:
            check_times(params.structure, t, "the subject's rows")
        d.append(np.abs(t[:, None] - t[None, :]))
        same.append(r.same[:, None] == r.same[None, :])
    return np.stack(d), M, np.stack(same)


def _draw_batch(params: _Parameters, groups: list[_Group], prediction: bool, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Bayes, for k subjects of one shape: per posterior draw, ``b`` from its conditional (or prior) distribution,
    the mean trajectory and a new outcome (module notation). Returns mu (S, k, n_f), y (S, k, n_f) or None and the
    draws of b (S, k, Q)."""
    first = groups[0]
    k, S = len(groups), params.n_draws
    Z_f = np.stack([g.Z_f for g in groups])
    X_f = np.stack([g.future.X for g in groups])
    has_history = first.history is not None
    n_h = first.history.X.shape[0] if has_history else 0
    if has_history:
        Z_h = np.stack([g.Z_h for g in groups])
        X_h = np.stack([g.history.X for g in groups])
        y_h = np.stack([g.history.y for g in groups])
    d, M, same = _error_inputs(params.errors, [_stack(g.history, g.future) if has_history else g.future
                                               for g in groups])
    n = d.shape[-1]
    step = max(1, int(4e6 // max(1, k * n * n)))
    diagonal = params.errors.structure is None  # E = sigma^2 S^2: b's precision form, no n x n algebra
    if diagonal and has_history and M is None:
        ZtZ = np.swapaxes(Z_h, -1, -2) @ Z_h
        Zty = (np.swapaxes(Z_h, -1, -2) @ y_h[..., None])[..., 0]
        ZtX = np.swapaxes(Z_h, -1, -2) @ X_h
    mus, ys, bs = [], [], []
    for start in range(0, S, step):
        part = params.chunk(slice(start, start + step))
        s = part.beta.shape[0]
        D = _stacked_D(part.D, first.effects)  # (s, Q, Q)
        mean_f = np.einsum("sp,kfp->skf", part.beta, X_f)
        if diagonal:
            if has_history:  # b | y_h ~ N(C Z_h' W r_h, C), C = (D^-1 + Z_h' W Z_h)^-1, W = E_hh^-1 diagonal
                if M is None:  # W = I / sigma^2: the subjects' cross products, once
                    P = np.linalg.inv(D)[:, None] + ZtZ[None] / part.errors.sigma[:, None, None, None] ** 2
                    rhs = (Zty[None] - np.einsum("kqp,sp->skq", ZtX, part.beta)) / part.errors.sigma[:, None,
                                                                                                        None] ** 2
                else:
                    w = 1.0 / ((part.errors.sigma**2)[:, None, None] * part.errors.sd_ratios(M[:, :n_h]) ** 2)
                    ZW = Z_h[None] * w[..., None]  # (s, k, n_h, Q)
                    P = np.linalg.inv(D)[:, None] + np.swapaxes(Z_h, -1, -2)[None] @ ZW
                    r_h = y_h[None] - np.einsum("sp,knp->skn", part.beta, X_h)
                    rhs = np.einsum("sknq,skn->skq", ZW, r_h)
                C = np.linalg.inv(P)
                b = (C @ rhs[..., None])[..., 0] + (np.linalg.cholesky(C) @ rng.standard_normal(
                    rhs.shape)[..., None])[..., 0]
            else:
                b = np.einsum("sab,skb->ska", np.linalg.cholesky(D), rng.standard_normal((s, k, D.shape[-1])))
            mu = mean_f + (Z_f[None] @ b[..., None])[..., 0]
            if prediction:
                sd = part.errors.sigma[:, None, None] * (part.errors.sd_ratios(M[:, n_h:]) if M is not None else 1.0)
                ys.append(mu + sd * rng.standard_normal(mu.shape))
            bs.append(b)
            mus.append(mu)
            continue
        if has_history:
            r_h = y_h[None] - np.einsum("sp,knp->skn", part.beta, X_h)
        E = np.broadcast_to(part.errors.matrices(d, M, same), (s, k, n, n))
        if has_history:
            E_hh = E[..., :n_h, :n_h]
            DZ = D[:, None] @ np.swapaxes(Z_h, -1, -2)[None]  # D Z_h' (s, k, Q, n_h)
            V_hh = Z_h[None] @ DZ + E_hh
            solved = np.linalg.solve(V_hh, np.concatenate([np.swapaxes(DZ, -1, -2), r_h[..., None]], axis=-1))
            mean_b = (DZ @ solved[..., -1:])[..., 0]
            cov_b = D[:, None] - DZ @ solved[..., :-1]
            cov_b = 0.5 * (cov_b + np.swapaxes(cov_b, -1, -2))
        else:
            mean_b = np.zeros((s, k, D.shape[-1]))
            cov_b = np.broadcast_to(D[:, None], (s, k, *D.shape[1:]))
        b = mean_b + np.einsum("skab,skb->ska", _sqrt_psd(cov_b), rng.standard_normal(mean_b.shape))
        mu = mean_f + (Z_f[None] @ b[..., None])[..., 0]
        bs.append(b)
        mus.append(mu)
        if prediction:
            E_ff = E[..., n_h:, n_h:]
            if has_history:  # the future errors given the past ones
                E_fh = E[..., n_h:, :n_h]
                e_h = r_h - (Z_h[None] @ b[..., None])[..., 0]
                K = np.swapaxes(np.linalg.solve(E[..., :n_h, :n_h], np.swapaxes(E_fh, -1, -2)), -1, -2)
                mean_e = (K @ e_h[..., None])[..., 0]
                cov_e = E_ff - K @ np.swapaxes(E_fh, -1, -2)
            else:
                mean_e, cov_e = 0.0, E_ff
            ys.append(mu + mean_e + np.einsum("skab,skb->ska", _sqrt_psd(cov_e), rng.standard_normal(mu.shape)))
    return np.concatenate(mus), np.concatenate(ys) if prediction else None, np.concatenate(bs)


# ---- the public function ------------------------------------------------------------------------------------------
def predict(fit: Any, newdata: pd.DataFrame, *, level: int = 0, interval: str | None = "confidence",
            ci_prob: float = 0.95, history: pd.DataFrame | None = None, seed: int | None = None) -> Prediction:
    """Predict the mean response (and new outcomes) of any fit for ``newdata``, with intervals.

    Parameters
    ----------
    fit
        Any ML/REML fit (:func:`hierlmm.fit`) or Bayesian fit (:func:`hierlmm.fit_bayes`): plain, nested, crossed,
        serially correlated or heteroscedastic errors, or the marginal model (level 0 only).
    newdata
        Rows to predict, with every column the model uses (the response may be absent); for ``level=1`` the
        grouping columns; with serially correlated errors the correlation's time column; with a variance function
        its covariate and strata.
    level
        0: the population mean ``x' beta``; 1: a subject's mean ``x' beta + z' b`` (module notation).
    interval
        ``"confidence"`` (of the mean), ``"prediction"`` (of a new outcome: adds the errors, and at level 0 the
        random effects of a new subject) or None.
    ci_prob
        The intervals' coverage.
    history
        Observed rows (with outcomes) of subjects, for ``level=1``: each subject in ``history`` is conditioned on
        those rows instead of its training rows (a subject the fit never saw gets its dynamic prediction). Rows to
        predict are usually later than the history, but any rows are allowed. A frame with no rows is no history.
    seed
        Bayesian fits: seed of the draws of new random effects and outcomes (None: fresh randomness). An ML/REML
        prediction has no draws and refuses a seed.

    Returns
    -------
    Prediction
        The table (``fit``, ``se``/``sd``, ``lower``, ``upper``; ``y_fit``, ``y_se``/``y_sd`` for prediction
        intervals), the conditional random effects of subjects with a history, and for a Bayesian fit the draws.

    Raises
    ------
    SpecError
        Not a fit, an ``interval`` that is not a kind of interval, ``ci_prob`` outside (0, 1), a bad ``seed`` (or
        any seed for an ML/REML fit).
    DataError
        A ``level`` other than 0 or 1; a column missing from ``newdata`` or ``history``, or read differently from
        the fitted data (text in a numeric column); a missing grouping id; outcomes missing in ``history``; a level
        of a factor the fit did not see; two history rows of a subject at one time with serially correlated errors
        and no nugget; a new outcome of a fitted subject whose past errors are unknown (a Bayesian fit, or the
        correlation's time is not a model column, with serial correlation: pass ``history=data``).
    NotSupportedError
        ``level=1`` of the marginal model (it has no random effects); a ``history`` at level 0, or with crossed
        grouping factors (either engine); level-1 intervals of a crossed design beyond
        :data:`~hierlmm.engines.reml.covariance_parameters.MAX_DENSE_ROWS` rows.

    Warns
    -----
    UnusedOutcomesWarning
        Outcomes of new subjects in ``newdata`` (they belong in ``history``), or a history none of whose subjects
        is predicted.
    """
    engine = _engine(fit)
    check_level(level)
    _check_seed(seed, engine)
    interval = check_interval(interval)
    ci_prob = check_ci_prob(ci_prob)
    newdata = _check_frame(newdata, "newdata")
    if history is not None and isinstance(history, pd.DataFrame) and len(history) == 0:
        history = None  # no rows: no history
    if history is not None:
        history = _check_frame(history, "history")
        if level == 0:
            raise NotSupportedError("A history conditions a subject's random effects: it has no effect on "
                                    "population (level-0) predictions.", given="level=0, history=...",
                                    fix="Predict at level=1 with the history, or drop history=.")
    if level == 1 and fit.kind == "marginal":
        raise NotSupportedError("The marginal model has no random effects, so no subject-level (level=1) "
                                "predictions: D is only a parameter of V_i and may be indefinite.", given="level=1",
                                fix="Use level=0, or fit the hierarchical model (kind='hierarchical').")
    params = _parameters(fit)
    bayes = engine == "NUTS"
    prediction = interval == "prediction"
    if level == 0:
        return _population(fit, newdata, params, interval, ci_prob, engine, bayes, seed)
    if history is not None and is_crossed(fit.design):
        raise NotSupportedError("Dynamic predictions condition a subject's random effects on its own rows; with "
                                "crossed grouping factors a level's rows share the other factors' random effects, "
                                "so there is no subject to condition.", given=[b.factor for b in fit.design.blocks],
                                fix="Predict without history= (levels not in the fit get b ~ N(0, D)).")
    future = _rows(fit, newdata, params.errors, with_y=False, source="the new data")
    past = None if history is None else _rows(fit, history, params.errors, with_y=True, source="the history")
    _warn_unused_outcomes(fit, newdata, future, past)
    if bayes:
        return _subject_draws(fit, newdata, future, past, params, interval, ci_prob, seed)
    if interval is None and is_crossed(fit.design) and fit.design.n_obs > MAX_DENSE_ROWS:
        return _crossed_points(fit, newdata, future, engine, ci_prob)
    n = len(newdata)
    fitted, var = np.zeros(n), np.zeros(n)
    y_fit, y_var = np.zeros(n), np.zeros(n)
    b_rows, b_cov = [], {}
    for batch in _batches(_groups(fit, future, past, use_training=True)):
        res = _plugin_batch(params, batch, prediction)
        for j, group in enumerate(batch):
            fitted[group.target], var[group.target] = res["fit"][j], res["var"][j]
            if prediction:
                y_fit[group.target], y_var[group.target] = res["y_fit"][j], res["y_var"][j]
            if group.source != "training":
                _collect_b(fit, group, res["b"][j], res["b_cov"][j], b_rows, b_cov)
    table = pd.DataFrame({"fit": fitted, "se": np.sqrt(np.clip(var, 0, None))}, index=newdata.index)
    z = scipy.stats.norm.ppf(0.5 + ci_prob / 2)
    if prediction:
        table["y_fit"], table["y_se"] = y_fit, np.sqrt(np.clip(y_var, 0, None))
        table["lower"], table["upper"] = table["y_fit"] - z * table["y_se"], table["y_fit"] + z * table["y_se"]
    elif interval == "confidence":
        table["lower"], table["upper"] = table["fit"] - z * table["se"], table["fit"] + z * table["se"]
    uncertainty = ("plug-in: the variance parameters are treated as known; the standard errors include beta's "
                   "uncertainty and the prediction error of b given each subject's rows (Var(b | y_i))")
    return Prediction(table, 1, interval, ci_prob, engine, uncertainty, *_b_frame(b_rows, b_cov))


def _crossed_points(fit: Any, newdata: pd.DataFrame, future: _Rows, engine: str, ci_prob: float) -> Prediction:
    """Crossed factors beyond :data:`MAX_DENSE_ROWS` rows, no interval: ``x' beta + sum_k z_k' b_k`` with the fit's
    empirical-Bayes ``b_k`` (0 for a level the fit did not see)."""
    mean = future.X @ fit.beta
    ranef = fit.ranef()
    for block, Z, labels in zip(fit.design.blocks, future.Z, future.labels, strict=True):
        b = ranef[block.factor].mean.reindex(labels).fillna(0.0).to_numpy()
        mean = mean + np.einsum("nq,nq->n", Z, b)
    return Prediction(pd.DataFrame({"fit": mean}, index=newdata.index), 1, None, ci_prob, engine,
                      "point predictions: the empirical-Bayes b of each level (0 for a level the fit did not see)")


def _warn_unused_outcomes(fit: Any, newdata: pd.DataFrame, future: _Rows, past: _Rows | None) -> None:
    """Warn (:class:`~hierlmm.errors.UnusedOutcomesWarning`) when outcomes are given that cannot be used: new subjects'
    outcomes in ``newdata``, or a history none of whose subjects is in ``newdata`` (a mislabelled id)."""
    keys_f, top = _subject_keys(fit, future)
    if top is None:
        return
    keys_h = set() if past is None else set(_subject_keys(fit, past)[0].tolist())
    if past is not None and not keys_h & set(keys_f.tolist()):
        warnings.warn(f"None of the history's subjects ({sorted(keys_h)[:5]}) is in the new data "
                      f"({sorted(set(keys_f.tolist()))[:5]}): the history is not used. Are the ids spelled "
                      "alike in both?", UnusedOutcomesWarning, stacklevel=3)
    response = names_in(fit.design.spec.response)
    if len(response) != 1 or response[0] not in newdata.columns:
        return
    observed = pd.to_numeric(newdata[response[0]], errors="coerce").notna().to_numpy()
    new = ~np.isin(keys_f, list(fit.design.blocks[top].levels)) & ~np.isin(keys_f, list(keys_h))
    if (observed & new).any():
        subjects = sorted(set(keys_f[observed & new].tolist()))
        warnings.warn(f"The new data carry outcomes ({response[0]}) of {len(subjects)} subject(s) the fit has not seen "
                      f"({subjects[:5]}); predictions do not use them. Pass those rows as history= to condition "
                      "the subjects' random effects on them (a dynamic prediction).", UnusedOutcomesWarning,
                      stacklevel=3)


def _collect_b(fit: Any, group: _Group, mean: np.ndarray, cov: np.ndarray, rows: list, covs: dict) -> None:
    """Record the conditional random effects of a subject conditioned on a history (or new without one)."""
    first = 0
    for k, level in group.effects:
        block = fit.design.blocks[k]
        q = block.q
        rows.append(((block.factor, level), dict(zip(block.effect_names, mean[first:first + q], strict=True))))
        covs[(block.factor, level)] = cov[first:first + q, first:first + q]
        first += q


def _b_frame(rows: list, covs: dict) -> tuple[pd.DataFrame, dict]:
    if not rows:
        return pd.DataFrame(), {}
    index = pd.MultiIndex.from_tuples([key for key, _ in rows], names=["factor", "level"])
    return pd.DataFrame([values for _, values in rows], index=index), covs


def _population(fit: Any, newdata: pd.DataFrame, params: _Parameters, interval: str | None, ci_prob: float,
                engine: str, bayes: bool, seed: int | None) -> Prediction:
    """Level 0: ``x' beta``; a new outcome of a new subject adds ``diag(V)`` (module notation)."""
    design: Design = fit.design
    X, Zs = new_model_matrices(design, newdata)
    prediction = interval == "prediction"
    marginal_var = 0.0
    if prediction:
        M = new_log_sd_rows(fit, params.errors, newdata.reset_index(drop=True))
        marginal_var = sum(_rowdiag(Z[None], D) for Z, D in zip(Zs, params.D, strict=True))  # (S, n)
        marginal_var = marginal_var + params.errors.sigma[:, None] ** 2 * (
            params.errors.sd_ratios(M) ** 2 if M is not None else 1.0)
    if not bayes:
        fitted = X @ params.beta[0]
        table = pd.DataFrame({"fit": fitted, "se": np.sqrt(_rowdiag(X, params.cov_beta))}, index=newdata.index)
        z = scipy.stats.norm.ppf(0.5 + ci_prob / 2)
        if prediction:
            table["y_fit"] = fitted
            table["y_se"] = np.sqrt(table["se"].to_numpy() ** 2 + np.asarray(marginal_var)[0])
            sd = table["y_se"]
        else:
            sd = table["se"]
        if interval is not None:
            table["lower"], table["upper"] = fitted - z * sd, fitted + z * sd
        return Prediction(table, 0, interval, ci_prob, engine,
                          "plug-in: beta's uncertainty (Cov(beta))" + (
                              "; a new outcome adds the marginal variance diag(Z D Z' + sigma^2 S R S)"
                              if prediction else ""))
    mu = params.beta @ X.T
    y = None
    if prediction:
        rng = np.random.default_rng(seed)
        y = mu + np.sqrt(marginal_var) * rng.standard_normal(mu.shape)
    return _bayes_prediction(fit, newdata, mu, y, 0, interval, ci_prob,
                             "posterior draws of beta" + ("; a new outcome of a new subject adds a draw of its "
                                                          "marginal distribution, row by row" if prediction else ""))


def _subject_draws(fit: Any, newdata: pd.DataFrame, future: _Rows, past: _Rows | None, params: _Parameters,
                   interval: str | None, ci_prob: float, seed: int | None) -> Prediction:
    """Bayes, level 1: posterior draws of ``b`` for subjects in the fit, conditional or prior draws otherwise."""
    rng = np.random.default_rng(seed)
    prediction = interval == "prediction"
    n, S = len(newdata), params.n_draws
    mu = np.zeros((S, n))
    y = np.zeros((S, n)) if prediction else None
    keys_f, top = _subject_keys(fit, future)
    fitted = set() if top is None else set(fit.design.blocks[top].levels)
    keys_h = set() if past is None else set(_subject_keys(fit, past)[0].tolist())
    known = np.array([(top is None or k in fitted) and k not in keys_h for k in keys_f], dtype=bool)
    if known.any():  # the posterior draws of b (new inner levels: N(0, D) draws)
        frame = newdata.iloc[np.flatnonzero(known)]
        mu[:, known] = mean_draws(fit, frame, 1, rng)
        if prediction:
            sub = future.take(np.flatnonzero(known))
            if params.errors.structure is not None:
                raise DataError(_PAST_ERRORS, given="interval='prediction', history=None", fix=_PAST_ERRORS_FIX)
            for idx in _positions_by_key(keys_f[known]).values():
                rows = sub.take(idx)
                cols = np.flatnonzero(known)[idx]
                for start in range(0, S, CHUNK):
                    part = params.errors.draws(slice(start, start + CHUNK))
                    E = _errors(part, rows)
                    e = np.einsum("sab,sb->sa", _sqrt_psd(E), rng.standard_normal((E.shape[0], idx.size)))
                    y[start:start + E.shape[0], cols] = mu[start:start + E.shape[0], cols] + e
    b_rows, b_cov = [], {}
    if (~known).any():
        sub = future.take(np.flatnonzero(~known))
        batches: dict[tuple, list[_Group]] = {}
        for group in _groups(fit, sub, past, use_training=False):
            n_h = 0 if group.history is None else group.history.X.shape[0]
            shape = (n_h, group.future.X.shape[0], tuple(k for k, _ in group.effects))
            batches.setdefault(shape, []).append(group)
        columns = np.flatnonzero(~known)
        for groups in batches.values():
            mu_k, y_k, b_k = _draw_batch(params, groups, prediction, rng)
            b_mean = b_k.mean(axis=0)  # (k, Q)
            centred = b_k - b_mean
            b_var = np.einsum("ska,skb->kab", centred, centred) / max(1, b_k.shape[0] - 1)
            cols = np.concatenate([columns[group.target] for group in groups])  # one scatter per batch
            mu[:, cols] = mu_k.reshape(mu_k.shape[0], -1)
            if prediction:
                y[:, cols] = y_k.reshape(y_k.shape[0], -1)
            for j, group in enumerate(groups):
                _collect_b(fit, group, b_mean[j], b_var[j], b_rows, b_cov)
    out = _bayes_prediction(fit, newdata, mu, y, 1, interval, ci_prob,
                            "posterior draws: b of subjects in the fit are their posterior draws; of subjects with a "
                            "history, exact draws of b | y_h at every draw's parameters; of new subjects without "
                            "one, draws of N(0, D)" + ("; a new outcome adds the draw's errors (given the past "
                                                       "errors with serial correlation)" if prediction else ""))
    b, covs = _b_frame(b_rows, b_cov)
    return Prediction(out.table, 1, interval, ci_prob, "NUTS", out.uncertainty, b, covs, out.draws)


def _bayes_prediction(fit: Any, newdata: pd.DataFrame, mu: np.ndarray, y: np.ndarray | None, level: int,
                      interval: str | None, ci_prob: float, uncertainty: str) -> Prediction:
    tail = (1 - ci_prob) / 2
    table = pd.DataFrame({"fit": mu.mean(axis=0), "sd": mu.std(axis=0, ddof=1)}, index=newdata.index)
    if y is not None:
        table["y_fit"], table["y_sd"] = y.mean(axis=0), y.std(axis=0, ddof=1)
    if interval is not None:
        band = y if interval == "prediction" else mu
        table["lower"], table["upper"] = np.quantile(band, tail, axis=0), np.quantile(band, 1 - tail, axis=0)
    post = fit.tree["posterior"]
    C, S = post.sizes["chain"], post.sizes["draw"]
    row = newdata.index.to_numpy() if newdata.index.is_unique else np.arange(mu.shape[1])  # newdata's labels
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "row": row}
    data = {"mu": xr.DataArray(mu.reshape(C, S, -1), dims=("chain", "draw", "row"), coords=coords)}
    if y is not None:
        data["y"] = xr.DataArray(y.reshape(C, S, -1), dims=("chain", "draw", "row"), coords=coords)
    tree = xr.DataTree.from_dict({"predictions": xr.Dataset(data)})
    return Prediction(table, level, interval, ci_prob, "NUTS", uncertainty, draws=tree)


def trajectories(fit: Any, newdata: pd.DataFrame, *, level: int = 0, ci_prob: float = 0.95, predictive: bool = False,
                 history: pd.DataFrame | None = None, seed: int | None = None) -> pd.DataFrame:
    """Mean trajectories with pointwise bands as columns of ``newdata``, for plotting: :func:`predict` with a
    confidence interval, or with ``predictive=True`` a prediction interval of new outcomes, for any fit.

    Parameters
    ----------
    fit, newdata, level, ci_prob, history, seed
        As :func:`predict` (``level=0``: the population trajectory; ``level=1``: each subject's).
    predictive
        Bands of new outcomes (``interval="prediction"``) instead of the mean's.

    Returns
    -------
    pandas.DataFrame
        ``newdata`` (index reset) with ``mean`` (the mean response, or with ``predictive=True`` the expected new
        outcome), ``lower`` and ``upper``.

    Raises
    ------
    SpecError
        ``predictive`` is not a bool; otherwise as :func:`predict`.
    """
    if not isinstance(predictive, bool):
        raise SpecError("predictive is True or False.", given=predictive,
                        fix="predictive=True for bands of new outcomes, False for the mean's.")
    out = predict(fit, newdata, level=level, interval="prediction" if predictive else "confidence", ci_prob=ci_prob,
                  history=history, seed=seed)
    frame = newdata.reset_index(drop=True).copy()
    frame["mean"] = (out["y_fit"] if predictive else out["fit"]).to_numpy()
    frame["lower"], frame["upper"] = out["lower"].to_numpy(), out["upper"].to_numpy()
    return frame


__all__: Sequence[str] = ("INTERVALS", "Prediction", "check_interval", "predict", "trajectories")
