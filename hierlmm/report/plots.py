"""Plots of fits: subject profiles with fitted trajectories, Bayes-versus-REML forest plot, ArviZ diagnostics,
and the implied marginal structure (covariance heat maps, variance function).

Every function returns a matplotlib ``Figure`` (ArviZ plots: arviz_plots' ``PlotCollection``, whose
``savefig`` writes a file), so notebooks show them and scripts save them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import arviz_base as azb
import numpy as np
import pandas as pd

from hierlmm.design.design import check_data_rows
from hierlmm.design.sufficient_stats import outermost_block
from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.reml.ml_fit import MLFit
from hierlmm.errors import DataError
from hierlmm.inference.bayes_vs_ml import compare
from hierlmm.inference.implied_covariance import ImpliedCovariance
from hierlmm.inference.posterior_predictive import add_posterior_predictive
from hierlmm.inference.prediction import trajectories


def _shown(values: Any, transform: Any) -> np.ndarray:
    """Values as drawn: on the model's scale, or through the display ``transform``."""
    values = np.asarray(values, dtype=float)
    return values if transform is None else np.asarray(transform(values), dtype=float)


def subject_panel(
    fit: Any,
    data: pd.DataFrame,
    time: str,
    *,
    subjects: Sequence[str] | None = None,
    n_subjects: int = 16,
    grid_points: int = 40,
    ci_prob: float = 0.95,
    predictive: bool = False,
    transform: Any = None,
):
    """Observed profiles of some subjects with their mean trajectories and pointwise bands, for any fit with random
    effects: the empirical-Bayes trajectory with its confidence band (ML/REML) or the posterior mean with its
    credible band (Bayes), from :func:`hierlmm.trajectories`.

    Parameters
    ----------
    fit
        An ML/REML or Bayesian fit of the hierarchical model.
    data
        The data the fit was built from (all columns the model uses), as it was: its rows are taken by position,
        so sorted, shuffled or filtered data are refused.
    time
        The time column (the x axis); the trajectory grid spans its range.
    subjects
        Levels of the outermost grouping factor to show (default: the first ``n_subjects``).
    transform
        Optional increasing function applied to everything drawn (observed points, trajectories and bands), e.g.
        ``np.exp`` to show a ``log(serBilir)`` model on the serum bilirubin scale; by default the model's scale.
    predictive
        Bands of new outcomes instead of the mean's (with serially correlated errors they condition on the
        subject's rows: the trajectories are then conditioned on ``data``'s rows of the subject).

    Every column but ``time`` is held at the subject's first row: with nested factors the trajectory is that of
    the first row's inner level (e.g. one eye), and a time-varying covariate is held at its first value, so the
    drawn curve is then not the fitted values at the visits.
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    design = fit.design
    if time not in data.columns:
        raise DataError(f"No column {time!r} for the time axis.", given=time, fix=f"Use one of {list(data.columns)}.")
    top = outermost_block(design)
    if top is None or fit.kind == "marginal":
        raise DataError("Subject trajectories need one subject factor that the others nest in, and random effects "
                        "(not the marginal model).", given=[b.factor for b in design.blocks],
                        fix="Use a hierarchical fit with nested grouping factors.")
    check_data_rows(design, data)  # rows are taken by position: they must be the fit's own
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < 1:
        raise DataError("n_subjects is the number of subjects to draw, a whole number >= 1.", given=n_subjects,
                        fix="Pass n_subjects=16, or subjects=[...].")
    if not pd.api.types.is_numeric_dtype(data[time].dtype):
        raise DataError(f"The time column {time!r} is not numeric.", given=str(data[time].dtype),
                        fix="Use a numeric time column for the x axis.")
    block = design.blocks[top]
    chosen = list(subjects) if subjects is not None else list(block.levels[:n_subjects])
    unknown = [s for s in chosen if s not in block.levels]
    if unknown:
        raise DataError(f"Unknown subjects {unknown}.", given=unknown, fix=f"Use levels of {block.factor}.")
    cols = int(np.ceil(np.sqrt(len(chosen))))
    rows = int(np.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), sharex=True, sharey=True, squeeze=False)
    t_grid = np.linspace(data[time].min(), data[time].max(), grid_points)
    used = data.iloc[design.rows].reset_index(drop=True)
    for ax, subject in zip(axes.ravel(), chosen, strict=False):
        in_subject = np.flatnonzero(block.group_index == block.levels.index(subject))
        first = used.iloc[in_subject[0]]
        grid = pd.DataFrame({c: [first[c]] * grid_points for c in used.columns if c != time})
        grid[time] = t_grid
        history = used.iloc[in_subject] if predictive and getattr(fit, "structure", None) is not None else None
        band = trajectories(fit, grid, level=1, ci_prob=ci_prob, predictive=predictive, history=history)
        ax.fill_between(t_grid, _shown(band["lower"], transform), _shown(band["upper"], transform), color="C0",
                        alpha=0.25)
        ax.plot(t_grid, _shown(band["mean"], transform), color="C0", lw=1.2)
        y = _shown(design.y[in_subject], transform)
        ax.plot(used.iloc[in_subject][time], y, "o", color="k", ms=3)
        ax.set_title(f"{block.factor} {subject}", fontsize=8)
    for ax in axes.ravel()[len(chosen):]:
        ax.set_visible(False)
    fig.supxlabel(time)
    fig.supylabel(design.response_name)
    fig.tight_layout()
    return fig


def forest(bayes: BayesFit, ml: MLFit, ci_prob: float = 0.95):
    """Forest plot: each parameter's posterior interval beside the ML/REML estimate (+- 1.96 SE when there is one)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    table = compare(bayes, ml, ci_prob)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(table) + 1))
    y = np.arange(len(table))[::-1]
    scale = np.maximum(table["posterior sd"].to_numpy(), 1e-12)
    centre = table["posterior mean"].to_numpy()
    # standardise each row by its posterior sd so that parameters of different scales share an axis
    ax.hlines(y + 0.12, (table["lower"] - centre) / scale, (table["upper"] - centre) / scale, color="C0",
              label=f"posterior {int(ci_prob * 100)}% interval")
    ax.plot(np.zeros_like(y, dtype=float), y + 0.12, "o", color="C0", ms=4)
    est = (table[ml.method].to_numpy() - centre) / scale
    se = table[f"{ml.method} SE"].to_numpy() / scale
    ax.errorbar(est, y - 0.12, xerr=np.where(np.isfinite(se), 1.96 * se, 0), fmt="s", color="C3", ms=4,
                label=f"{ml.method} estimate (+- 1.96 SE)")
    ax.set_yticks(y, table.index, fontsize=8)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_xlabel("distance from the posterior mean, in posterior SDs")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def rank_plot(fit: BayesFit):
    """Rank plots of the reported parameters (arviz_plots)."""
    import arviz_plots as azp  # lazy: arviz_plots: ~1 s to import, needed only to draw

    return azp.plot_rank(azb.from_dict({"posterior": fit.parameter_draws()}))


