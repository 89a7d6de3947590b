"""Centred fixed effects: every Bayesian model samples the coefficients of ``X`` with its columns centred.

Notation
--------
With an intercept, the model samples ``alpha`` (``beta_centred``), the coefficients of ``X - 1 mean(X)'`` (the
intercept column and other constant columns left as they are), which decorrelates the intercept from the slopes.
The reported fixed effects are the uncentred ones: ``beta = alpha`` except the intercept,
``beta_0 = alpha_0 - sum_j alpha_j mean(x_j)``. Without an intercept nothing is centred.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytensor.tensor as pt

from hierlmm.design.design import Design


def centring(design: Design) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The centred ``X``, the column means that were removed (0 for constant columns) and the intercept's column."""
    X = design.X  # the chapter's X
    constant = np.all(X == X[:1], axis=0)
    intercept = next((j for j in range(design.p) if design.fixef_names[j] == "(Intercept)"), None)
    mean = np.where(constant, 0.0, X.mean(axis=0)) if intercept is not None else np.zeros(design.p)
    return X - mean, mean, intercept


def uncentred(beta_centred: Any, x_mean: np.ndarray, intercept: int | None) -> Any:
    """The reported ``beta`` as a PyTensor expression of the sampled ``beta_centred`` (module notation)."""
    if intercept is None:
        return beta_centred
    return beta_centred - np.eye(x_mean.size)[intercept] * pt.dot(beta_centred, x_mean)


class CentredFixedEffects:
    """``from_centred`` and ``to_centred`` for a model that holds ``x_mean`` and ``intercept`` (module notation)."""

    x_mean: np.ndarray
    intercept: int | None

    def from_centred(self, beta_centred: np.ndarray) -> np.ndarray:
        """Fixed effects of the centred design -> the reported ones: ``beta_0 = alpha_0 - alpha'mean(x)``."""
        out = np.array(beta_centred, dtype=float)
        if self.intercept is not None:
            out[..., self.intercept] -= out @ self.x_mean
        return out

    def to_centred(self, beta: np.ndarray) -> np.ndarray:
        """Reported fixed effects -> those of the centred design (only the intercept changes)."""
        out = np.array(beta, dtype=float)
        if self.intercept is not None:
            out[..., self.intercept] += out @ self.x_mean
        return out
