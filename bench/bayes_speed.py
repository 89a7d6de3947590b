"""Bayesian speed: smallest bulk ESS per wall second of the whole fit, hierlmm against its peers, one invocation.

Model: the chapter's AIDS model ``CD4 ~ obstime + obstime:drug + (obstime | patient)``, 4 chains x (1000 + 1000),
2 cores. The figure of merit (as in ../shared/bench/README.md) is the smallest bulk ESS over the fixed effects, the
random-effect SDs and correlation and sigma, divided by the wall seconds of the whole fit (compilation included);
the largest R-hat is printed beside it. Peers: bambi and a hand-written PyMC model (../shared/bench/peers_py.py,
always), brms and rstanarm (../shared/bench/peers_bayes.R, when Rscript with those packages is installed).
Each fit runs in a fresh process, so every tool pays its own compilation; hierlmm's marginal sampler is shown once
with empty on-disk caches (its first fit on a machine) and once with them warm.

Second section (``--section glaucoma``; both run by default): NUTS on the full glaucoma data (252,876 rows) for the
nested ``thres ~ years + (1 | id/eye)`` and the crossed ``thres ~ years + (1 | id) + (1 | field)`` models, same
settings, warm caches, each in a fresh process: wall seconds of the whole process (import, reading the CSV, design,
fit) and of the fit alone (``BayesFit.seconds``: REML start, compilation, sampling, exact b draws), the smallest bulk
ESS per second of the process, the largest R-hat and the number of divergences (the issue's target: under 2 minutes
each, R-hat <= 1.01, no divergences).

Third section (``--section variance``; not run by default): a variance function without a correlation structure,
PBC2's ``log(prothrombin) ~ year + sex + age + (year | id)`` with ``varPower(form = ~ serBilir)`` (1945 rows, 312
subjects of 1-16 visits), same settings, each fit in a fresh process with warm caches, once with hierlmm's
Woodbury kernel (:mod:`hierlmm.kernels.woodbury_op`, what ``fit_bayes`` uses) and once with the dense ``n x n`` kernel
that served it before (:mod:`hierlmm.kernels.dense_gaussian_op`, forced by the private switch
``hierlmm.engines.bayes.correlated_model._FORCE_DENSE``): wall seconds of the process and of the fit, of
``sample_posterior`` (compilation and NUTS) and of the post-processing (exact ``b`` draws, per-subject log-likelihoods),
the smallest bulk ESS, ESS per second of the process, the largest R-hat, divergences and the posterior mean of the
power.

Usage: python bench/bayes_speed.py [--data DIR] [--peers-dir DIR] [--skip-peers]
[--section aids|glaucoma|variance|all] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HIERLMM_RUN = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import hierlmm
data = hierlmm.datasets.load("aids")
design = hierlmm.build_design(hierlmm.model_spec("CD4 ~ obstime + obstime:drug + (obstime | patient)"), data)
centered = sys.argv[3] if len(sys.argv) > 3 else () fit = hierlmm.fit_bayes(design, sampler=sys.argv[1], chains=4,
draws=1000, tune=1000, cores=2, seed=1,
                        progressbar=False, centered=centered)
secs = time.perf_counter() - t0
table = fit.summary()
label = f"hierlmm {sys.argv[1]} sampler" + (f", centered={centered}" if centered else "")
json.dump({"label": label, "seconds": secs, "min_ess_bulk": float(table.ess_bulk.min()),
           "min_ess_per_s": float(table.ess_bulk.min() / secs), "max_rhat": float(table.r_hat.max()),
           "divergences": fit.diagnostics().divergences}, open(sys.argv[2], "w"))
"""

GLAUCOMA_RUN = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import hierlmm
data = hierlmm.datasets.load("glaucoma")
design = hierlmm.build_design(hierlmm.model_spec(sys.argv[1]), data)
fit = hierlmm.fit_bayes(design, sampler="marginal", chains=4, draws=1000, tune=1000, cores=2, seed=1,
                        progressbar=False)
secs = time.perf_counter() - t0
table = fit.summary()
json.dump({"label": sys.argv[1], "seconds": secs, "fit_seconds": fit.seconds,
           "min_ess_bulk": float(table.ess_bulk.min()), "min_ess_per_s": float(table.ess_bulk.min() / secs),
           "max_rhat": float(table.r_hat.max()), "divergences": fit.diagnostics().divergences},
          open(sys.argv[2], "w"))
