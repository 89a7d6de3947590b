"""Summaries of a fit: nlme-like text for people, a JSON-ready dict for scripts.

The dict's keys are the command-line contract (``hierlmm fit --json``), the same for every kind of ML/REML fit:
``model``, ``kind``, ``method``, ``n_obs``, ``n_dropped``, ``dropped_by_column``, ``groups``, ``fixef`` {names,
estimate, se, df, t, p}, ``random`` {factor: {names, structure, cov, sd, corr}}, ``ranef`` {factor: {levels,
effects, mean, se}} (null for the marginal model), ``sigma``, ``loglik``, ``aic``, ``bic``, ``n_params``,
``converged``, plus each kind's own keys (:func:`to_dict`).
"""

from __future__ import annotations

import json
import numbers
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.marginal_model import MarginalBayesFit
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.engines.reml.marginal_model import MarginalFit
from hierlmm.engines.reml.ml_fit import MLFit
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import SpecError
from hierlmm.report import plots
from hierlmm.report.fit_files import save
from hierlmm.structures.random_effects import sd_corr


def fixef_dict(table: pd.DataFrame) -> dict[str, list]:
    """An nlme-style fixed-effects table as the ``--json`` contract's ``fixef`` block."""
    return {"names": list(table.index), "estimate": table["Value"].tolist(), "se": table["Std.Error"].tolist(),
            "df": [int(x) for x in table["DF"]], "t": table["t-value"].tolist(), "p": table["p-value"].tolist()}


def _random_dict(fit: REMLResult) -> dict[str, Any]:
    """The ``random`` block: per grouping factor the effects, the structure, ``cov``, ``sd`` and ``corr`` (a negative
    variance of the marginal model: its ``sd`` and correlations null, ``variance`` given)."""
    random: dict[str, Any] = {}
    for block, D in zip(fit.design.blocks, fit.D, strict=True):  # the chapter's D
        variance = np.diag(D)
        if fit.kind == "marginal":
            sd = [float(np.sqrt(v)) if v >= 0 else None for v in variance]
            corr = [[float(D[i, j] / np.sqrt(variance[i] * variance[j])) if variance[i] > 0 and variance[j] > 0
                     else None for j in range(block.q)] for i in range(block.q)]
            entry = {"names": list(block.effect_names), "structure": "marginal", "cov": D.tolist(),
                     "variance": variance.tolist(), "sd": sd, "corr": corr}
        else:
            sd_values, corr_values = sd_corr(D)
            entry = {"names": list(block.effect_names), "structure": block.structure, "cov": D.tolist(),
                     "sd": sd_values.tolist(), "corr": corr_values.tolist()}
        if block.parts:  # pdBlocked: each diagonal block's structure and effects
            first, parts = 0, []
            for structure, q in block.parts:
                parts.append({"structure": structure, "names": list(block.effect_names[first:first + q])})
                first += q
            entry["blocks"] = parts
        random[block.factor] = entry
    return random


def _ranef_dict(fit: REMLResult) -> dict[str, Any] | None:
    """The ``ranef`` block: per grouping factor the levels and the empirical-Bayes ``b_i`` (None for the marginal
    model, which has no random effects)."""
    if fit.kind == "marginal":
        return None
    return {factor: {"levels": [str(level) for level in effects.mean.index], "effects": list(effects.mean.columns),
                     "mean": effects.mean.to_numpy().tolist(),
                     "se": np.sqrt(np.clip(np.diagonal(effects.cov_prediction, axis1=1, axis2=2), 0, None)).tolist()}
            for factor, effects in fit.ranef().items()}


