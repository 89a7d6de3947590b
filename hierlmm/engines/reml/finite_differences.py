"""Central finite differences of a scalar function, for the engines whose likelihood has no analytic gradient
(the marginal model, serial correlation, crossed factors): convergence checks, Newton polishing and nlme-style
Hessian-based intervals; and the Hessian of a function with an analytic gradient (the nested REML engine's checks);
and the one rule every engine uses to call such a Hessian positive definite.

Written by hand: SciPy offers ``approx_fprime`` (one-sided) but no Hessian of function values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def central_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """``(f(x + h e_j) - f(x - h e_j)) / 2h`` for every coordinate ``j``."""
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(x.size)])


def central_hessian(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Hessian by central differences of function values (as nlme's ``fdHess`` does)."""
    n = x.size
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            ei, ej = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h * h)
    return H


def hessian_from_gradient(f: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray) -> np.ndarray:
    """Hessian by central differences of an analytic gradient (``f`` returns ``(value, gradient)``), symmetrised;
    step ``1e-5 max(1, |x_j|)``."""
    k = x.size
    H = np.zeros((k, k))
    for j in range(k):
        h = 1e-5 * max(1.0, abs(x[j]))
        e = np.zeros(k)
        e[j] = h
        H[:, j] = (f(x + e)[1] - f(x - e)[1]) / (2 * h)
    return 0.5 * (H + H.T)


POSITIVE_DEFINITE_RTOL = 1e-9


def clearly_positive_definite(H: np.ndarray, rtol: float = POSITIVE_DEFINITE_RTOL) -> bool:
    """Whether a finite-difference Hessian is positive definite beyond rounding: finite, and its smallest
    eigenvalue above ``rtol`` times its largest absolute one.

    A variance at its boundary (e.g. a log-scale factor element of ``D`` run off to -19) leaves an eigenvalue that
    is zero up to rounding, whose sign is noise; ``eig.min() > 0`` would call that Hessian positive definite by luck.
    Every engine's convergence check (nested, crossed, serial correlation) and nlme-style interval uses this rule.
    """
    H = np.asarray(H, dtype=float)
    if H.size == 0:
        return True
    if not np.all(np.isfinite(H)):
        return False
    eig = np.linalg.eigvalsh(H)
    return bool(eig[0] > rtol * np.abs(eig).max())
