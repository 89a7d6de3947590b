"""nlme's diagnostic plots of a fit (chapter 3.11): residuals against fitted values and against time, and normal QQ
plots of the residuals and of the random effects, each with what a correct model would give beside it.

Every function returns a matplotlib ``Figure`` and writes nothing; :func:`write_diagnostics` (what
``hierlmm residuals SPEC --out DIR`` runs) saves them, and a CSV of the residuals, into the one folder it is given.

Notation
--------
Residuals are ``fit.residuals(level, type)`` (``type`` ``"response"``, ``"pearson"`` or ``"normalized"``, nlme's).
The trend line of a residual plot is the mean of the residuals in ``n_bins`` bins of equal counts along the x axis
(a binned mean rather than a loess: no extra dependency, and the same message: a mean that moves away from 0 is a
mean structure the model misses). A QQ plot's envelope is the pointwise 2.5% and 97.5% quantiles of ``n_envelope``
sorted samples of the same size from the normal distribution with the residuals' mean and SD: points outside it are
heavier tails or skewness than a normal model allows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from hierlmm.design.design import Design, check_data_rows
from hierlmm.engines.fit_result import check_residual_type
from hierlmm.errors import DataError, SpecError
from hierlmm.inference.variogram import time_values as variogram_time_values


def _whole(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise SpecError(f"{name} must be a whole number, {least} or more.", given=value, fix=f"Use e.g. {name}=20.")
    return int(value)


def binned_mean(x: np.ndarray, y: np.ndarray, n_bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``y`` in ``n_bins`` bins of (nearly) equal counts along ``x``: (bin centres, means)."""
    n_bins = _whole(n_bins, "n_bins", 1)
    order = np.argsort(x, kind="stable")
    groups = np.array_split(order, max(1, min(n_bins, x.size)))
    groups = [g for g in groups if g.size]
    return np.array([x[g].mean() for g in groups]), np.array([y[g].mean() for g in groups])


def qq_envelope(values: np.ndarray, n_envelope: int = 200, seed: int = 1) -> dict[str, np.ndarray]:
    """Theoretical normal quantiles, the sorted standardised values and a simulated 95% envelope (module notation)."""
    n_envelope = _whole(n_envelope, "n_envelope", 2)
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size
    if n < 3:
        raise DataError("A QQ plot needs at least three finite values.", given=n, fix="Check the fit's residuals.")
    z = (np.sort(values) - values.mean()) / values.std(ddof=1)
    theoretical = scipy.stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)
    rng = np.random.default_rng(seed)
    sims = np.sort(rng.standard_normal((n_envelope, n)), axis=1)
    sims = (sims - sims.mean(axis=1, keepdims=True)) / sims.std(axis=1, ddof=1, keepdims=True)
    lower, upper = np.quantile(sims, [0.025, 0.975], axis=0)
    return {"theoretical": theoretical, "sample": z, "lower": lower, "upper": upper}


def _residuals(fit: Any, level: int, type: str) -> np.ndarray:
    return np.asarray(fit.residuals(level, type=check_residual_type(type)), dtype=float)


def residuals_vs_fitted(fit: Any, *, level: int = 1, type: str = "pearson", n_bins: int = 20,
                        by: str | None = None, data: pd.DataFrame | None = None, ax: Any = None):
    """nlme's ``plot(fit)``: residuals against fitted values, with the binned mean (module notation); ``by`` a
    column of ``data`` (the data the fit was built from): one colour and one binned mean per level (nlme's
    ``plot(fit, resid(.) ~ fitted(.) | g)`` in one panel)."""
    r, f = _residuals(fit, level, type), np.asarray(fit.fitted(level), dtype=float)
    return _residual_panel(f, r, _groups(fit, by, data), n_bins, ax, f"fitted values (level {level})",
                           f"{check_residual_type(type)} residuals", f"Residuals against fitted values (level {level})")


def residuals_vs_time(fit: Any, data: pd.DataFrame, time: str, *, level: int = 1,
                      type: str = "pearson", n_bins: int = 20, by: str | None = None, ax: Any = None):
    """Residuals against a time column of the data the fit was built from, with the binned mean (one per level of
    the column ``by``, when given)."""
    t = time_values(fit.design, data, time)
    return _residual_panel(t, _residuals(fit, level, type), _groups(fit, by, data), n_bins, ax, time,
                           f"{check_residual_type(type)} residuals", f"Residuals against {time} (level {level})")


def _groups(fit: Any, by: str | None, data: pd.DataFrame | None) -> np.ndarray | None:
    """The levels of column ``by`` on the fit's rows (None without ``by``)."""
    if by is None:
        return None
    if data is None:
        raise SpecError("by= names a column of the data the fit was built from.", given={"by": by},
                        fix="Pass data= as well.")
    if by not in data.columns:
        raise DataError(f"No column {by!r} in the data.", given=by, fix=f"Use one of {list(data.columns)}.")
    check_data_rows(fit.design, data)
    return data[by].astype(str).to_numpy()[fit.design.rows]


