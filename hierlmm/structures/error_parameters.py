"""The parameters of the within-subject error model, and the error covariance ``sigma^2 S R S`` they give.

Both engines read it: a REML/ML fit has one value of each parameter (``S = 1``), a Bayesian fit one per posterior
draw. :mod:`hierlmm.inference.error_covariance` evaluates it for a fit on its training rows or on new rows.

Notation
--------
For rows ``r`` and ``s`` of a subject, ``E[r, s] = sigma^2 s_r s_s R[r, s]`` with ``s_r = exp(m_r' omega)`` the SD
ratio of a variance function (:mod:`hierlmm.structures.variance_functions`, ``s = 1`` without one) and ``R`` the
correlation structure (:mod:`hierlmm.structures.serial_correlation`, ``R = I`` without one).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierlmm.structures.serial_correlation import CorrelationStructure, correlation_matrix


@dataclass(frozen=True, eq=False)
class ErrorParameters:
    """The error model's parameters, per draw (S = 1 for an ML/REML fit).

    Attributes
    ----------
    structure
        The correlation structure (None: ``R = I``).
    n_max
        The largest subject size of the fit (corCompSymm's bound on ``rho``).
    sigma
        (S,) the residual SD ``sigma`` of the module notation (nlme's).
    omega
        (S, k) the variance function's parameters (``log s = M omega``), None without one.
    unconstrained
        (n_corr,) the correlation parameters on the unconstrained scale of an ML/REML fit (None for draws).
    free
        The free correlation variables of a Bayesian fit (``range``, ``phi01``, ``rho01``, ``nugget``), (S,) each.
    variance
        The bound variance function (what evaluates ``M`` on new rows), None without one or for a bare ``M``.
    """

    structure: CorrelationStructure | None
    n_max: int
    sigma: np.ndarray
    omega: np.ndarray | None
    unconstrained: np.ndarray | None = None
    free: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    variance: Any = None

    @property
    def is_independent(self) -> bool:
        """Errors of one variance, independent: ``E = sigma^2 I``."""
        return self.structure is None and self.omega is None

    def draws(self, index: slice) -> ErrorParameters:
        """The parameters of some draws (a chunk)."""
        if self.unconstrained is not None:
            return self
        return dataclasses.replace(self, sigma=self.sigma[index], free={k: v[index] for k, v in self.free.items()},
                                   omega=None if self.omega is None else self.omega[index])

    def sd_ratios(self, M: np.ndarray | None) -> np.ndarray:
        """``s = exp(M omega)``: (S, ..., n) for ``M`` (..., n, k); ones (1, ..., n) without a variance function."""
        if self.omega is None or M is None:
            return np.ones((1, *(() if M is None else M.shape[:-1])))
        return np.exp(np.einsum("...nm,sm->s...n", M, self.omega))

    def matrices(self, d: np.ndarray, M: np.ndarray | None, same: np.ndarray | None = None) -> np.ndarray:
        """``E`` (S, ..., n, n) (module notation) for distances ``d`` (..., n, n), ``M`` rows (..., n, k) or None,
        and ``same`` (n, n) whether two rows share a subject (None: they all do)."""
        n = d.shape[-1]
        ones = (1,) * d.ndim
        if self.structure is None:
            R = np.eye(n)
        elif self.unconstrained is not None:
            R = self.structure.from_distances(self.unconstrained, d, self.n_max)[None]
        else:
            free = {k: v.reshape(-1, *ones) for k, v in self.free.items()}
            R = correlation_matrix(self.structure, free, d[None], n, self.n_max, np)
        if same is not None:
            R = np.where(same, R, 0.0)
        s = self.sd_ratios(M) if M is not None else np.ones((1, *d.shape[:-1]))
        E = (self.sigma**2).reshape(-1, *ones) * s[..., :, None] * R * s[..., None, :]
        return np.broadcast_to(E, (self.sigma.size, *d.shape))
