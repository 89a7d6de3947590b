"""Summaries of a fit: nlme-like text for people, a JSON-ready dict for scripts.

The dict's keys are the command-line contract (``hierlmm fit --json``): ``method``, ``n_obs``, ``n_dropped``,
``groups``, ``fixef`` {names, estimate, se, df, t, p}, ``random`` {factor: {names, cov, sd, corr}}, ``sigma``,
``loglik``, ``aic``, ``bic``, ``seconds``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.engines.reml.crossed_fit import CrossedFit
from hierlmm.engines.reml.marginal_model import MarginalFit
from hierlmm.engines.reml.ml_fit import MLFit
from hierlmm.errors import SpecError
from hierlmm.report import plots
from hierlmm.structures.random_effects import correlated_pairs, sd_corr

_STRUCTURE = {
    "pdSymm": "General positive-definite, Log-Cholesky parametrization",
    "pdDiag": "Diagonal",
    "pdIdent": "Multiple of an Identity",
    "pdCompSymm": "Compound Symmetry",
}


def structure_label(block) -> str:  # noqa: ANN001 - a design block
    """nlme's name of a block's structure (``Structure:`` line of ``print.lme``)."""
    if block.structure != "pdBlocked":
        return _STRUCTURE.get(block.structure, block.structure)
    parts, first = [], 0
    for structure, q in block.parts:
        parts.append(f"{_STRUCTURE.get(structure, structure)} for {', '.join(block.effect_names[first:first + q])}")
        first += q
    return "Blocked: " + "; ".join(parts)


def fixef_dict(table: pd.DataFrame) -> dict[str, list]:
    """An nlme-style fixed-effects table as the ``--json`` contract's ``fixef`` block."""
    return {"names": list(table.index), "estimate": table["Value"].tolist(), "se": table["Std.Error"].tolist(),
            "df": [int(x) for x in table["DF"]], "t": table["t-value"].tolist(), "p": table["p-value"].tolist()}


def to_dict(fit: MLFit) -> dict[str, Any]:
    """The fit as plain Python types (the ``--json`` contract)."""
    table = fit.fixef()
    random = {}
    for block, D in zip(fit.design.blocks, fit.D, strict=True):  # noqa: N806
        sd, corr = sd_corr(D)
        random[block.factor] = {
            "names": list(block.effect_names), "structure": block.structure, "cov": D.tolist(),
            "sd": sd.tolist(), "corr": corr.tolist(),
        }
        if block.parts:  # pdBlocked: each diagonal block's structure and effects
            first, parts = 0, []
            for structure, q in block.parts:
                parts.append({"structure": structure, "names": list(block.effect_names[first:first + q])})
                first += q
            random[block.factor]["blocks"] = parts
    return {
        "model": fit.design.spec.formula,
        "method": fit.method,
        "n_obs": fit.design.n_obs,
        "n_dropped": fit.design.missing.n_dropped,
        "dropped_by_column": dict(fit.design.missing.by_column),
        "groups": {b.factor: b.n_levels for b in fit.design.blocks},
        "fixef": fixef_dict(table),
        "random": random,
        "sigma": fit.sigma,
        "loglik": fit.loglik,
        "aic": fit.aic,
        "bic": fit.bic,
        "converged": fit.optimizer.converged,
        "boundary": list(fit.optimizer.boundary),
        "seconds": fit.seconds,
    }


def marginal_to_dict(fit: MarginalFit) -> dict[str, Any]:
    """A marginal-model fit as plain Python types (``--kind marginal --json``): the same ``random`` block as a
    hierarchical fit (a negative "variance" reported as such, its SD as null) plus ``min_eigen_D``, ``kappa`` and
    ``icc``."""
    table = fit.fixef()
    block = fit.design.blocks[0]
    variance = np.diag(fit.D)
    sd = [float(np.sqrt(v)) if v >= 0 else None for v in variance]
    corr = [[float(fit.D[i, j] / np.sqrt(variance[i] * variance[j])) if variance[i] > 0 and variance[j] > 0 else None
             for j in range(block.q)] for i in range(block.q)]
    return {
        "model": fit.design.spec.formula,
        "kind": "marginal",
        "method": fit.method,
        "n_obs": fit.design.n_obs,
        "n_dropped": fit.design.missing.n_dropped,
        "groups": {block.factor: block.n_levels},
        "fixef": fixef_dict(table),
        "random": {block.factor: {"names": list(block.effect_names), "structure": "marginal", "cov": fit.D.tolist(),
                                  "variance": variance.tolist(), "sd": sd, "corr": corr}},
        "min_eigen_D": fit.min_eigen_D,
        "kappa": fit.kappa,
        "icc": fit.icc,
        "sigma": fit.sigma,
        "loglik": fit.loglik,
        "converged": fit.converged,
    }