"""
VARIANCE_RUN = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import hierlmm
import hierlmm.engines.bayes.correlated_model
import hierlmm.engines.bayes.correlated_fit as module
hierlmm.engines.bayes.correlated_model._FORCE_DENSE = sys.argv[1] == "dense"
draws = int(sys.argv[3])
data = hierlmm.datasets.load("pbc2")
design = hierlmm.build_design(hierlmm.model_spec("log(prothrombin) ~ year + sex + age + (year | id)"), data)
seconds = {}

def timed(name, function):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = function(*args, **kwargs)
        seconds[name] = time.perf_counter() - t
        return out
    return wrapper

module.sample_posterior = timed("sampling", module.sample_posterior)
module.complete_correlated_tree = timed("post", module.complete_correlated_tree)
fit = hierlmm.fit_bayes(design, data=data, weights="varPower(form = ~ serBilir)", chains=4, draws=draws, tune=draws,
                        cores=2, seed=1, progressbar=False)
secs = time.perf_counter() - t0
table = fit.summary()
json.dump({"label": sys.argv[1], "seconds": secs, "fit_seconds": fit.seconds, "sampling_seconds": seconds["sampling"],
           "post_seconds": seconds["post"], "min_ess_bulk": float(table.ess_bulk.min()),
           "min_ess_per_s": float(table.ess_bulk.min() / secs), "max_rhat": float(table.r_hat.max()),
           "divergences": fit.diagnostics().divergences, "power": float(table.loc["power", "mean"])},
          open(sys.argv[2], "w"))
"""

GLAUCOMA_MODELS = ("thres ~ years + (1 | id/eye)", "thres ~ years + (1 | id) + (1 | field)")


def glaucoma_section(tmp: Path) -> list[dict]:
    """The two full-data glaucoma fits (caches warmed by an untimed first run of each), printed as a table."""
    script = tmp / "glaucoma_run.py"
    script.write_text(GLAUCOMA_RUN)
    results = []
    for k, formula in enumerate(GLAUCOMA_MODELS):
        out = tmp / f"glaucoma_{k}.json"
        run([sys.executable, str(script), formula, str(out)], out)  # warm the caches, untimed
        if (r := run([sys.executable, str(script), formula, str(out)], out)) is not None:
            results.append(r)
    print(f"{'glaucoma, 252,876 rows, 4 x (1000 + 1000)':46s} {'wall s':>7s} {'fit s':>6s} {'min ESS':>8s} "
          f"{'ESS/s':>7s} {'max R-hat':>9s} {'diverg.':>7s}")
    for r in results:
        print(f"{r['label'][:46]:46s} {r['seconds']:7.1f} {r['fit_seconds']:6.1f} {r['min_ess_bulk']:8.0f} "
              f"{r['min_ess_per_s']:7.1f} {r['max_rhat']:9.3f} {r['divergences']:7d}")
    return results


def variance_section(tmp: Path) -> list[dict]:
    """PBC2 varPower by NUTS, Woodbury kernel and dense kernel (caches warmed by a short untimed run of each)."""
    script = tmp / "variance_run.py"
    script.write_text(VARIANCE_RUN)
    results = []
    for kernel in ("woodbury", "dense"):
        out = tmp / f"variance_{kernel}.json"
        run([sys.executable, str(script), kernel, str(out), "20"], out)  # compile and cache, untimed
        if (r := run([sys.executable, str(script), kernel, str(out), "1000"], out)) is not None:
            results.append(r)
    print(f"{'PBC2 varPower, 4 x (1000 + 1000)':32s} {'wall s':>7s} {'fit s':>6s} {'sample s':>8s} {'post s':>6s} "
          f"{'min ESS':>8s} {'ESS/s':>7s} {'max R-hat':>9s} {'diverg.':>7s} {'power':>6s}")
    for r in results:
        print(f"{r['label'] + ' kernel':32s} {r['seconds']:7.1f} {r['fit_seconds']:6.1f} {r['sampling_seconds']:8.1f} "
              f"{r['post_seconds']:6.1f} {r['min_ess_bulk']:8.0f} {r['min_ess_per_s']:7.1f} {r['max_rhat']:9.4f} "
              f"{r['divergences']:7d} {r['power']:6.4f}")
    if len(results) == 2:
        print(f"Woodbury / dense: {results[1]['seconds'] / results[0]['seconds']:.1f}x less wall time, "
              f"{results[0]['min_ess_per_s'] / results[1]['min_ess_per_s']:.1f}x ESS/s")
    return results