def _residual_panel(x: np.ndarray, r: np.ndarray, groups: np.ndarray | None, n_bins: int, ax: Any, xlabel: str,
                    ylabel: str, title: str):
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    if groups is None:
        ax.scatter(x, r, s=6, alpha=0.4, color="C0")
        centres, means = binned_mean(x, r, n_bins)
        ax.plot(centres, means, color="C3", lw=2, label="binned mean")
    else:
        for k, level in enumerate(pd.unique(groups)):
            inside = groups == level
            ax.scatter(x[inside], r[inside], s=6, alpha=0.4, color=f"C{k % 10}")
            centres, means = binned_mean(x[inside], r[inside], n_bins)
            ax.plot(centres, means, color=f"C{k % 10}", lw=2, label=f"{level}: binned mean")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc="best")
    return fig


def time_values(design: Design, data: pd.DataFrame, time: str) -> np.ndarray:
    """The time column's values on the design's rows; a hierlmm error when it is missing, not numeric, or the data
    are not the fit's (the semi-variogram's check, :func:`hierlmm.inference.variogram.time_values`)."""
    return variogram_time_values(design, data, time)


def qq_residuals(fit: Any, *, level: int = 1, type: str = "pearson", n_envelope: int = 200,
                 seed: int = 1, ax: Any = None):
    """Normal QQ plot of the residuals with a simulated 95% envelope (module notation)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    qq = qq_envelope(_residuals(fit, level, type), n_envelope, seed)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 5))
    _draw_qq(ax, qq, f"{type} residuals (level {level})")
    return fig


def qq_random_effects(fit: Any, *, n_envelope: int = 200, seed: int = 1):
    """nlme's ``qqnorm(fit, ~ ranef(.))``: one normal QQ panel per random effect of every grouping factor, with a
    simulated 95% envelope (the empirical-Bayes estimates are shrunk, so their spread is below ``D``'s)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    panels = []
    for factor, effects in fit.ranef().items():
        frame = effects.mean if hasattr(effects, "mean") and isinstance(effects.mean, pd.DataFrame) else effects
        if isinstance(frame.columns, pd.MultiIndex):  # a posterior table: (effect, statistic)
            frame = frame.xs("mean", axis=1, level=1)
        panels += [(f"{factor}: {name}", frame[name].to_numpy(dtype=float)) for name in frame.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (label, values) in zip(axes[0], panels, strict=True):
        _draw_qq(ax, qq_envelope(values, n_envelope, seed), label)
    fig.tight_layout()
    return fig


def _draw_qq(ax: Any, qq: dict[str, np.ndarray], label: str) -> None:
    ax.fill_between(qq["theoretical"], qq["lower"], qq["upper"], color="0.85", label="95% envelope")
    ax.plot(qq["theoretical"], qq["theoretical"], color="k", lw=0.8)
    ax.scatter(qq["theoretical"], qq["sample"], s=8, color="C0")
    ax.set(xlabel="normal quantiles", ylabel="standardised sample quantiles", title=label)
    ax.legend(loc="upper left")


def write_diagnostics(fit: Any, folder: str | Path, *, data: pd.DataFrame | None = None, time: str | None = None,
                      type: str = "pearson", by: str | None = None) -> list[Path]:
    """Save the diagnostic plots (PNG) and a CSV of the residuals (every type and level the fit has) into
    ``folder`` (created if needed), and nothing anywhere else; returns the files written."""
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    folder = Path(folder)
    type = check_residual_type(type)
    _groups(fit, by, data)  # refuse a bad by=, time= or data before anything is written
    if time is not None:
        time_values(fit.design, data, time)
    if folder.exists() and not folder.is_dir():
        raise DataError("--out must be a folder, and this path is a file.", given=str(folder),
                        fix="Name a new or existing folder.")
    if time is not None and data is None:
        raise SpecError("Plots against time need the data the fit was built from.", given={"time": time},
                        fix="Pass data= as well.")
    folder.mkdir(parents=True, exist_ok=True)
    levels = (0,) if getattr(fit, "kind", "hierarchical") == "marginal" else (0, 1)
    table = pd.DataFrame({"row": fit.design.rows})
    for level in levels:
        table[f"fitted_{level}"] = fit.fitted(level)
        for kind in ("response", "pearson", "normalized"):
            table[f"{kind}_{level}"] = fit.residuals(level, type=kind)
    written = [folder / "residuals.csv"]
    table.to_csv(written[0], index=False)
    figures = {f"residuals_vs_fitted_level{level}.png": residuals_vs_fitted(fit, level=level, type=type, by=by,
                                                                          data=data) for level in levels}
    figures.update({f"qq_residuals_level{level}.png": qq_residuals(fit, level=level, type=type) for level in levels})
    if 1 in levels:
        figures["qq_random_effects.png"] = qq_random_effects(fit)
    if time is not None:
        safe = re.sub(r"[^\w.-]", "_", time)  # a column name is not a path
        figures.update({f"residuals_vs_{safe}_level{level}.png": residuals_vs_time(fit, data, time, level=level,
                                                                                    type=type, by=by)
                        for level in levels})
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(folder / name)
    return written
