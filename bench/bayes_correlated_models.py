"""The chapter's Models I-III with serially correlated errors (corExp, corGaus), by REML and by NUTS, side by side.

For each model and correlation: REML's range and 95% interval (nlme-style, :mod:`hierlmm.correlated_fit`) and
NUTS' posterior median and 95% interval of the range (4 chains x (2000 tuning + 1000) by default, 2 cores,
:func:`hierlmm.fit_bayes_correlated`), with wall seconds (compilation included), the largest R-hat, divergences and
the smallest bulk/tail ESS. The fits run one after another in this process (one heavy job at a time).

Usage: HIERLMM_DATA=... python bench/bayes_correlated_models.py [--draws 1000] [--tune N] [--models I II III]
[--correlations corExp corGaus] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import hierlmm
from hierlmm.bayes_correlated_fit import fit_bayes_correlated

BASE = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
RANDOM = {"I": "(1 | patient)", "II": "(obstime | patient)", "III": "(obstime + I(obstime^2) | patient)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=None, help="default: hierlmm's (2000 with a correlation)")
    parser.add_argument("--models", nargs="+", default=list(RANDOM))
    parser.add_argument("--correlations", nargs="+", default=["corExp", "corGaus"])
    parser.add_argument("--json")
    args = parser.parse_args()
    aids = hierlmm.datasets.load("aids")
    rows = []
    for label in args.models:
        design = hierlmm.build_design(hierlmm.model_spec(f"{BASE} + {RANDOM[label]}"), aids)
        for corr in args.correlations:
            text = f"{corr}(form = ~ obstime | patient)"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reml = hierlmm.fit(f"{BASE} + {RANDOM[label]}", aids, correlation=text)
            interval = reml.correlation_intervals().get("range", (np.nan, np.nan))
            t0 = time.perf_counter()
            fit = fit_bayes_correlated(design, aids, text, chains=4, draws=args.draws, tune=args.tune, cores=2,
                                       seed=1, progressbar=False)
            seconds = time.perf_counter() - t0
            diag = fit.diagnostics()
            r = fit.tree["posterior"]["range"].values.ravel()
            row = {"model": label, "correlation": corr, "reml_range": reml.correlation_parameters["range"],
                   "reml_lower": interval[0], "reml_upper": interval[1], "reml_converged": reml.converged,
                   "reml_warnings": len(caught), "nuts_median": float(np.median(r)),
                   "nuts_lower": float(np.quantile(r, 0.025)), "nuts_upper": float(np.quantile(r, 0.975)),
                   "seconds": seconds, "max_rhat": diag.max_rhat, "divergences": diag.divergences,
                   "min_ess_bulk": diag.min_ess_bulk, "min_ess_tail": diag.min_ess_tail,
                   "reml_fixef": reml.fixef()["Value"].to_dict(), "nuts_fixef": fit.fixef()["mean"].to_dict(),
                   "nuts_fixef_sd": fit.fixef()["sd"].to_dict()}
            rows.append(row)
            print(f"Model {label} {corr}: REML range {row['reml_range']:.3g} ({interval[0]:.3g}, {interval[1]:.3g})"
                  f"{'' if reml.converged else ' [not converged]'}; NUTS range {row['nuts_median']:.3g} "
                  f"({row['nuts_lower']:.3g}, {row['nuts_upper']:.3g}); {seconds:.0f} s, R-hat {diag.max_rhat:.4f}, "
                  f"{diag.divergences} divergences, min ESS bulk {diag.min_ess_bulk:.0f} tail {diag.min_ess_tail:.0f}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