def run(cmd: list[str], out: Path, env: dict | None = None) -> dict | None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg", **(env or {})})
    if proc.returncode != 0 or not out.exists():
        print(f"  failed: {' '.join(cmd[:3])} ...\n{proc.stderr[-1500:]}")
        return None
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("HIERLMM_DATA", "../shared/data"))
    parser.add_argument("--peers-dir", default="../shared/bench")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--section", choices=("aids", "glaucoma", "variance", "all"), default="all")
    parser.add_argument("--json")
    args = parser.parse_args()
    data = str(Path(args.data).resolve())
    os.environ["HIERLMM_DATA"] = data
    results, glaucoma = [], []
    if args.section == "variance":
        with tempfile.TemporaryDirectory() as tmp:
            variance = variance_section(Path(tmp))
        if args.json:
            Path(args.json).write_text(json.dumps({"variance": variance}, indent=1))
        return
    if args.section != "aids":
        with tempfile.TemporaryDirectory() as tmp:
            glaucoma = glaucoma_section(Path(tmp))
        if args.section == "glaucoma":
            if args.json:
                Path(args.json).write_text(json.dumps({"glaucoma": glaucoma}, indent=1))
            return
        print()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "hierlmm_run.py"
        script.write_text(HIERLMM_RUN)
        # hierlmm's compiled log-density is cached on disk (PyTensor's and Numba's caches): the first fit on a
        # machine compiles it, later ones load it. Both are shown: a run with empty caches, then warm ones.
        cold = {"PYTENSOR_FLAGS": f"base_compiledir={tmp}/pytensor", "NUMBA_CACHE_DIR": f"{tmp}/numba"}
        out = Path(tmp) / "h_cold.json"
        if (r := run([sys.executable, str(script), "marginal", str(out)], out, cold)) is not None:
            results.append({**r, "label": r["label"] + " (empty caches)"})
        run([sys.executable, str(script), "marginal", str(out)], out)  # warm the default caches, untimed
        for sampler, *centered in (("marginal",), ("joint",), ("joint", "auto")):
            out = Path(tmp) / f"h_{sampler}{'_'.join(centered)}.json"
            if (r := run([sys.executable, str(script), sampler, str(out), *centered], out)) is not None:
                results.append(r)
        peers = Path(args.peers_dir)
        if not args.skip_peers:
            for which in ("bambi", "pymc_lkj"):
                out = Path(tmp) / f"{which}.json"
                if (r := run([sys.executable, str(peers / "peers_py.py"), data, which, str(out)], out)) is not None:
                    results.append(r)
            if shutil.which("Rscript"):
                out = Path(tmp) / "r.json"
                if (r := run(["Rscript", str(peers / "peers_bayes.R"), data, str(out)], out)) is not None:
                    results.extend(v for k, v in r.items() if k in ("brms", "rstanarm"))
            else:
                print("Rscript not found: brms and rstanarm skipped")
    print(f"{'fit':58s} {'wall s':>7s} {'min ESS':>8s} {'ESS/s':>7s} {'max R-hat':>9s}")
    for r in results:
        print(f"{r['label'][:58]:58s} {r['seconds']:7.1f} {r['min_ess_bulk']:8.0f} {r['min_ess_per_s']:7.1f} "
              f"{r['max_rhat']:9.3f}")
    base = next((r for r in results if r["label"] == "hierlmm marginal sampler"), None)
    if base:
        for r in results:
            if r is not base:
                print(f"hierlmm marginal / {r['label'][:40]}: {base['min_ess_per_s'] / r['min_ess_per_s']:.1f}x ESS/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"aids": results, "glaucoma": glaucoma} if glaucoma else results,
                                              indent=1))


if __name__ == "__main__":
    main()
