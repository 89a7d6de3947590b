"""Speed of F tests with small-sample degrees of freedom: hierlmm against pbkrtest and lmerTest, in one invocation.

On the chapter's PBC effect-plot model (``log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex``, random
``~ ns(year, 2) | id``, REML) it times, from an already fitted model:

- Kenward-Roger: hierlmm ``anova(fit, L=..., ddf="kenward-roger")`` (one joint test) against pbkrtest's
  ``KRmodcomp(m, L)``, and hierlmm's whole ``anova(fit, type="marginal", ddf="kenward-roger")`` against lmerTest's
  ``anova(m, ddf = "Kenward-Roger")``;
- Satterthwaite: hierlmm ``anova(fit, type="marginal", ddf="satterthwaite")`` against lmerTest's
  ``anova(m, ddf = "Satterthwaite")`` (lmerTest computes its Hessian and Jacobian when the model is fitted: that
  share is timed as ``as_lmerModLmerTest(m)``).

hierlmm's timings include computing the derivatives from scratch (a fresh copy of the fit each time). Prints the
median of several runs and the ratios hierlmm / R (< 1: hierlmm is faster), and checks that the F and DF agree.
R's timings need Rscript with lme4, lmerTest, pbkrtest and splines (Debian: r-cran-lmertest r-cran-pbkrtest).

Usage: python bench/fixed_effect_tests.py [--data DIR] [--reps N] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

import hierlmm

FIXED = "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex"
RANDOM = "~ ns(year, 2) | id"
L = {"ns(year, 2)1 + interaction": {"ns(year, 2)1": 1.0, "ns(year, 2)1:sexfemale": 1.0},
     "ns(year, 2)2 + interaction": {"ns(year, 2)2": 1.0, "ns(year, 2)2:sexfemale": 1.0}}

R_SCRIPT = r"""
suppressMessages({library(lme4); library(lmerTest); library(pbkrtest); library(splines); library(jsonlite)})
args <- commandArgs(TRUE); dir <- args[1]; reps <- as.integer(args[2]); out <- args[3]
pbc2 <- read.csv(file.path(dir, "pbc2.csv"), stringsAsFactors = TRUE)
pbc2$id <- factor(pbc2$id); pbc2$sex <- factor(pbc2$sex, levels = c("male", "female"))  # JM's order
first <- !duplicated(pbc2$id[!is.na(pbc2$prothrombin)])
base <- pbc2[!is.na(pbc2$prothrombin), c("id", "prothrombin")][first, ]
pbc2$basePro <- base$prothrombin[match(pbc2$id, base$id)]
m <- lmer(log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex + (ns(year, 2) | id), data = pbc2)
L <- matrix(0, 2, length(fixef(m)), dimnames = list(NULL, names(fixef(m))))
L[1, c("ns(year, 2)1", "ns(year, 2)1:sexfemale")] <- 1; L[2, c("ns(year, 2)2", "ns(year, 2)2:sexfemale")] <- 1
time_it <- function(expr) { expr <- substitute(expr); sapply(seq_len(reps), function(i) {
  t0 <- proc.time()[["elapsed"]]; value <- eval(expr, parent.frame(3)); proc.time()[["elapsed"]] - t0 }) }
kr <- KRmodcomp(m, L)
res <- list(
  KRmodcomp = time_it(KRmodcomp(m, L)),
  anova_KR = time_it(anova(m, type = "marginal", ddf = "Kenward-Roger")),
  lmerTest_setup = time_it(as_lmerModLmerTest(m)),
  anova_S = time_it(anova(m, type = "marginal", ddf = "Satterthwaite")),
  KR_F = kr$test["Ftest", "stat"], KR_ddf = kr$test["Ftest", "ddf"])
write_json(res, out, auto_unbox = TRUE, digits = NA)
"""


def _times(work, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        work()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("HIERLMM_DATA", "../shared/data"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ["HIERLMM_DATA"] = str(Path(args.data).resolve())
    pbc2 = hierlmm.datasets.add_baseline(hierlmm.datasets.load("pbc2"), "prothrombin", "id", name="basePro")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit(FIXED, pbc2, random=RANDOM)

    def fresh():  # a copy without the cached derivatives: each run computes them
        return dataclasses.replace(fit)

    hierlmm_kr = hierlmm.anova(fresh(), L=L, ddf="kenward-roger").iloc[0]
    hier = {
        "KRmodcomp": _times(lambda: hierlmm.anova(fresh(), L=L, ddf="kenward-roger"), args.reps),
        "anova_KR": _times(lambda: hierlmm.anova(fresh(), type="marginal", ddf="kenward-roger"), args.reps),
        "anova_S": _times(lambda: hierlmm.anova(fresh(), type="marginal", ddf="satterthwaite"), args.reps),
    }
    r: dict = {}
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            script, out = Path(tmp) / "bench.R", Path(tmp) / "r.json"
            script.write_text(R_SCRIPT)
            done = subprocess.run(["Rscript", str(script), os.environ["HIERLMM_DATA"], str(args.reps), str(out)],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                r = json.loads(out.read_text())
            else:
                print("R peers skipped:", done.stderr.strip().splitlines()[-1:])
    rows = []
    for task, peer in (("KRmodcomp", "pbkrtest KRmodcomp(m, L)"), ("anova_KR", "lmerTest anova(ddf = 'KR')"),
                       ("anova_S", "lmerTest anova(ddf = 'Satterthwaite')")):
        mine = statistics.median(hier[task])
        theirs = statistics.median(r[task]) if task in r else float("nan")
        if task == "anova_S" and "lmerTest_setup" in r:  # lmerTest's derivatives are computed when it fits
            theirs += statistics.median(r["lmerTest_setup"])
            peer += " + as_lmerModLmerTest"
        rows.append({"task": task, "peer": peer, "hierlmm_s": mine, "R_s": theirs, "ratio": mine / theirs})
    table = pd.DataFrame(rows).set_index("task")
    print(f"PBC effect-plot model, {fit.design.n_obs} rows, {fit.design.blocks[0].n_levels} subjects; median of "
          f"{args.reps} runs (hierlmm / R < 1: hierlmm faster)")
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    if "KR_F" in r:
        print(f"\nKenward-Roger F: hierlmm {hierlmm_kr['F-value']:.6g} vs pbkrtest {r['KR_F']:.6g}; "
              f"DF {hierlmm_kr['denDF']:.6g} vs {r['KR_ddf']:.6g}")
    if args.json:
        Path(args.json).write_text(json.dumps({"hierlmm": hier, "R": r}, indent=1))


if __name__ == "__main__":
    main()
