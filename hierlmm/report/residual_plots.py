"""Plots of a fit's residual structure (chapter 3.11): the semi-variogram, as nlme's ``plot(Variogram(fit))``.

Every function returns a matplotlib ``Figure`` and writes nothing.

Notation
--------
The points are a table of :func:`hierlmm.inference.variogram.variogram` (``variog`` against ``dist``). The smooth line
is a local linear fit with tricube weights on the nearest ``span`` fraction of the points, evaluated on 50 distances
(loess of degree 1 without loess's robustness iterations; lattice's ``panel.loess`` that nlme draws with
``span = 0.6`` is of this kind). The model curve is a table of :func:`hierlmm.inference.variogram.model_variogram`.
As nlme does, the smooth is drawn by default only without a model curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hierlmm.errors import DataError


def local_linear(x: np.ndarray, y: np.ndarray, span: float = 0.6, n_grid: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """The smooth of the module notation: (grid, fitted values) on ``n_grid`` equally spaced ``x``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not 0 < span <= 1:
        raise DataError("span must be in (0, 1].", given=span, fix="Use e.g. span=0.6 (nlme's).")
    grid = np.linspace(x.min(), x.max(), n_grid)
    k = min(x.size, max(2, int(np.ceil(span * x.size))))
    fitted = np.empty(n_grid)
    for j, g in enumerate(grid):
        distance = np.abs(x - g)
        near = np.argsort(distance, kind="stable")[:k]
        h = max(distance[near].max(), 1e-12) * 1.0000001
        w = (1 - (distance[near] / h) ** 3) ** 3
        A = np.column_stack([np.ones(k), x[near] - g]) * np.sqrt(w)[:, None]
        coef = np.linalg.lstsq(A, y[near] * np.sqrt(w), rcond=None)[0]
        fitted[j] = coef[0]
    return grid, fitted


def variogram_plot(table: pd.DataFrame, model: pd.DataFrame | None = None, *, smooth: bool | None = None,
                   span: float = 0.6, ax: Any = None):
    """nlme's ``plot(Variogram(fit))``: the semi-variogram's points, a smooth line (module notation) and the model
    semi-variogram of a serial-correlation fit.

    Parameters
    ----------
    table
        :func:`hierlmm.inference.variogram.variogram`'s table (``variog``, ``dist``).
    model
        :func:`hierlmm.inference.variogram.model_variogram`'s table, drawn as a line; None for none.
    smooth
        Draw the smooth line; None: only without a model curve (nlme's default).
    span
        The smooth's fraction of points (nlme's 0.6).
    ax
        A matplotlib axis to draw in; None for a new figure.
    """
    import matplotlib.pyplot as plt  # lazy: matplotlib: ~0.5 s to import, needed only to draw

    for name, frame in (("table", table), ("model", model)):
        if frame is not None and not {"variog", "dist"} <= set(frame.columns):
            raise DataError(f"{name} needs the columns variog and dist.", given=list(frame.columns),
                            fix="Pass hierlmm.inference.variogram.variogram(...) (and model_variogram(...)).")
    smooth = model is None if smooth is None else smooth
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 4))
    x, y = table["dist"].to_numpy(dtype=float), table["variog"].to_numpy(dtype=float)
    ax.scatter(x, y, s=14, color="C0", label="semi-variogram")
    if model is not None:
        ax.plot(model["dist"], model["variog"], color="C1", lw=2, label="model")
    if smooth and x.size >= 2:
        grid, fitted = local_linear(x, y, span)
        ax.plot(grid, fitted, color="C3", lw=1.5, label="smooth")
    top = max(float(np.max(y)), float(np.max(model["variog"])) if model is not None else 0.0)
    # from 0, as nlme draws it; on a shared axis (ax given), never below what other panels already show
    current = ax.get_ylim()[1] if ax.has_data() and len(ax.collections) > 1 else 0.0
    ax.set(xlabel="Distance", ylabel="Semivariogram", ylim=(0, max(1.04 * top if top > 0 else 1.0, current)))
    ax.legend(loc="lower right")
    return fig