def trace_plot(fit: BayesFit):
    """Trace and marginal density of the reported parameters (arviz_plots)."""
    import arviz_plots as azp  # lazy: arviz_plots: ~1 s to import, needed only to draw

    return azp.plot_trace_dist(azb.from_dict({"posterior": fit.parameter_draws()}))


def ppc_plot(fit: BayesFit, num_samples: int = 50):
    """Posterior predictive check of y (adds ``posterior_predictive`` to the tree when missing)."""
    import arviz_plots as azp  # lazy: arviz_plots: ~1 s to import, needed only to draw

    if "posterior_predictive" not in fit.tree.children:
        add_posterior_predictive(fit)
    return azp.plot_ppc_dist(fit.tree, num_samples=num_samples)


def covariance_heatmap(implied: ImpliedCovariance, which: str = "correlation", labels: Sequence[Any] | None = None):
    """Heat map of an implied covariance or correlation matrix (posterior mean for a Bayesian fit).

    Parameters
    ----------
    implied
        From :func:`hierlmm.implied_covariance`.
    which
        ``"correlation"`` or ``"V"``.
    labels
        Tick labels of the rows (e.g. the visit times).
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    values = implied.summary(which)["mean"]
    fig, ax = plt.subplots(figsize=(4.6, 4))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1 if which == "correlation" else None,
                      vmax=1 if which == "correlation" else None)
    n = values.shape[0]
    ticks = list(labels) if labels is not None else list(range(1, n + 1))
    ax.set_xticks(range(n), [f"{t:g}" if isinstance(t, float) else str(t) for t in ticks])
    ax.set_yticks(range(n), [f"{t:g}" if isinstance(t, float) else str(t) for t in ticks])
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("implied correlation of y" if which == "correlation" else "implied covariance V")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def variance_function(implied: ImpliedCovariance, time: str, ci_prob: float = 0.95, ax: Any = None):
    """The variance function ``Var(y(t)) = z(t)' D z(t) + sigma^2`` over the rows' ``time`` column, with a
    ``ci_prob`` band for a Bayesian fit; and the correlation of ``y(t)`` with the first row's ``y``."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    t = np.asarray(implied.rows[time], dtype=float)
    var = implied.summary("variance", ci_prob)
    corr = implied.summary("correlation", ci_prob)
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    ax[0].plot(t, var["mean"], color="C0")
    ax[0].fill_between(t, var["lower"], var["upper"], color="C0", alpha=0.25)
    ax[0].set(xlabel=time, ylabel="Var(y(t))", title="variance function")
    ax[1].plot(t, corr["mean"][0], color="C1")
    ax[1].fill_between(t, corr["lower"][0], corr["upper"][0], color="C1", alpha=0.25)
    ax[1].set(xlabel=time, ylabel=f"Corr(y({t[0]:g}), y(t))", title="correlation with the first time", ylim=(-1, 1))
    ax[0].figure.tight_layout()
    return ax[0].figure
