"""Plots for interpreting a fit (chapter 3.2, 3.4): effect plots of the population mean, and shrinkage plots of the
subjects' coefficients (partial pooling).

Each function returns a matplotlib ``Figure`` (drawing into ``ax`` when one is given) and writes nothing. The data
come from :mod:`hierlmm.inference.effects` and :mod:`hierlmm.inference.shrinkage`, whose docstrings give the
formulas.

Notation
--------
Effect plot: one line (numeric focal) or one set of points with error bars (factor focal) per ``by`` value, the
estimate ``x' beta`` of the population mean and its pointwise band; the caption states the band's meaning and the
values the other covariates are held at. Shrinkage plot: open circles are the subjects' least-squares coefficients
``theta_i_OLS`` (no pooling), filled ones their empirical-Bayes or posterior-mean ``beta_Z + b_i`` (partial pooling),
a segment joins the two, and the cross is the population ``beta_Z`` (complete pooling).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from hierlmm.errors import SpecError
from hierlmm.inference.effects import Effects
from hierlmm.inference.shrinkage import Shrinkage, shrinkage


def _wrap(text: str, width: int = 95) -> str:
    return "\n".join(textwrap.wrap(text, width))


def effect_plot(effects: Effects, ax: Any = None):
    """Draw an effect plot (module notation) from :func:`hierlmm.effects`.

    Parameters
    ----------
    effects
        The result of :func:`hierlmm.inference.effects.effects`.
    ax
        A matplotlib axes to draw into (default: a new figure).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    if not isinstance(effects, Effects):
        raise SpecError("effect_plot draws the result of hierlmm.effects.", given=type(effects).__name__,
                        fix="Call hierlmm.effect_plot(hierlmm.effects(fit, focal=...)).")
    own = ax is None
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.8))
    table = effects.table
    groups = [(None, table)] if effects.by is None else list(table.groupby(effects.by, sort=False))
    if effects.focal_kind == "factor":
        labels = list(dict.fromkeys(table[effects.focal]))
        position = {label: k for k, label in enumerate(labels)}
        width = 0.6 / max(len(groups), 1)
        for k, (value, rows) in enumerate(groups):
            x = np.array([position[v] for v in rows[effects.focal]]) + (k - (len(groups) - 1) / 2) * width
            est = rows["estimate"].to_numpy()
            err = np.vstack([est - rows["lower"].to_numpy(), rows["upper"].to_numpy() - est])
            ax.errorbar(x, est, yerr=err, fmt="o", capsize=4, color=f"C{k % 10}",
                        label=None if value is None else f"{effects.by} = {_label(value)}")
        ax.set_xticks(range(len(labels)), [str(v) for v in labels])
    else:
        for k, (value, rows) in enumerate(groups):
            rows = rows.sort_values(effects.focal)
            x = rows[effects.focal].to_numpy(dtype=float)
            ax.fill_between(x, rows["lower"], rows["upper"], color=f"C{k % 10}", alpha=0.2, lw=0)
            ax.plot(x, rows["estimate"], color=f"C{k % 10}", lw=2,
                    label=None if value is None else f"{effects.by} = {_label(value)}")
    ax.set(xlabel=effects.focal, ylabel=f"{effects.response} (population mean)")
    ax.set_title(f"Effect of {effects.focal}" + (f" by {effects.by}" if effects.by else "") + "\n"
                 + _wrap(effects.caption), fontsize=8, loc="left")
    if effects.by is not None:
        ax.legend(loc="best", fontsize=8)
    if own:
        fig.tight_layout()
    return fig


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def shrinkage_plot(fit: Any, block: str | int | None = None, effects: Sequence[str] | None = None, ax: Any = None):
    """Draw the partial pooling of one grouping factor (module notation).

    Parameters
    ----------
    fit
        An ML/REML or Bayesian fit of the hierarchical model, or the result of :func:`hierlmm.shrinkage`.
    block
        The grouping factor (name or position), needed when the fit has several; not with a shrinkage result,
        which has its factor already.
    effects
        One or two random effects to draw (default: the first two, or the only one): two give a scatter of the
        coefficient pairs, one a two-row picture (least squares above, pooled below).
    ax
        A matplotlib axes to draw into (default: a new figure).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    if isinstance(fit, Shrinkage):
        if block is not None:
            raise SpecError("block chooses the grouping factor of a fit; a shrinkage result has one already.",
                            given=block, fix="Leave block out, or pass the fit instead of hierlmm.shrinkage(fit).")
        result = fit
    else:
        result = shrinkage(fit, block)
    names = list(result.effect_names[:2]) if effects is None else (
        [effects] if isinstance(effects, str) else list(effects))
    unknown = [name for name in names if name not in result.effect_names]
    if not names or len(names) > 2 or unknown:
        raise SpecError("effects must name one or two random effects of the factor.", given=effects,
                        fix=f"Use one or two of {list(result.effect_names)}.")
    own = ax is None
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 5))
    ols, eb, pop = result.ols[names].to_numpy(), result.eb[names].to_numpy(), result.population[names].to_numpy()
    has_ols = np.isfinite(ols).all(axis=1)
    if len(names) == 2:
        for o, e in zip(ols[has_ols], eb[has_ols], strict=True):
            ax.plot([o[0], e[0]], [o[1], e[1]], color="grey", lw=0.6, alpha=0.6)
        ax.scatter(ols[has_ols, 0], ols[has_ols, 1], s=16, facecolors="none", edgecolors="C0",
                   label="least squares (no pooling)")
        ax.scatter(eb[:, 0], eb[:, 1], s=12, color="C3", label=_pooled(result))
        ax.scatter([pop[0]], [pop[1]], marker="X", s=120, color="k", zorder=5, label="population beta_Z")
        _limits(ax, ols[has_ols], eb)
        ax.set(xlabel=names[0], ylabel=names[1])
    else:
        for o, e in zip(ols[has_ols, 0], eb[has_ols, 0], strict=True):
            ax.plot([o, e], [1, 0], color="grey", lw=0.6, alpha=0.6)
        ax.scatter(ols[has_ols, 0], np.ones(int(has_ols.sum())), s=16, facecolors="none", edgecolors="C0",
                   label="least squares (no pooling)")
        ax.scatter(eb[:, 0], np.zeros(len(eb)), s=12, color="C3", label=_pooled(result))
        ax.axvline(pop[0], color="k", ls="--", lw=1, label="population beta_Z")
        ax.set_yticks([0, 1], ["pooled", "own fit"])
        _limits(ax, ols[has_ols], eb, axes="x")
        ax.set(xlabel=names[0])
    ax.set_title(f"Shrinkage of the {result.factor} coefficients\n" + _wrap(result.caption), fontsize=8, loc="left")
    ax.legend(loc="best", fontsize=8)
    if own:
        fig.tight_layout()
    return fig


def _pooled(result: Shrinkage) -> str:
    return ("posterior mean" if result.engine == "NUTS" else "empirical Bayes") + " (partial pooling)"


def _limits(ax: Any, ols: np.ndarray, eb: np.ndarray, axes: str = "xy") -> None:
    """Axis limits covering every pooled estimate and the central 98% of the least-squares ones (a subject with
    two rows can have an extreme slope that would flatten the picture; its segment then leaves the axes)."""
    for j, which in enumerate(axes):
        values = eb[:, j]
        if ols.shape[0]:
            values = np.concatenate([values, np.quantile(ols[:, j], [0.01, 0.99])])
        low, high = float(np.min(values)), float(np.max(values))
        pad = 0.05 * (high - low or 1.0)
        (ax.set_xlim if which == "x" else ax.set_ylim)(low - pad, high + pad)
