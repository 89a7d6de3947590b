"""ML/REML speed: hierlmm against nlme and lme4 on the same models, in the same invocation.

Prints, per model, the mean wall time of a whole fit (formula + data -> estimates) over several repetitions after a
warm-up, and the ratios hierlmm / nlme and hierlmm / lme4 (< 1 means hierlmm is faster). R's timings are taken only
when Rscript with nlme and lme4 is installed (Debian: r-base-core r-cran-nlme r-cran-lme4); hierlmm's estimates
are checked against lme4's log-likelihood in the same run.

Usage: python bench/ml_speed.py [--data DIR] [--reps N] [--skip-glaucoma] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import hierlmm

MODELS = {  # name: (data set, lme4 formula, nlme fixed, nlme random, method)
    "aids_ri_rs_reml": ("aids", "CD4 ~ obstime + obstime:drug + (obstime | patient)", "CD4 ~ obstime + obstime:drug",
                        "~ obstime | patient", "REML"),
    "aids_ri_rs_ml": ("aids", "CD4 ~ obstime + obstime:drug + (obstime | patient)", "CD4 ~ obstime + obstime:drug",
                      "~ obstime | patient", "ML"),
    "aids_ri_reml": ("aids", "CD4 ~ obstime + obstime:drug + (1 | patient)", "CD4 ~ obstime + obstime:drug",
                     "~ 1 | patient", "REML"),
    "pbc2_ns_reml": ("pbc2", "log(serBilir) ~ ns(year, 2) * sex + age + (ns(year, 2) | id)",
                     "log(serBilir) ~ ns(year, 2) * sex + age", "~ ns(year, 2) | id", "REML"),
    "glaucoma_nested_reml": ("glaucoma", "thres ~ years + (1 | id/eye)", None, None, "REML"),
    "glaucoma_nested_rs_reml": ("glaucoma", "thres ~ years + (years | id) + (1 | id:eye)", None, None, "REML"),
    "glaucoma_crossed_reml": ("glaucoma", "thres ~ years + (1 | id) + (1 | field)", None, None, "REML"),
}

R_SCRIPT = r"""
suppressMessages({library(nlme); library(lme4); library(splines); library(jsonlite)})
args <- commandArgs(TRUE); dir <- args[1]; reps <- as.integer(args[2]); out <- args[3]; models <- fromJSON(args[4])
rd <- function(name) {
  f <- file.path(dir, if (name == "glaucoma") "glaucoma.csv.gz" else paste0(name, ".csv"))
  d <- read.csv(f, stringsAsFactors = TRUE)
  for (g in intersect(c("patient", "id", "eye"), names(d))) d[[g]] <- factor(d[[g]])
  d
}
res <- list()
for (m in names(models)) {
  spec <- models[[m]]; d <- rd(spec$data); reml <- spec$method == "REML"
  t <- c()
  for (i in seq_len(reps)) { t0 <- proc.time()[["elapsed"]]; f4 <- lmer(as.formula(spec$lme4), data = d, REML = reml)
                             t <- c(t, proc.time()[["elapsed"]] - t0) }
  r <- list(lme4_seconds = mean(t), lme4_loglik = as.numeric(logLik(f4)))
  if (!is.null(spec$fixed)) {
    t <- c()
    for (i in seq_len(reps)) { t0 <- proc.time()[["elapsed"]]
      fn <- lme(as.formula(spec$fixed), random = as.formula(spec$random), data = d, method = spec$method)
      t <- c(t, proc.time()[["elapsed"]] - t0) }
    r$nlme_seconds <- mean(t); r$nlme_loglik <- as.numeric(logLik(fn))
  }
  res[[m]] <- r
}
write_json(res, out, auto_unbox = TRUE, digits = NA)
"""


def time_hierlmm(data, formula: str, method: str, reps: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit(formula, data, method=method)  # warm-up (imports, caches)
        t0 = time.perf_counter()
        for _ in range(reps):
            fit = hierlmm.fit(formula, data, method=method)
    return (time.perf_counter() - t0) / reps, fit.loglik


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("HIERLMM_DATA", "../shared/data"))
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--skip-glaucoma", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ["HIERLMM_DATA"] = str(Path(args.data).resolve())
    models = {k: v for k, v in MODELS.items() if not (args.skip_glaucoma and k.startswith("glaucoma"))}

    r_results: dict = {}
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            script, out = Path(tmp) / "bench.R", Path(tmp) / "r.json"
            script.write_text(R_SCRIPT)
            spec = {k: {"data": d, "lme4": f, "fixed": fx, "random": rnd, "method": m}
                    for k, (d, f, fx, rnd, m) in models.items()}
            for v in spec.values():
                if v["fixed"] is None:
                    del v["fixed"], v["random"]
            proc = subprocess.run(["Rscript", str(script), os.environ["HIERLMM_DATA"], str(args.reps), str(out),
                                   json.dumps(spec)], capture_output=True, text=True)
            if proc.returncode == 0:
                r_results = json.loads(out.read_text())
            else:
                print("R failed; timing hierlmm only:\n", proc.stderr[-2000:])
    else:
        print("Rscript not found: timing hierlmm only (apt-get install r-base-core r-cran-nlme r-cran-lme4)")

    rows = []
    header = (f"{'model':22s} {'n':>7s} {'hierlmm s':>10s} {'nlme s':>8s} {'lme4 s':>8s} {'h/nlme':>7s} "
              f"{'h/lme4':>7s} {'dlogLik(lme4)':>14s}")
    print(header)
    for name, (data_name, formula, *_rest, method) in models.items():
        data = hierlmm.datasets.load(data_name)
        reps = max(1, args.reps // 5) if data_name == "glaucoma" else args.reps
        seconds, loglik = time_hierlmm(data, formula, method, reps)
        r = r_results.get(name, {})
        row = {"model": name, "n": len(data), "hierlmm_seconds": seconds, "hierlmm_loglik": loglik, **r}
        rows.append(row)
        def fmt(x: float | None) -> str:
            return f"{x:8.3f}" if isinstance(x, float) else f"{'-':>8s}"

        def ratio(a: float | None, s: float = seconds) -> str:
            return f"{s / a:7.2f}" if a else f"{'-':>7s}"

        dll = f"{loglik - r['lme4_loglik']:14.2e}" if "lme4_loglik" in r else f"{'-':>14s}"
        print(f"{name:22s} {len(data):7d} {seconds:10.3f} {fmt(r.get('nlme_seconds'))} {fmt(r.get('lme4_seconds'))} "
              f"{ratio(r.get('nlme_seconds'))} {ratio(r.get('lme4_seconds'))} {dll}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
