"""Draw the figures of docs/interpretation.md into docs/img (embedded pbc2 only: no HIERLMM_DATA needed).

Run: .venv/bin/python docs/make_interpretation_figures.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import hierlmm

OUT = Path(__file__).parent / "img"
OUT.mkdir(exist_ok=True)
pbc2 = hierlmm.datasets.add_baseline(hierlmm.datasets.load("pbc2"), "prothrombin", "id", name="basePro")

# 1. the chapter's effect plot (3.2): REML, males and females aged 49 with baseline prothrombin 10.6
model = hierlmm.load_spec(Path(__file__).parent.parent / "models" / "pbc2_effect_plot.toml")
reml = hierlmm.fit(model.spec, pbc2)
years = [k / 4 for k in range(49)]
effects = hierlmm.effects(reml, "year", by="sex", at={"age": 49, "basePro": 10.6}, grid=years, data=pbc2)
hierlmm.effect_plot(effects).savefig(OUT / "pbc2_effect_plot.png", dpi=90)

# 2. partial pooling of the intercepts and slopes of log(serBilir) ~ year (random ~ year | id)
lines = hierlmm.fit("log(serBilir) ~ year + (year | id)", pbc2)
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
hierlmm.shrinkage_plot(lines, ax=axes[0])
hierlmm.shrinkage_plot(lines, effects="(Intercept)", ax=axes[1])
fig.tight_layout()
fig.savefig(OUT / "pbc2_shrinkage.png", dpi=90)
print("figures in", OUT)
