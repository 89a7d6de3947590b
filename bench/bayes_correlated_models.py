"""The chapter's Models I-III with serially correlated errors (corExp, corGaus), by REML and by NUTS, side by side.

For each model and correlation: REML's range and 95% interval (nlme-style, :mod:`hierlmm.engines.reml.correlated_fit`)
and NUTS' posterior median and 95% interval of the range (4 chains x (2000 tuning + 1000) by default, 2 cores,
:func:`hierlmm.fit_bayes_correlated`), with wall seconds (compilation included), the largest R-hat, divergences and the
smallest bulk/tail ESS. With random slopes, also the share of each chain's draws where the slopes' SD is below 0.05: the
thin lobe of Model II's posterior where a longer range stands in for them (docs/serial_correlation.md). The fits run one
after another in this process (one heavy job at a time).

Usage: HIERLMM_DATA=... python bench/bayes_correlated_models.py [--draws 1000] [--tune N] [--target-accept P]
[--seeds 1 2 ...] [--models I II III] [--correlations corExp corGaus] [--json OUT]

Model II with corExp, seeds 1-5, as in docs/serial_correlation.md:
``--models II --correlations corExp --draws 3000 --target-accept 0.95 --seeds 1 2 3 4 5``; the long run with the
defaults: ``--models II --correlations corExp --draws 10000 --seeds 3``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

import hierlmm
from hierlmm.engines.bayes.correlated_fit import fit_bayes_correlated

BASE = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
RANDOM = {"I": "(1 | patient)", "II": "(obstime | patient)", "III": "(obstime + I(obstime^2) | patient)"}


def _nuts_row(args: argparse.Namespace, design, aids, text: str, label: str, corr: str, reml, interval,
              n_warnings: int, seed: int) -> dict:
    """Fit one model by NUTS with one seed; print and return its row."""
    t0 = time.perf_counter()
    fit = fit_bayes_correlated(design, aids, text, chains=4, draws=args.draws, tune=args.tune, cores=2, seed=seed,
                               target_accept=args.target_accept, progressbar=False)
    seconds = time.perf_counter() - t0
    diag = fit.diagnostics()
    r = fit.tree["posterior"]["range"].values.ravel()
    slope_sd = fit.parameter_draws().get("sd[patient:obstime]")
    lobe = None if slope_sd is None else [float(x) for x in (slope_sd < 0.05).mean(axis=1)]
    row = {"model": label, "correlation": corr, "seed": seed, "reml_range": reml.correlation_parameters["range"],
           "reml_lower": interval[0], "reml_upper": interval[1], "reml_converged": reml.converged,
           "reml_warnings": n_warnings, "nuts_median": float(np.median(r)),
           "nuts_lower": float(np.quantile(r, 0.025)), "nuts_upper": float(np.quantile(r, 0.975)),
           "seconds": seconds, "max_rhat": diag.max_rhat, "divergences": diag.divergences,
           "min_ess_bulk": diag.min_ess_bulk, "min_ess_tail": diag.min_ess_tail, "lobe_share_per_chain": lobe,
           "divergent_at": diag.divergent_at, "reml_fixef": reml.fixef()["Value"].to_dict(),
           "nuts_fixef": fit.fixef()["mean"].to_dict(), "nuts_fixef_sd": fit.fixef()["sd"].to_dict()}
    print(f"Model {label} {corr} seed {seed}: REML range {row['reml_range']:.3g} ({interval[0]:.3g}, "
          f"{interval[1]:.3g}){'' if reml.converged else ' [not converged]'}; NUTS range {row['nuts_median']:.3g} "
          f"({row['nuts_lower']:.3g}, {row['nuts_upper']:.3g}); {seconds:.0f} s, R-hat {diag.max_rhat:.4f}, "
          f"{diag.divergences} divergences, min ESS bulk {diag.min_ess_bulk:.0f} tail {diag.min_ess_tail:.0f}"
          + ("" if lobe is None else f"; slope SD < 0.05 in {', '.join(f'{100 * x:.1f}%' for x in lobe)} of "
             "each chain's draws"), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=None, help="default: hierlmm's (2000 with a correlation)")
    parser.add_argument("--target-accept", type=float, default=None, help="default: hierlmm's (0.9)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
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
            for seed in args.seeds:
                rows.append(_nuts_row(args, design, aids, text, label, corr, reml, interval, len(caught), seed))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
