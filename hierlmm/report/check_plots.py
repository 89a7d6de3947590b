"""Plots of model checks (:mod:`hierlmm.inference.posterior_checks`): the uniform QQ plot of quantile residuals or
PIT values, subjects' observed trajectories in their posterior predictive bands, and a statistic's posterior
predictive distribution with its observed value.

Every function returns a matplotlib ``Figure`` and writes no file (``fig.savefig`` does, where the caller chooses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta as beta_dist

from hierlmm.errors import DataError
from hierlmm.inference.posterior_checks import PredictiveCheck, marginal_check, predictive_band, uniform_qq


def uniform_qq_plot(values: Any, *, title: str = "Quantile residuals"):
    """Observed against expected U(0, 1) quantiles of ``values`` (DHARMa's QQ plot), with the KS p-value, the
    identity line and a pointwise 95% band of uniform order statistics (Beta(k, n + 1 - k) quantiles)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    qq = uniform_qq(values)
    n = qq.observed.size
    k = np.arange(1, n + 1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.fill_between(qq.expected, beta_dist.ppf(0.025, k, n + 1 - k), beta_dist.ppf(0.975, k, n + 1 - k),
                    color="0.85", label="95% band under U(0, 1)")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1)
    ax.plot(qq.expected, qq.observed, "o", ms=3, color="C0")
    ax.set(xlabel="expected (uniform)", ylabel="observed", xlim=(0, 1), ylim=(0, 1),
           title=f"{title}\nKS p = {qq.ks_pvalue:.3g}")
    ax.legend(loc="upper left", frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def subject_band_plot(fit: Any, subjects: Sequence[str], *, data: pd.DataFrame | None = None,
                      time: str | None = None, ci_prob: float = 0.9, seed: int | None = 1):
    """The observed trajectories of ``subjects`` with their pointwise posterior predictive bands (points outside the
    band in red), one panel per subject. The x axis is ``data[time]`` (``data`` the frame the design was built
    from) or, without them, the row's position within its subject."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    if (data is None) != (time is None):
        raise DataError("Give both data= and time=, or neither.", given={"data": data is not None, "time": time},
                        fix="subject_band_plot(fit, subjects, data=frame, time='obstime').")
    if time is not None and time not in data.columns:
        raise DataError(f"{time!r} is not a column of data.", given=list(data.columns)[:10],
                        fix="Name the time column of the frame the fit was made from.")
    block = fit.design.blocks[0]
    subjects = [str(s) for s in subjects]
    unknown = [s for s in subjects if s not in block.levels]
    if not subjects or unknown:
        raise DataError(f"Subjects must be levels of {block.factor!r}.", given=unknown or subjects,
                        fix=f"Use some of {', '.join(block.levels[:5])}, ...")
    band = predictive_band(fit, ci_prob, seed=seed)
    ncol = min(4, len(subjects))
    nrow = -(-len(subjects) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    for ax, subject in zip(axes.ravel(), subjects, strict=False):
        rows = band[band[block.factor] == subject]
        x = (data[time].to_numpy()[rows["row"].to_numpy()] if time is not None else np.arange(len(rows)))
        order = np.argsort(x, kind="stable")
        ax.fill_between(x[order], rows["lower"].to_numpy()[order], rows["upper"].to_numpy()[order], color="C0",
                        alpha=0.25, lw=0)
        ax.plot(x[order], rows["mean"].to_numpy()[order], color="C0", lw=1)
        inside = rows["inside"].to_numpy()
        ax.plot(x[inside], rows["y"].to_numpy()[inside], "o", color="k", ms=3)
        ax.plot(x[~inside], rows["y"].to_numpy()[~inside], "o", color="C3", ms=4)
        ax.set_title(f"{block.factor} {subject}: {inside.mean():.0%} inside", fontsize=9)
        ax.set_xlabel(time or "row within subject")
    for ax in axes.ravel()[len(subjects):]:
        ax.set_visible(False)
    fig.suptitle(f"{ci_prob:.0%} posterior predictive bands", fontsize=10)
    fig.tight_layout()
    return fig


def predictive_check_plot(check: PredictiveCheck, *, bins: int = 30):
    """Histogram of a statistic's posterior predictive draws with the observed value and the p-value."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    if not isinstance(check, PredictiveCheck):
        raise DataError("predictive_check_plot draws the result of hierlmm's predictive_check.",
                        given=type(check).__name__, fix="Pass predictive_check(fit, 'lag1_correlation').")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(check.replicated, bins=bins, color="C0", alpha=0.6, label="replicated")
    ax.axvline(check.observed, color="C3", lw=2, label="observed")
    ax.set(xlabel=check.statistic, ylabel="draws",
           title=f"{check.statistic}: Pr(T(y_rep) >= T(y)) = {check.p_value:.3f}")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def variogram_check_plot(table: pd.DataFrame, *, ax: Any = None):
    """The semi-variogram check of :func:`hierlmm.inference.posterior_checks.variogram_check`: the replicates'
    band (shaded) and median (line) against distance, and the observed semi-variogram (points; red outside the
    band). Observed points below the band at short distances and above it at long ones are serial correlation the
    model leaves out."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    needed = {"dist", "variog", "lower", "median", "upper", "inside"}
    if not isinstance(table, pd.DataFrame) or not needed <= set(table.columns):
        raise DataError("variogram_check_plot draws the table of hierlmm's variogram_check.",
                        given=list(table.columns) if isinstance(table, pd.DataFrame) else type(table).__name__,
                        fix="Pass variogram_check(fit, 'time', data=frame).")
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    x = table["dist"].to_numpy(dtype=float)
    inside = table["inside"].to_numpy(dtype=bool)
    y = table["variog"].to_numpy(dtype=float)
    ax.fill_between(x, table["lower"], table["upper"], color="C0", alpha=0.25, lw=0, label="replicated band")
    ax.plot(x, table["median"], color="C0", lw=1.5, label="replicated median")
    ax.plot(x[inside], y[inside], "o", color="k", ms=4, label="observed")
    ax.plot(x[~inside], y[~inside], "o", color="C3", ms=5, label="observed, outside the band")
    top = max(float(np.max(y)), float(table["upper"].max()))
    ax.set(xlabel="Distance", ylabel="Semivariogram", ylim=(0, 1.04 * top if top > 0 else 1.0),
           title=f"Semi-variogram check: {int(inside.sum())} of {inside.size} classes inside the band")
    ax.legend(loc="lower right", frameon=False, fontsize=8)
    return fig


def marginal_check_plot(fit: Any, *, seed: int | None = 1, draws: int | None = 100, num_samples: int = 50,
                        **kwargs: Any):
    """ArviZ's posterior predictive check of the marginal distribution of ``y``: ``arviz_plots.plot_ppc_dist`` on
    :func:`hierlmm.inference.posterior_checks.marginal_check`'s tree (a copy: the fit's tree is not changed), the
    density of the observed ``y`` over those of ``num_samples`` replicated data sets.

    Returns
    -------
    arviz_plots.PlotCollection
        What ``plot_ppc_dist`` returns (its figure is ``.viz["figure"]``; ``.savefig(path)`` writes it). ``kwargs``
        go to ``plot_ppc_dist`` (e.g. ``kind="ecdf"``, ``backend=``).
    """
    import arviz_plots as azp  # lazy: arviz_plots: ~1 s to import, needed only to draw

    tree = marginal_check(fit, seed=seed, draws=draws)
    available = tree["posterior_predictive"].sizes["draw"]
    return azp.plot_ppc_dist(tree, num_samples=min(int(num_samples), available), **kwargs)
