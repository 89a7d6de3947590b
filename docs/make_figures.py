"""Draw the figures of docs/hierarchical_or_marginal.md into docs/img (needs HIERLMM_DATA for the AIDS ones).

Run: HIERLMM_DATA=../shared/data .venv/bin/python docs/make_figures.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import hierlmm
from hierlmm import plots

OUT = Path(__file__).parent / "img"
OUT.mkdir(exist_ok=True)
visits = pd.DataFrame([{"id": f"s{i}", "t": float(t)} for i in range(200) for t in range(5)])

# 1. compound symmetry with a negative ICC: marginal posterior of the ICC, hierarchical posterior of sd(Intercept)
cs = hierlmm.simulate("y ~ t + (1 | id)", {"beta": [1.0, 0.3], "D": [[-0.15]], "sigma": np.sqrt(1.15)}, visits,
                      kind="marginal", seed=11)
design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), cs)
marginal = hierlmm.fit_bayes(design, kind="marginal", progressbar=False)
hierarchical = hierlmm.fit_bayes(design, progressbar=False)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
icc = marginal.parameter_draws()["icc"].ravel()
axes[0].hist(icc, bins=50, color="C0")
axes[0].axvline(-0.15, color="k", ls="--", label="truth -0.15")
axes[0].axvline(0, color="grey", lw=0.8)
axes[0].set(title="marginal model: posterior of the ICC", xlabel="ICC")
axes[0].legend()
sd = hierarchical.tree["posterior"]["sd_id"].values.ravel()
axes[1].hist(sd, bins=50, color="C3")
axes[1].set(title="hierarchical model: posterior of sd(Intercept)", xlabel="sd(Intercept)")
fig.tight_layout()
fig.savefig(OUT / "negative_icc.png", dpi=90)

# 2. the AIDS fit: variance function and implied correlation of the visits
aids = hierlmm.datasets.load("aids")
reml = hierlmm.fit("CD4 ~ obstime + obstime:drug + (obstime | patient)", aids)
line = pd.DataFrame({"obstime": np.linspace(0, 18, 40), "drug": "ddC", "patient": "450"})
plots.variance_function(hierlmm.implied_covariance(reml, rows=line), "obstime").savefig(OUT / "aids_variance.png",
                                                                                        dpi=90)
grid = pd.DataFrame({"obstime": [0.0, 2.0, 6.0, 12.0, 18.0], "drug": "ddC", "patient": "450"})
plots.covariance_heatmap(hierlmm.implied_covariance(reml, rows=grid), labels=grid["obstime"]).savefig(
    OUT / "aids_correlation.png", dpi=90)
print("figures in", OUT)
