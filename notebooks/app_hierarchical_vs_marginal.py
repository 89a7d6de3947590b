"""Hierarchical or marginal? An app to try the chapter's section 3.3 (``make app``; ``marimo run`` this file).

Left: random intercepts and slopes, and the marginal structure they imply. Right: the PBC effect plot.
"""

import marimo

__generated_with = "0.25.2"

app = marimo.App(width="full", app_title="hierlmm: hierarchical or marginal?")


@app.cell
def _():
    import matplotlib

    matplotlib.use("Agg")
    import marimo as mo
    import matplotlib.pyplot as plt
    import numpy as np

    import hierlmm
    from hierlmm.report.explorer import effect_plot_grid, implied_structure

    return effect_plot_grid, hierlmm, implied_structure, mo, np, plt


@app.cell
def _(mo):
    allow = mo.ui.checkbox(label="allow non-positive-definite D (|correlation| > 1)")
    sd0 = mo.ui.slider(0.0, 3.0, step=0.1, value=1.0, label="sd(Intercept)", show_value=True)
    sd1 = mo.ui.slider(0.0, 1.0, step=0.02, value=0.3, label="sd(slope)", show_value=True)
    sigma = mo.ui.slider(0.1, 3.0, step=0.1, value=1.0, label="sigma", show_value=True)
    n_visits = mo.ui.slider(2, 10, step=1, value=5, label="number of visits", show_value=True)
    spacing = mo.ui.slider(0.25, 3.0, step=0.25, value=1.0, label="spacing of visits", show_value=True)
    return allow, n_visits, sd0, sd1, sigma, spacing


@app.cell
def _(allow, mo):
    limit = 2.0 if allow.value else 1.0
    rho = mo.ui.slider(-limit, limit, step=0.05, value=-0.3, label="correlation", show_value=True)
    return (rho,)


@app.cell
def _(implied_structure, n_visits, rho, sd0, sd1, sigma, spacing):
    structure = implied_structure(sd0.value, sd1.value, rho.value, sigma.value, n_visits.value, spacing.value)
    return (structure,)


@app.cell
def _(np, plt, structure):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    image = axes[0].imshow(structure.correlation, cmap="RdBu_r", vmin=-1, vmax=1)
    ticks = [f"{t:g}" for t in structure.times]
    axes[0].set_xticks(range(len(ticks)), ticks)
    axes[0].set_yticks(range(len(ticks)), ticks)
    axes[0].set_title("implied correlation of the visits")
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    grid = np.linspace(0, structure.times[-1], 60)
    z = np.column_stack([np.ones_like(grid), grid])
    sigma2 = structure.V[0, 0] - structure.D[0, 0]
    axes[1].plot(grid, np.einsum("ra,ab,rb->r", z, structure.D, z) + sigma2)
    axes[1].plot(structure.times, structure.variance, "o")
    axes[1].set(title="variance function Var(y(t))", xlabel="t")
    fig.tight_layout()
    implied_figure = fig
    return (implied_figure,)


@app.cell
def _(allow, implied_figure, mo, n_visits, rho, sd0, sd1, sigma, spacing, structure):
    left = mo.vstack([
        mo.md("## Random intercepts and slopes imply V = Z D Z' + sigma^2 I"),
        mo.hstack([mo.vstack([sd0, sd1, rho, allow]), mo.vstack([sigma, n_visits, spacing])]),
        mo.md(f"**{structure.verdict()}**"),
        implied_figure,
    ])
    left
    return


@app.cell
def _(hierlmm):
    from pathlib import Path

    model_file = hierlmm.load_spec(Path(hierlmm.__file__).resolve().parent.parent / "models" / "pbc2_effect_plot.toml")
    pbc_fit = hierlmm.fit(model_file.spec, model_file.load_data())
    return (pbc_fit,)


@app.cell
def _(mo):
    age = mo.ui.slider(30, 75, step=1, value=49, label="age (years)", show_value=True)
    base_pro = mo.ui.slider(9.0, 13.0, step=0.1, value=10.6, label="baseline prothrombin (s)", show_value=True)
    return age, base_pro


@app.cell
def _(age, base_pro, effect_plot_grid, mo, pbc_fit, plt):
    effects = effect_plot_grid(pbc_fit, age.value, base_pro.value)
    fig2, ax = plt.subplots(figsize=(6, 3.8))
    for sex, colour in (("male", "C0"), ("female", "C3")):
        part = effects[effects["sex"] == sex]
        ax.fill_between(part["year"], part["low"], part["upp"], color=colour, alpha=0.25)
        ax.plot(part["year"], part["pred"], color=colour, label=sex)
    ax.set(xlabel="years", ylabel="log serum bilirubin", title="PBC effect plot (REML, 95% bands)")
    ax.legend()
    fig2.tight_layout()
    mo.vstack([mo.md("## PBC: population mean of log serum bilirubin"), mo.hstack([age, base_pro]), fig2])
    return


if __name__ == "__main__":
    app.run()