def to_dict(fit: REMLResult) -> dict[str, Any]:
    """An ML/REML fit of any kind as plain Python types (the ``--json`` contract; see the module docstring).

    Every kind has the same keys; a kind adds its own: the marginal model ``min_eigen_D``, ``kappa`` and ``icc``;
    serially correlated or heteroscedastic errors ``correlation`` and ``variance_function`` ({type, form,
    parameters, intervals} or null); the nested engine ``boundary`` and ``seconds``.
    """
    out: dict[str, Any] = {
        "model": fit.design.spec.formula,
        "kind": fit.kind,
        "method": fit.method,
        "n_obs": fit.design.n_obs,
        "n_dropped": fit.design.missing.n_dropped,
        "dropped_by_column": dict(fit.design.missing.by_column),
        "groups": {b.factor: b.n_levels for b in fit.design.blocks},
        "fixef": fixef_dict(fit.fixef()),
        "random": _random_dict(fit),
        "ranef": _ranef_dict(fit),
        "sigma": fit.sigma,
        "loglik": fit.loglik,
        "aic": fit.aic,
        "bic": fit.bic,
        "n_params": fit.n_params,
        "converged": fit.converged,
    }
    if isinstance(fit, MLFit):
        out["boundary"] = list(fit.optimizer.boundary)
        out["seconds"] = fit.seconds
    if isinstance(fit, MarginalFit):
        out.update(min_eigen_D=fit.min_eigen_D, kappa=fit.kappa, icc=fit.icc)
    if isinstance(fit, CorrelatedFit):
        s = fit.structure
        out["correlation"] = None if s is None else {
            "type": s.kind, "form": s.form, "nugget": s.nugget, "parameters": fit.correlation_parameters,
            "intervals": {k: list(v) for k, v in fit.correlation_intervals().items()}}
        out["variance_function"] = None if fit.weights is None else {
            "type": fit.weights.kind, "form": fit.weights.form, "parameters": fit.variance_parameters,
            "intervals": {k: list(v) for k, v in fit.variance_intervals().items()}}
    return out


def summary(fit: REMLResult | BayesFit | MarginalBayesFit, data_name: str | None = None, ddf: str = "nlme") -> str:
    """The printout of any fit: nlme-like for ML/REML fits (their ``summary()``: criteria, random effects, error
    structure, fixed effects with the t-table of ``ddf``: ``"nlme"``, ``"satterthwaite"`` or ``"kenward-roger"``),
    the posterior table and diagnostics for Bayesian ones (:func:`bayes_summary`)."""
    if isinstance(fit, REMLResult):
        return fit.summary(data_name, ddf=ddf)
    if isinstance(fit, BayesFit | MarginalBayesFit):
        if ddf != "nlme":
            raise SpecError("Denominator degrees of freedom belong to t tests of an ML/REML fit: a posterior has "
                            "none.", given={"ddf": ddf, "fit": type(fit).__name__},
                            fix="Drop ddf= for a Bayesian fit (its table gives posterior intervals).")
        return bayes_summary(fit, data_name)
    raise SpecError("summary() takes a hierlmm fit.", given=type(fit).__name__,
                    fix="Pass the result of hierlmm.fit, hierlmm.fit_ml or hierlmm.fit_bayes.")


def bayes_to_dict(fit: BayesFit, ci_prob: float = 0.95) -> dict[str, Any]:
    """A Bayesian fit as plain Python types (the ``--method nuts --json`` contract)."""
    table = fit.summary(ci_prob)
    diag = fit.diagnostics()
    return {
        "model": fit.design.spec.formula,
        "method": "nuts",
        "kind": fit.kind,
        "sampler": fit.sampler,
        "centered": list(getattr(fit.bayes_model, "centered", ())),
        "n_obs": fit.design.n_obs,
        "n_dropped": fit.design.missing.n_dropped,
        "groups": {b.factor: b.n_levels for b in fit.design.blocks},
        "posterior": {
            "parameter": list(table.index), **{c: table[c].astype(float).tolist() for c in
                                               ("mean", "sd", "lower", "upper", "r_hat", "ess_bulk", "ess_tail")},
        },
        "diagnostics": {"max_rhat": diag.max_rhat, "min_ess_bulk": diag.min_ess_bulk, "divergences": diag.divergences,
                        "min_bfmi": diag.min_bfmi, "problems": list(diag.problems)},
        "seconds": fit.seconds,
        **_min_eigen_summary(fit, ci_prob),
        **_error_structure_summary(fit, ci_prob),
    }


def _error_structure_summary(fit: Any, ci_prob: float) -> dict[str, Any]:
    """For a Bayesian fit with serially correlated or heteroscedastic errors, ``correlation`` and
    ``variance_function`` as in the REML ``--json`` ({type, form, parameters, intervals}), with posterior medians and
    equal-tailed intervals."""
    if not hasattr(fit, "variance_labels"):  # not a CorrelatedBayesFit
        return {}
    structure, labels = fit.structure, fit.variance_labels()
    function = getattr(fit.bayes_model.variance, "function", None)  # None for a bare log-SD design
    draws, tail = fit.parameter_draws(), (1 - ci_prob) / 2

    def block(names: list[str]) -> dict[str, Any]:
        return {"estimate": "posterior median",
                "parameters": {n: float(np.median(draws[n])) for n in names},
                "intervals": {n: np.quantile(draws[n], [tail, 1 - tail]).tolist() for n in names}}

    out: dict[str, Any] = {"correlation": None, "variance_function": None}
    if structure is not None:
        names = list(structure.parameters(np.zeros(structure.n_params)))  # REML's names (corCAR1: phi, not range)
        out["correlation"] = {"type": structure.kind, "form": structure.form, "nugget": structure.nugget,
                              **block(names)}
    if labels:
        out["variance_function"] = {"type": function.kind if function else "log-SD design",
                                    "form": function.form if function else None, **block(labels)}
    return out


