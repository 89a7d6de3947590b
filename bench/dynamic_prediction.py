"""Speed of dynamic predictions: 1,000 new subjects with 5 visits each, predicted at two later times.

On the chapter's AIDS model (``CD4 ~ obstime + obstime:drug``, random ``~ obstime | patient``) fitted to the AIDS data
(``--data DIR``; without it, data simulated from the chapter's estimates), new subjects' histories are simulated from
the fitted model. It times, from an already fitted model:

- ML/REML: ``hierlmm.predict(fit, later, level=1, interval="prediction", history=visits)`` (plug-in ``b | y_h``, beta's
  uncertainty, prediction intervals) against the same plug-in formulas written subject by subject in R (``Rscript``;
  skipped when R is missing) and in NumPy (a loop over subjects, what one writes by hand);
- Bayes (4 chains x 1000 draws): the same call on a NUTS fit (an exact draw of ``b | y_h`` per posterior draw and
  subject, and of the new outcomes) against a hand-written NumPy loop over subjects (vectorised over draws).

Prints the median of several runs and the ratios hierlmm / peer (< 1: hierlmm is faster), and checks that the
predictions agree with the peers'.

Usage: python bench/dynamic_prediction.py [--data DIR] [--reps N] [--subjects N] [--no-bayes] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import hierlmm
from hierlmm.inference.implied_covariance import covariance_draws

FORMULA = "CD4 ~ obstime + obstime:drug + (obstime | patient)"
VISITS = np.array([0.0, 2.0, 6.0, 12.0, 18.0])
LATER = np.array([24.0, 30.0])

R_SCRIPT = r"""
suppressMessages(library(jsonlite))
args <- commandArgs(TRUE); p <- fromJSON(args[1]); reps <- as.integer(args[2]); out <- args[3]
hist <- read.csv(args[4]); later <- read.csv(args[5])
beta <- p$beta; Cb <- p$cov_beta; D <- p$D; sigma <- p$sigma
design <- function(d) cbind(1, d$obstime, d$obstime * (d$drug == "ddI"))
run <- function() {
  ids <- unique(hist$patient); res <- numeric(0)
  for (id in ids) {
    h <- hist[hist$patient == id, ]; f <- later[later$patient == id, ]
    Xh <- design(h); Zh <- cbind(1, h$obstime); Xf <- design(f); Zf <- cbind(1, f$obstime)
    V <- Zh %*% D %*% t(Zh) + sigma^2 * diag(nrow(h)); Vi <- solve(V)
    r <- h$CD4 - Xh %*% beta; b <- D %*% t(Zh) %*% Vi %*% r
    Vfh <- Zf %*% D %*% t(Zh); K <- Vfh %*% Vi; A <- Xf - K %*% Xh
    v <- diag(A %*% Cb %*% t(A) + Zf %*% D %*% t(Zf) + sigma^2 * diag(nrow(f)) - K %*% t(Vfh))
    res <- c(res, Xf %*% beta + Zf %*% b, sqrt(v))
  }
  res
}
first <- run()
times <- sapply(seq_len(reps), function(i) { t0 <- proc.time()[["elapsed"]]; run(); proc.time()[["elapsed"]] - t0 })
writeLines(toJSON(list(times = times, values = first), digits = NA), out)
"""


def _data(folder: str | None) -> pd.DataFrame:
    if folder:
        return pd.read_csv(Path(folder) / "aids.csv")
    rng = np.random.default_rng(1)
    n = 467
    frame = pd.DataFrame({"patient": np.repeat(np.arange(n), 5), "obstime": np.tile(VISITS[:5], n),
                          "drug": np.repeat(rng.choice(["ddC", "ddI"], n), 5)})
    b = rng.multivariate_normal([0, 0], [[20.0, -0.03], [-0.03, 0.03]], n)
    frame["CD4"] = (7.2 - 0.16 * frame["obstime"] + 0.03 * frame["obstime"] * (frame["drug"] == "ddI")
                    + b[frame["patient"], 0] + b[frame["patient"], 1] * frame["obstime"] + rng.normal(0, 1.7, 5 * n))
    return frame


def _new_subjects(fit, n: int, seed: int = 2) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Histories (5 visits) of ``n`` new subjects simulated from the fit, and the rows to predict."""
    rng = np.random.default_rng(seed)
    ids = [f"new{i}" for i in range(n)]
    drug = rng.choice(["ddC", "ddI"], n)
    visits = pd.DataFrame({"patient": np.repeat(ids, VISITS.size), "obstime": np.tile(VISITS, n),
                           "drug": np.repeat(drug, VISITS.size)})
    X, Zs = hierlmm.new_model_matrices(fit.design, visits)
    b = rng.multivariate_normal(np.zeros(2), fit.D[0], n)
    visits["CD4"] = X @ fit.beta + np.einsum("nq,nq->n", Zs[0], np.repeat(b, VISITS.size, axis=0)) + rng.normal(
        0, fit.sigma, len(visits))
    later = pd.DataFrame({"patient": np.repeat(ids, LATER.size), "obstime": np.tile(LATER, n),
                          "drug": np.repeat(drug, LATER.size)})
    return visits, later


