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
from hierlmm.inference.posterior_checks import PredictiveCheck, predictive_band, uniform_qq


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