def _min_eigen_summary(fit: Any, ci_prob: float) -> dict[str, Any]:
    """For a Bayesian marginal-model fit, the posterior of D's smallest eigenvalue (``min_eigen_D``)."""
    if fit.kind != "marginal":
        return {}
    values = fit.tree["posterior"]["min_eigen_D"].values.ravel()
    tail = (1 - ci_prob) / 2
    return {"min_eigen_D": {"mean": float(values.mean()), "lower": float(np.quantile(values, tail)),
                            "upper": float(np.quantile(values, 1 - tail)), "prob_negative": float((values < 0).mean())}}


def bayes_summary(fit: BayesFit, data_name: str | None = None, ci_prob: float = 0.95) -> str:
    """A printout of a Bayesian fit: posterior table and diagnostics."""
    post = fit.tree["posterior"]
    chains, draws = post.sizes["chain"], post.sizes["draw"]
    what = ("marginal model" if getattr(fit, "kind", "") == "marginal"
            else f"linear mixed-effects model ({fit.sampler} sampler)")
    lines = [f"Bayesian {what} by NUTS: {fit.design.spec.formula}"]
    if data_name:
        lines.append(f"  Data: {data_name}; {chains} chains x {draws} draws; {fit.seconds:.1f} s")
    table = fit.summary(ci_prob)
    lines += ["", table.to_string(float_format=lambda x: f"{x:.4g}"), "", f"Diagnostics: {fit.diagnostics()}"]
    return "\n".join(lines)


TREE_FORMATS = ("netcdf", "zarr")


def save_fit(fit: BayesFit, folder: str | Path, ml: MLFit | None = None, tree_format: str = "netcdf") -> list[Path]:
    """Save a Bayesian fit into ``folder``: the fit (``posterior.nc``, netCDF4 through h5netcdf, or
    ``posterior.zarr``: :func:`hierlmm.save`'s file, the DataTree at its root), the summary table (CSV) and plots
    (PNG: rank plots, posterior predictive check, and with an ML/REML fit the Bayes-versus-REML forest plot).

    Read the fit back with ``hierlmm.load(folder)``, the tree alone with ``xarray.open_datatree(path)`` (or
    ``arviz.from_netcdf`` / ``arviz.from_zarr``).
    """
    if tree_format not in TREE_FORMATS:
        raise SpecError("Unknown format for the saved DataTree.", given=tree_format, fix="Use 'netcdf' or 'zarr'.")

    import matplotlib  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    saved = [folder / "summary.csv"]
    fit.summary().to_csv(saved[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plots.rank_plot(fit).savefig(folder / "rank.png", dpi=80)
        plots.ppc_plot(fit).savefig(folder / "ppc.png", dpi=80)
        saved += [folder / "rank.png", folder / "ppc.png"]
        if ml is not None:
            plots.forest(fit, ml).savefig(folder / "forest.png", dpi=80)
            saved.append(folder / "forest.png")
        # the whole fit (hierlmm.save): the DataTree at the root, hierlmm's part in /hierlmm; hierlmm.load(folder)
        saved.append(save(fit, folder / ("posterior.zarr" if tree_format == "zarr" else "posterior.nc"),
                          format=tree_format))
    plt.close("all")
    return saved


def json_ready(value: Any) -> Any:
    """``value`` in JSON's types, for strict JSON: NumPy scalars and arrays as Python numbers and lists, tuples as
    lists, paths as strings, and every non-finite float (NaN, inf: a quantity that is undefined, e.g. R-hat of one
    chain) as None, which JSON writes as ``null``."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, numbers.Real):  # float, NumPy floats, and other real scalars
        return float(value) if np.isfinite(float(value)) else None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def json_text(value: Any) -> str:
    """Strict JSON text of a summary (:func:`to_dict`, :func:`bayes_to_dict` or any command's output): no ``NaN`` or
    ``Infinity`` tokens, which JSON does not have and strict parsers (JavaScript's ``JSON.parse``, ``jq``) refuse;
    non-finite numbers become ``null`` (:func:`json_ready`)."""
    return json.dumps(json_ready(value), indent=1, allow_nan=False)