def _numpy_plugin(fit, visits: pd.DataFrame, later: pd.DataFrame) -> np.ndarray:
    """The plug-in formulas subject by subject (what one writes by hand)."""
    beta, Cb, D, s2 = fit.beta, fit.cov_beta, fit.D[0], fit.sigma**2
    Xh_all, Zh_all = hierlmm.new_model_matrices(fit.design, visits)
    Xf_all, Zf_all = hierlmm.new_model_matrices(fit.design, later)
    y = visits["CD4"].to_numpy()
    hp, fp = visits["patient"].to_numpy(), later["patient"].to_numpy()
    fit_out, se_out = np.zeros(len(later)), np.zeros(len(later))
    for pid in pd.unique(fp):
        h, f = np.flatnonzero(hp == pid), np.flatnonzero(fp == pid)
        Xh, Zh, Xf, Zf = Xh_all[h], Zh_all[0][h], Xf_all[f], Zf_all[0][f]
        Vi = np.linalg.inv(Zh @ D @ Zh.T + s2 * np.eye(h.size))
        r = y[h] - Xh @ beta
        Vfh = Zf @ D @ Zh.T
        K = Vfh @ Vi
        A = Xf - K @ Xh
        fit_out[f] = Xf @ beta + Zf @ (D @ Zh.T @ Vi @ r)
        se_out[f] = np.sqrt(np.diag(A @ Cb @ A.T + Zf @ D @ Zf.T + s2 * np.eye(f.size) - K @ Vfh.T))
    return np.concatenate([fit_out, se_out])


def _numpy_bayes(bayes, visits: pd.DataFrame, later: pd.DataFrame, seed: int = 3) -> np.ndarray:
    """Hand-written Bayesian dynamic prediction: per subject, per draw (vectorised), b | y_h and the new outcome."""
    post = bayes.tree["posterior"]
    beta = post["beta"].values.reshape(-1, bayes.design.p)
    sigma = post["sigma"].values.reshape(-1)
    D = covariance_draws(bayes)[0][0]
    Xh_all, Zh_all = hierlmm.new_model_matrices(bayes.design, visits)
    Xf_all, Zf_all = hierlmm.new_model_matrices(bayes.design, later)
    y = visits["CD4"].to_numpy()
    hp, fp = visits["patient"].to_numpy(), later["patient"].to_numpy()
    rng = np.random.default_rng(seed)
    out = np.zeros((beta.shape[0], len(later)))
    for pid in pd.unique(fp):
        h, f = np.flatnonzero(hp == pid), np.flatnonzero(fp == pid)
        Zh, Zf = Zh_all[0][h], Zf_all[0][f]
        V = np.einsum("na,sab,mb->snm", Zh, D, Zh) + sigma[:, None, None] ** 2 * np.eye(h.size)
        r = y[h][None] - beta @ Xh_all[h].T
        DZ = np.einsum("sab,nb->san", D, Zh)
        W = np.linalg.solve(V, np.swapaxes(DZ, 1, 2))
        mean = np.einsum("san,sn->sa", DZ, np.linalg.solve(V, r[..., None])[..., 0])
        cov = D - DZ @ W
        b = mean + np.einsum("sab,sb->sa", np.linalg.cholesky(cov), rng.standard_normal(mean.shape))
        out[:, f] = beta @ Xf_all[f].T + b @ Zf.T + sigma[:, None] * rng.standard_normal((beta.shape[0], f.size))
    return out