def correlated_to_dict(fit: CorrelatedFit) -> dict[str, Any]:
    """A fit with serially correlated and/or heteroscedastic errors as plain Python types: the ``--json`` contract
    plus ``correlation`` and ``variance_function``, each {type, form, parameters, intervals} or None."""
    table = fit.fixef()
    block = fit.design.blocks[0]
    sd, corr = sd_corr(fit.D)
    s = fit.structure
    return {
        "model": fit.design.spec.formula,
        "method": fit.method,
        "n_obs": fit.design.n_obs,
        "n_dropped": fit.design.missing.n_dropped,
        "groups": {block.factor: block.n_levels},
        "fixef": fixef_dict(table),
        "random": {block.factor: {"names": list(block.effect_names), "structure": block.structure,
                                  "cov": fit.D.tolist(), "sd": sd.tolist(), "corr": corr.tolist()}},
        "correlation": None if s is None else {
            "type": s.kind, "form": s.form, "nugget": s.nugget,
            "parameters": fit.correlation_parameters,
            "intervals": {k: list(v) for k, v in fit.correlation_intervals().items()}},
        "variance_function": None if fit.weights is None else {
            "type": fit.weights.kind, "form": fit.weights.form, "parameters": fit.variance_parameters,
            "intervals": {k: list(v) for k, v in fit.variance_intervals().items()}},
        "sigma": fit.sigma,
        "loglik": fit.loglik,
        "converged": fit.converged,
    }


def crossed_to_dict(fit: CrossedFit) -> dict[str, Any]:
    """A fit with crossed factors (lme4's engine) as plain Python types: the ``--json`` contract's keys that apply."""
    random = {}
    for block, D in zip(fit.design.blocks, fit.D, strict=True):  # noqa: N806
        sd, corr = sd_corr(D)
        random[block.factor] = {"names": list(block.effect_names), "structure": block.structure, "cov": D.tolist(),
                                "sd": sd.tolist(), "corr": corr.tolist()}
    return {"model": fit.design.spec.formula, "method": fit.method, "n_obs": fit.design.n_obs,
            "n_dropped": fit.design.missing.n_dropped, "groups": {b.factor: b.n_levels for b in fit.design.blocks},
            "fixef": fixef_dict(fit.fixef()), "random": random, "sigma": fit.sigma, "loglik": fit.loglik,
            "converged": fit.converged}


def crossed_summary(fit: CrossedFit, data_name: str | None = None) -> str:
    """A printout of a fit with crossed factors, laid out as lme4's ``summary(lmer(...))``."""
    lines = [f"Linear mixed model fit by {fit.method} (crossed random effects, lme4's engine)"]
    if data_name:
        lines.append(f"  Data: {data_name}")
    lines += [f"  logLik {fit.loglik:.3f}" + ("" if fit.converged else "  (NOT converged: see the warning)"), "",
              "Random effects:", f" {'Groups':<12} {'Name':<14} {'Std.Dev.':>10}"]
    for block, D in zip(fit.design.blocks, fit.D, strict=True):  # noqa: N806
        for j, name in enumerate(block.effect_names):
            lines.append(f" {block.factor if j == 0 else '':<12} {name:<14} {np.sqrt(D[j, j]):10.5f}")
    lines += [f" {'Residual':<12} {'':<14} {fit.sigma:10.5f}", "", f"Fixed effects:  {fit.design.spec.fixed_formula}",
              fit.fixef().to_string(float_format=lambda x: f"{x:.5g}"), "",
              f"Number of obs: {fit.design.n_obs}, groups: "
              + ", ".join(f"{b.factor} {b.n_levels}" for b in fit.design.blocks)]
    return "\n".join(lines)


def marginal_summary(fit: MarginalFit, data_name: str | None = None) -> str:
    """A printout of a marginal-model fit."""
    lines = [f"Marginal model fit by {fit.method}: y_i ~ N(X_i beta, Z_i D Z_i' + sigma^2 I), D not necessarily "
             "positive definite"]
    if data_name:
        lines.append(f"  Data: {data_name}")
    lines += [f"  logLik {fit.loglik:.3f}; smallest eigenvalue of D {fit.min_eigen_D:.4g}"
              + (f"; ICC {fit.icc:.4f}" if fit.icc is not None else ""), "", "D:",
              pd.DataFrame(fit.D, index=fit.design.blocks[0].effect_names,
                           columns=fit.design.blocks[0].effect_names).to_string(float_format=lambda x: f"{x:.5g}"),
              f"Residual SD: {fit.sigma:.5g}", "", "Fixed effects:",
              fit.fixef().to_string(float_format=lambda x: f"{x:.5g}")]
    return "\n".join(lines)


