"""Comparing simulated proportions (p-values, tail fractions) with R's, within Monte Carlo error."""

from __future__ import annotations

import numpy as np

Z_LIMIT = 4.5  # two-sided z at 4.5 combined SDs: a false failure about once in 150,000 comparisons


def within_monte_carlo(p_ours: float, n_ours: int, p_r: float, n_r: int, z_limit: float = Z_LIMIT) -> bool:
    """Whether two proportions simulated independently (``n_ours`` and ``n_r`` draws) agree: a two-sample z-test
    with the pooled proportion's variance, ``|p_ours - p_r| < z_limit sd``."""
    pooled = (p_ours * n_ours + p_r * n_r) / (n_ours + n_r)
    sd = np.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_ours + 1 / n_r))
    return bool(abs(p_ours - p_r) < z_limit * sd)