def _median_time(call, reps: int) -> tuple[float, object]:
    value = call()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="folder with aids.csv (default: simulated data)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--no-bayes", action="store_true", help="skip the NUTS fit (about a minute)")
    parser.add_argument("--json", help="write the figures as JSON")
    args = parser.parse_args()
    data = _data(args.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit(FORMULA, data)
    visits, later = _new_subjects(fit, args.subjects)
    figures: dict = {"subjects": args.subjects, "visits": VISITS.size, "predicted_rows": len(later)}

    def ours():
        return hierlmm.predict(fit, later, level=1, interval="prediction", history=visits)

    t_ours, pred = _median_time(ours, args.reps)
    ours_values = np.concatenate([pred["fit"].to_numpy(), pred["y_se"].to_numpy()])
    t_numpy, numpy_values = _median_time(lambda: _numpy_plugin(fit, visits, later), args.reps)
    figures["reml"] = {"hierlmm_s": t_ours, "numpy_loop_s": t_numpy, "ratio_numpy": t_ours / t_numpy,
                       "max_abs_diff_numpy": float(np.max(np.abs(ours_values - numpy_values)))}
    print(f"REML dynamic prediction, {args.subjects} new subjects x {VISITS.size} visits -> {len(later)} rows")
    print(f"  hierlmm {t_ours:.3f} s | NumPy loop {t_numpy:.3f} s | ratio {t_ours / t_numpy:.3f} "
          f"| max |diff| {figures['reml']['max_abs_diff_numpy']:.2e}")
    if shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "p.json").write_text(json.dumps({"beta": fit.beta.tolist(), "cov_beta": fit.cov_beta.tolist(),
                                                    "D": fit.D[0].tolist(), "sigma": fit.sigma}))
            visits.to_csv(tmp / "h.csv", index=False)
            later.to_csv(tmp / "f.csv", index=False)
            (tmp / "run.R").write_text(R_SCRIPT)
            subprocess.run(["Rscript", str(tmp / "run.R"), str(tmp / "p.json"), str(args.reps), str(tmp / "o.json"),
                            str(tmp / "h.csv"), str(tmp / "f.csv")], check=True)
            r = json.loads((tmp / "o.json").read_text())
        n = len(later)
        r_values = np.asarray(r["values"], dtype=float)
        r_fit = np.concatenate([r_values[k:k + 2] for k in range(0, r_values.size, 4)])
        r_se = np.concatenate([r_values[k + 2:k + 4] for k in range(0, r_values.size, 4)])
        t_r = statistics.median(r["times"])
        diff = float(np.max(np.abs(ours_values - np.concatenate([r_fit, r_se]))))
        figures["reml"].update(r_loop_s=t_r, ratio_r=t_ours / t_r, max_abs_diff_r=diff)
        print(f"  R loop (same formulas) {t_r:.3f} s | ratio {t_ours / t_r:.3f} | max |diff| {diff:.2e} ({n} rows)")
    else:
        print("  R loop: skipped (no Rscript)")
    if not args.no_bayes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bayes = hierlmm.fit_bayes(fit.design, chains=4, draws=1000, seed=1, cores=2, progressbar=False)

        def ours_bayes():
            return hierlmm.predict(bayes, later, level=1, interval="prediction", history=visits)

        reps = max(1, args.reps // 2)
        t_b, pred_b = _median_time(ours_bayes, reps)
        t_nb, draws_nb = _median_time(lambda: _numpy_bayes(bayes, visits, later), reps)
        sd = pred_b["y_sd"].to_numpy()
        z = np.abs(pred_b["y_fit"].to_numpy() - draws_nb.mean(axis=0)) / (sd * np.sqrt(2 / draws_nb.shape[0]))
        figures["bayes"] = {"draws": int(draws_nb.shape[0]), "hierlmm_s": t_b, "numpy_loop_s": t_nb,
                            "ratio_numpy": t_b / t_nb, "max_z_mean_vs_numpy": float(z.max())}
        print(f"Bayes dynamic prediction ({draws_nb.shape[0]} draws): hierlmm {t_b:.2f} s | NumPy loop {t_nb:.2f} s "
              f"| ratio {t_b / t_nb:.3f} | max z of mean difference {z.max():.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
