"""The numbers behind the teaching app (``notebooks/app_hierarchical_vs_marginal.py``), as plain functions.

Notation
--------
Random intercepts and slopes with ``sd_0``, ``sd_1``, correlation ``rho`` (``D = [[sd_0^2, rho sd_0 sd_1],
[rho sd_0 sd_1, sd_1^2]]``; ``|rho| > 1`` makes D indefinite), residual SD ``sigma`` and visits ``t_1..t_n``:
``V = Z D Z' + sigma^2 I`` with ``Z = [1, t]``. D is a covariance matrix iff its eigenvalues are >= 0; the marginal
model only needs V's to be > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.inference.effects import effects


@dataclass(frozen=True)
class ImpliedStructure:
    """What random intercepts and slopes imply for one subject's visits (see the module notation)."""

    times: np.ndarray
    D: np.ndarray
    V: np.ndarray

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of the visits."""
        sd = np.sqrt(np.diag(self.V))
        return self.V / np.outer(sd, sd)

    @property
    def variance(self) -> np.ndarray:
        """The variance function at the visits."""
        return np.diag(self.V).copy()

    @property
    def min_eigen_D(self) -> float:
        """Smallest eigenvalue of D (< 0: D is no covariance matrix)."""
        return float(np.linalg.eigvalsh(self.D)[0])

    @property
    def min_eigen_V(self) -> float:
        """Smallest eigenvalue of V (<= 0: not even the marginal model exists)."""
        return float(np.linalg.eigvalsh(self.V)[0])

    def verdict(self) -> str:
        """One sentence: which formulations these parameters are valid for."""
        if self.min_eigen_D >= 0:
            return "D is positive semi-definite: a hierarchical model (random effects) and its marginal model."
        if self.min_eigen_V > 0:
            return (f"D is not positive definite (smallest eigenvalue {self.min_eigen_D:.3g}), but V_i is "
                    f"(smallest eigenvalue {self.min_eigen_V:.3g}): a valid marginal model with no hierarchical one.")
        return (f"Neither: V_i is not positive definite (smallest eigenvalue {self.min_eigen_V:.3g}); "
                "no model has these parameters.")


def implied_structure(sd0: float, sd1: float, rho: float, sigma: float, n_visits: int, spacing: float
                      ) -> ImpliedStructure:
    """``D`` and ``V`` for visits at ``0, spacing, ..., (n_visits - 1) spacing``."""
    times = spacing * np.arange(n_visits, dtype=float)
    D = np.array([[sd0**2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1**2]])
    Z = np.column_stack([np.ones(n_visits), times])
    return ImpliedStructure(times, D, Z @ D @ Z.T + sigma**2 * np.eye(n_visits))


def effect_plot_grid(fit, age: float = 49.0, base_pro: float = 10.6, years: np.ndarray | None = None
                     ) -> pd.DataFrame:
    """The chapter's PBC effect plot: population mean of log serum bilirubin over 0-12 years for males and
    females at one age and baseline prothrombin, with pointwise 95% confidence bands (``year``, ``sex``, ``pred``,
    ``low``, ``upp``, as ``../shared/reference/pbc2_effect_plot.json``'s ``grid``): a thin call of
    :func:`hierlmm.inference.effects.effects`."""
    years = np.linspace(0, 12, 25) if years is None else np.asarray(years, dtype=float)
    table = effects(fit, "year", by="sex", at={"age": float(age), "basePro": float(base_pro)}, grid=years,
                    by_values=["male", "female"], ci_prob=0.95).table
    return pd.DataFrame({"year": table["year"], "sex": table["sex"], "pred": table["estimate"],
                         "low": table["lower"], "upp": table["upper"]})
