"""Draw the figures of docs/heteroscedastic.md into docs/img (needs HIERLMM_DATA for the AIDS fits).

Run: HIERLMM_DATA=../shared/data .venv/bin/python docs/make_heteroscedastic_figures.py
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import hierlmm

OUT = Path(__file__).parent / "img"
OUT.mkdir(exist_ok=True)
REF = json.loads((Path(__file__).parent.parent / "tests" / "fixtures" / "variance_function_reference.json").read_text())
aids, pbc2 = hierlmm.datasets.load("aids"), hierlmm.datasets.load("pbc2")
MODEL_I = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
fits = {
    "aids_varident": hierlmm.fit("CD4 ~ obstime * drug", aids, random="~ obstime | patient",
                                 weights="varIdent(form = ~ 1 | drug)"),
    "aids_varident_ml": hierlmm.fit("CD4 ~ obstime * drug", aids, random="~ obstime | patient", method="ML",
                                    weights="varIdent(form = ~ 1 | drug)"),
    "pbc2_varpower": hierlmm.fit("log(prothrombin) ~ year + sex + age", pbc2, random="~ year | id",
                                 weights="varPower(form = ~ serBilir)"),
    "pbc2_varpower_by_sex": hierlmm.fit("log(prothrombin) ~ year + sex + age", pbc2, random="~ year | id",
                                        weights="varPower(form = ~ serBilir | sex)"),
    "pbc2_varexp": hierlmm.fit("log(serBilir) ~ year + sex + age", pbc2, random="~ year | id",
                               weights="varExp(form = ~ albumin)"),
    "aids_corexp_varexp": hierlmm.fit(MODEL_I, aids, random="~ 1 | patient", weights="varExp(form = ~ obstime)",
                                      correlation="corExp(form = ~ obstime | patient)"),
}

# 1. the fitted error SD against its covariate: hierlmm (line) and nlme (markers)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
fit, ref = fits["aids_varident"], REF["aids_varident"]
labels = ["ddC", "ddI"]
axes[0].bar([0, 1], [fit.sigma, fit.sigma * fit.variance_parameters["ddI"]], color="C0", alpha=0.7, label="hierlmm")
axes[0].plot([0, 1], [ref["sigma"], ref["sigma"] * ref["variance_function"]["est"][0]], "kx", ms=10, label="nlme")
lo, hi = fit.variance_intervals()["ddI"]
axes[0].errorbar([1], [fit.sigma * fit.variance_parameters["ddI"]], yerr=[[fit.sigma * (fit.variance_parameters["ddI"]
                 - lo)], [fit.sigma * (hi - fit.variance_parameters["ddI"])]], color="k", capsize=4)
axes[0].set(xticks=[0, 1], xticklabels=labels, ylabel="error SD", title="AIDS CD4: varIdent(~ 1 | drug)")
axes[0].legend(loc="lower right")
for ax, name, column, label in ((axes[1], "pbc2_varpower", "serBilir", "varPower(~ serBilir)"),
                                (axes[2], "pbc2_varexp", "albumin", "varExp(~ albumin)")):
    fit, ref = fits[name], REF[name]
    x = np.linspace(*np.percentile(pbc2[column], [1, 99]), 60)
    est = ref["variance_function"]["est"][0]
    if name == "pbc2_varpower":
        ours, theirs = fit.sigma * x ** fit.variance_parameters["power"], ref["sigma"] * x ** est
    else:
        ours, theirs = fit.sigma * np.exp(fit.variance_parameters["expon"] * x), ref["sigma"] * np.exp(est * x)
    ax.plot(x, ours, color="C0", label="hierlmm")
    ax.plot(x[::6], theirs[::6], "kx", label="nlme")
    ax.set(xlabel=column, ylabel="error SD", title=f"PBC: {label}")
    ax.legend()
fig.tight_layout()
fig.savefig(OUT / "heteroscedastic_sd.png", dpi=90)

# 2. 95% intervals of the variance-function parameters, hierlmm against nlme
fig, ax = plt.subplots(figsize=(10, 4.2))
rows = []
for name, fit in fits.items():
    vf = REF[name]["variance_function"]
    for j, (param, (lo, hi)) in enumerate(fit.variance_intervals().items()):
        est = fit.variance_parameters[param]
        rows.append((f"{name}: {param}", (lo, est, hi), (vf["lower"][j], vf["est"][j], vf["upper"][j])))
for i, (_label, ours, theirs) in enumerate(rows):
    scale = abs(theirs[1])  # each parameter relative to nlme's estimate
    ax.plot([ours[0] / scale, ours[2] / scale], [i + 0.12] * 2, color="C0", lw=3, label="hierlmm" if i == 0 else None)
    ax.plot([theirs[0] / scale, theirs[2] / scale], [i - 0.12] * 2, color="k", lw=1.5, label="nlme" if i == 0 else None)
# nlme's interval moves when prothrombin is divided by a constant (the same model); hierlmm's does not
prothrombin = hierlmm.fit("log(serBilir) ~ year + sex + age", pbc2, random="~ year | id",
                          weights="varPower(form = ~ prothrombin)")
i, lo_hi = len(rows), prothrombin.variance_intervals()["power"]
scale = prothrombin.variance_parameters["power"]
ax.plot([lo_hi[0] / scale, lo_hi[1] / scale], [i + 0.12] * 2, color="C0", lw=3)
for k, r in enumerate(REF["pbc2_varpower_prothrombin"]["by_scale"]):
    ax.plot([r["lower"] / scale, r["upper"] / scale], [i - 0.3 + 0.1 * k] * 2, color="grey", lw=1,
            label="nlme, prothrombin / c (4 values of c)" if k == 0 else None)
ax.set(yticks=range(len(rows) + 1), yticklabels=[r[0] for r in rows] + ["pbc2 varPower(~ prothrombin): power"],
       xlabel="95% interval / |nlme estimate|", title="Variance-function intervals (nlme's intervals())")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
fig.tight_layout()
fig.savefig(OUT / "heteroscedastic_intervals.png", dpi=90)
for label, ours, theirs in rows:
    print(f"| {label} | {ours[1]:.5g} ({ours[0]:.4g}, {ours[2]:.4g}) | "
          f"{theirs[1]:.5g} ({theirs[0]:.4g}, {theirs[2]:.4g}) |")
print("prothrombin", prothrombin.variance_intervals())
for name, fit in fits.items():
    print(name, f"logLik {fit.loglik:.6f} nlme {REF[name]['logLik']:.6f}")
print("figures in", OUT)
