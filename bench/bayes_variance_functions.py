"""Variance functions by NUTS (``weights=``) against nlme's REML and brms' distributional models, side by side.

nlme's varIdent / varPower / varExp are brms models with a log-linear sigma (``sigma ~ drug``,
``sigma ~ log(serBilir)``, ``sigma ~ albumin``): the same likelihood, other default priors. For each model this
prints nlme's REML estimate and 95% interval of the variance parameter (``tests/fixtures/variance_function_reference
.json``), hierlmm's posterior median and 95% interval, brms' (run in this invocation with ``--brms``, else read from
``tests/fixtures/variance_function_brms.json``), the largest gap between hierlmm's and brms' posterior means in
posterior SDs, and wall seconds, the smallest bulk ESS, ESS per second and its ratio to brms', R-hat and divergences.
hierlmm: 4 chains x (1000 + 1000), 2 cores, compilation included; the fits run one after another.

Usage: HIERLMM_DATA=... python bench/bayes_variance_functions.py [--draws 1000] [--models ...] [--brms] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import hierlmm

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PROTHROMBIN = "log(prothrombin) ~ year + sex + age + (year | id)"
MODELS = {  # fixture name -> (data, formula, weights); nlme's calls are in make_variance_function_reference.R
    "aids_varident": ("aids", "CD4 ~ obstime * drug + (obstime | patient)", "varIdent(form = ~ 1 | drug)"),
    "pbc2_varpower": ("pbc2", PROTHROMBIN, "varPower(form = ~ serBilir)"),
    "pbc2_varexp": ("pbc2", "log(serBilir) ~ year + sex + age + (year | id)", "varExp(form = ~ albumin)"),
}


def brms_results(models: list[str], run: bool) -> dict:
    """brms' summaries: run now (``run``) or the stored fixture."""
    if not run:
        return json.loads((FIXTURES / "variance_function_brms.json").read_text())
    if shutil.which("Rscript") is None:
        raise SystemExit("--brms needs Rscript with brms (see ../shared/bench/README.md)")
    out = Path(tempfile.mkdtemp()) / "brms.json"
    subprocess.run(["Rscript", str(FIXTURES / "make_variance_function_brms.R"), str(hierlmm.datasets.data_dir()),
                    str(out), *models], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--brms", action="store_true", help="run brms in this invocation (else the stored fixture)")
    parser.add_argument("--json")
    args = parser.parse_args()
    nlme = json.loads((FIXTURES / "variance_function_reference.json").read_text())
    brms = brms_results(args.models, args.brms)
    rows = []
    for name in args.models:
        data_name, formula, weights = MODELS[name]
        data = hierlmm.datasets.load(data_name)
        design = hierlmm.build_design(hierlmm.model_spec(formula), data)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = hierlmm.fit_bayes(design, data=data, weights=weights, chains=4, draws=args.draws,
                                    tune=args.draws, cores=2, seed=1, progressbar=False)
        seconds = time.perf_counter() - t0
        table, diag = fit.summary(), fit.diagnostics()
        peer = brms[name]["parameters"]
        common = [k for k in peer if k in table.index]
        gap = {k: abs(table.loc[k, "mean"] - peer[k]["mean"]) / peer[k]["sd"] for k in common}
        label = fit.variance_labels()[0]
        draws = fit.parameter_draws()[label].ravel()
        vf = nlme[name]["variance_function"]
        ess = float(table["ess_bulk"].min())
        peer_ess = min(p["ess_bulk"] for p in peer.values()) / brms[name]["seconds"]
        row = {"model": name, "weights": weights, "parameter": label, "reml": vf["est"][0],
               "reml_interval": [vf["lower"][0], vf["upper"][0]], "nuts_median": float(np.median(draws)),
               "nuts_interval": [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))],
               "brms_mean": peer[label]["mean"], "brms_interval": [peer[label]["lower"], peer[label]["upper"]],
               "max_gap_sd": max(gap.values()), "worst": max(gap, key=gap.get), "seconds": seconds,
               "min_ess_bulk": ess, "ess_per_s": ess / seconds, "brms_ess_per_s": peer_ess,
               "brms_seconds": brms[name]["seconds"], "max_rhat": diag.max_rhat, "divergences": diag.divergences}
        rows.append(row)
        print(f"{name} {weights}: {label} REML {row['reml']:.4g} ({vf['lower'][0]:.4g}, {vf['upper'][0]:.4g}); "
              f"NUTS {row['nuts_median']:.4g} ({row['nuts_interval'][0]:.4g}, {row['nuts_interval'][1]:.4g}); "
              f"brms {row['brms_mean']:.4g} ({row['brms_interval'][0]:.4g}, {row['brms_interval'][1]:.4g})\n"
              f"  largest |hierlmm - brms| posterior mean {row['max_gap_sd']:.2f} SD ({row['worst']}); "
              f"{seconds:.0f} s (brms {row['brms_seconds']:.0f} s), min bulk ESS {ess:.0f}, "
              f"ESS/s {row['ess_per_s']:.1f} vs brms {peer_ess:.1f} (ratio {row['ess_per_s'] / peer_ess:.2f}), "
              f"R-hat {diag.max_rhat:.4f}, {diag.divergences} divergences", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