def summary(fit: MLFit, data_name: str | None = None) -> str:
    """An nlme-like printout of the fit (``summary(lme(...))``)."""
    spec = fit.design.spec
    lines = [f"Linear mixed-effects model fit by {fit.method}"]
    if data_name:
        lines.append(f"  Data: {data_name}")
    lines += [
        f"  {'AIC':>10} {'BIC':>10} {'logLik':>10}",
        f"  {fit.aic:10.3f} {fit.bic:10.3f} {fit.loglik:10.3f}",
        "",
        "Random effects:",
    ]
    for block, D in zip(fit.design.blocks, fit.D, strict=True):  # noqa: N806
        sd, corr = sd_corr(D)
        lines.append(f" Formula: ~{block.effects.deparse()} | {block.factor}")
        lines.append(f" Structure: {structure_label(block)}")
        width = max(11, *(len(n) for n in block.effect_names))
        corr_head = "Corr" if correlated_pairs(block) else ""
        lines.append(f" {'':<{width}} {'StdDev':>10}  {corr_head}")
        for j, name in enumerate(block.effect_names):
            cells = ""
            if corr_head:
                cells = " ".join(f"{corr[j, k]:6.3f}" for k in range(j)) if j else _abbrev(block.effect_names)
            lines.append(f" {name:<{width}} {sd[j]:10.7f}  {cells}")
    lines.append(f" {'Residual':<11} {fit.sigma:10.7f}")
    lines += ["", f"Fixed effects:  {spec.fixed_formula}"]
    table = fit.fixef()
    width = max(len(n) for n in table.index)
    lines.append(f" {'':<{width}} {'Value':>11} {'Std.Error':>10} {'DF':>5} {'t-value':>9} {'p-value':>8}")
    for name, row in table.iterrows():
        lines.append(
            f" {name:<{width}} {row['Value']:11.6f} {row['Std.Error']:10.6f} {int(row['DF']):5d} "
            f"{row['t-value']:9.4f} {row['p-value']:8.4f}"
        )
    lines += ["", f"Number of Observations: {fit.design.n_obs}"]
    lines.append("Number of Groups: " + ", ".join(f"{b.factor} {b.n_levels}" for b in fit.design.blocks))
    if fit.design.missing.n_dropped:
        lines.append(f"Missing values: {fit.design.missing}")
    status = "converged" if fit.optimizer.converged else "NOT converged (see the warning)"
    lines.append(
        f"Optimizer: {status}; {fit.optimizer.n_evaluations} evaluations, scaled gradient "
        f"{fit.optimizer.scaled_gradient:.1e}, {fit.seconds:.3f} s"
    )
    if fit.optimizer.boundary:
        lines.append(f"Boundary (singular) fit: {', '.join(fit.optimizer.boundary)} estimated as 0")
    return "\n".join(lines)


def _abbrev(names: tuple[str, ...]) -> str:
    return "(Intr)" if names and names[0] == "(Intercept)" else ""



def bayes_to_dict(fit: BayesFit, ci_prob: float = 0.95) -> dict[str, Any]:
    """A Bayesian fit as plain Python types (the ``--method nuts --json`` contract)."""
    table = fit.summary(ci_prob)
    diag = fit.diagnostics()
    return {
        "model": fit.design.spec.formula,
        "method": "nuts",
        "kind": getattr(fit, "kind", "hierarchical"),
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
    if getattr(fit, "kind", "hierarchical") != "marginal":
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
    """Save a Bayesian fit into ``folder``: the DataTree (``posterior.nc``, netCDF4 through h5netcdf, or
    ``posterior.zarr``), the summary table (CSV) and plots (PNG: rank plots, posterior predictive check, and with
    an ML/REML fit the Bayes-versus-REML forest plot).

    Read the tree back with ``xarray.open_datatree(path)`` (or ``arviz.from_netcdf`` / ``arviz.from_zarr``).
    """
    if tree_format not in TREE_FORMATS:
        raise SpecError("Unknown format for the saved DataTree.", given=tree_format, fix="Use 'netcdf' or 'zarr'.")
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        if tree_format == "zarr":
            fit.tree.to_zarr(folder / "posterior.zarr", mode="w")
            saved.append(folder / "posterior.zarr")
        else:
            fit.tree.to_netcdf(folder / "posterior.nc", engine="h5netcdf")
            saved.append(folder / "posterior.nc")
    plt.close("all")
    return saved
