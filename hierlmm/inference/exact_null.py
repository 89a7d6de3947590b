"""The finite-sample null distribution of the (restricted) likelihood-ratio statistic for one variance component:
Crainiceanu and Ruppert (2004), Greven et al. (2008), as R's RLRsim (``RLRTSim``, ``LRTSim``) simulates it.

Notation
--------
The model with only the tested effect is ``y = X beta + Z b + e``, ``b ~ N(0, lambda sigma^2 Sigma)``,
``e ~ N(0, sigma^2 I)``; ``n`` rows, ``p`` fixed effects, ``K`` columns of ``Z``; ``H0: lambda = 0``. With
``P0 = I - X (X'X)^-1 X'``:

- ``mu_s``: the eigenvalues of ``Sigma^1/2 Z' P0 Z Sigma^1/2`` (the squared singular values of ``P0 Z Sigma^1/2``),
- ``xi_s``: those of ``Sigma^1/2 Z'Z Sigma^1/2`` (ML only),

both divided by the largest of them (RLRsim's scaling; the grid of ``lambda`` is on that scale). With independent
``w_s^2 ~ chi2(1)`` (``s = 1..K``) and ``W ~ chi2(n - p - K)``, under ``H0``

    N(l) = sum_s l mu_s / (1 + l mu_s) w_s^2,    D(l) = sum_s w_s^2 / (1 + l mu_s) + W,
    RLRT = sup_l  (n - p) log(1 + N(l) / D(l)) - sum_s log(1 + l mu_s),
    LRT  = sup_l  n log(1 + N(l) / D(l)) - sum_s log(1 + l xi_s)  +  n log(1 + chi2(q) / (sum_s w_s^2 + W)),

the last term for ``q`` fixed effects tested at the same time (``q = 0``: none). ``Sigma = I`` for the effects
hierlmm tests this way (a single variance component). As RLRsim does, the supremum is taken on the grid
``l in {0} + exp(linspace(-10, 8, 199))`` (200 points), walking up from ``l = 0`` and stopping at the first grid
point where the profile decreases (the first local maximum; the profile is unimodal in practice). The p-value of an
observed statistic ``t`` is the fraction of simulated statistics ``>= t`` (RLRsim's ``mean(t < sample)`` but for
ties; both give 1 at ``t = 0``).

References: C. M. Crainiceanu and D. Ruppert (2004), Likelihood ratio tests in linear mixed models with one variance
component, JRSS B 66, 165-185; S. Greven, C. M. Crainiceanu, H. Kuechenhoff and A. Peters (2008), Restricted
likelihood ratio testing for zero variance components in linear mixed models, JCGS 17, 870-891.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from threadpoolctl import threadpool_limits

from hierlmm.errors import NotSupportedError

GRID_LENGTH = 200
LOG_GRID = (-10.0, 8.0)
MAX_COLUMNS = 5000  # K x K eigenproblem: beyond this the dense decomposition is too slow to offer
_CHUNK_ELEMENTS = 4_000_000  # simulations x grid points handled at once


def lambda_grid(gridlength: int = GRID_LENGTH, log_grid: tuple[float, float] = LOG_GRID) -> np.ndarray:
    """RLRsim's grid of ``lambda``: 0, then ``gridlength - 1`` points equally spaced on the log scale."""
    return np.r_[0.0, np.exp(np.linspace(log_grid[0], log_grid[1], gridlength - 1))]


def grouped_columns(columns: np.ndarray, group_index: np.ndarray, n_levels: int) -> scipy.sparse.csr_matrix:
    """``Z`` (n x n_levels q) of a random effect: each row's ``q`` columns placed at its level's position."""
    columns = np.asarray(columns, dtype=float).reshape(len(group_index), -1)
    n, q = columns.shape
    rows = np.repeat(np.arange(n), q)
    cols = (np.asarray(group_index)[:, None] * q + np.arange(q)[None, :]).ravel()
    return scipy.sparse.csr_matrix((columns.ravel(), (rows, cols)), shape=(n, n_levels * q))


@dataclass(frozen=True)
class SpectralNull:
    """What the null distribution depends on (module notation): ``mu`` (and ``xi`` for ML), ``n``, ``p``, ``q``.

    Attributes
    ----------
    mu
        (K,) scaled eigenvalues of ``Z' P0 Z``.
    xi
        (K,) scaled eigenvalues of ``Z'Z`` (ML; None for REML).
    n, p
        Rows and fixed effects of the model.
    q
        Fixed effects tested at the same time (ML only; 0 for a variance alone).
    """

    mu: np.ndarray
    xi: np.ndarray | None
    n: int
    p: int
    q: int = 0

    @property
    def reml(self) -> bool:
        """Whether this is the restricted likelihood's null (RLRT) rather than the likelihood's (LRT)."""
        return self.xi is None


def spectral_null(X: np.ndarray, Z: np.ndarray | scipy.sparse.spmatrix, *, reml: bool = True,
                  q: int = 0) -> SpectralNull:
    """``mu`` (and ``xi``) of the model ``y = X beta + Z b + e`` with one variance component (module notation).

    Parameters
    ----------
    X
        (n, p) fixed-effects design of the model.
    Z
        (n, K) design of the tested effect (dense or sparse; :func:`grouped_columns` builds it), with
        ``Sigma = I``.
    reml
        The restricted likelihood's null (RLRsim's ``RLRTSim``) or the likelihood's (``LRTSim``).
    q
        ML only: the number of fixed effects tested with the variance (``exactLRT``'s ``q``).
    """
    X = np.asarray(X, dtype=float)
    n, p = X.shape
    Zs = scipy.sparse.csr_matrix(Z)
    K = Zs.shape[1]
    if K > MAX_COLUMNS:
        raise NotSupportedError(f"The exact null needs the eigenvalues of a {K} x {K} matrix (the tested effect's "
                                f"columns); more than {MAX_COLUMNS} are not offered.", given=f"K = {K}",
                                fix="Use null='bootstrap' (or the chi-bar-square mixture, null='mixture').")
    if reml and q:
        raise NotSupportedError("The restricted likelihood's exact null tests a variance only (q = 0).", given=q,
                                fix="Test fixed effects with ML fits.")
    with threadpool_limits(1, user_api="blas"):  # see simulate_null
        Q, _ = np.linalg.qr(X)
        ZtZ = (Zs.T @ Zs).toarray()
        ZtQ = np.asarray(Zs.T @ Q)
        mu = np.clip(np.linalg.eigvalsh(ZtZ - ZtQ @ ZtQ.T)[::-1], 0.0, None)[:min(n, K)]
        xi = None if reml else np.clip(np.linalg.eigvalsh(ZtZ)[::-1], 0.0, None)[:min(n, K)]
    if not mu.max() > 1e-10 * max(np.abs(ZtZ).max(), 1e-300):  # rounding only: Z'P0Z = 0
        raise NotSupportedError("The tested effect's columns lie in the fixed effects' column space: its variance "
                                "leaves the restricted likelihood unchanged and cannot be tested this way.",
                                given=f"{K} columns", fix="Drop the matching fixed effect, or test another effect.")
    if xi is None:
        return SpectralNull(mu / mu.max(), None, n, p, 0)
    scale = max(mu.max(), xi.max())
    return SpectralNull(mu / scale, xi / scale, n, p, int(q))


def simulate_null(null: SpectralNull, nsim: int, rng: np.random.Generator | int | None = None, *,
                  gridlength: int = GRID_LENGTH, log_grid: tuple[float, float] = LOG_GRID) -> np.ndarray:
    """``nsim`` draws of the RLRT (``null.reml``) or LRT under ``H0`` (module notation), vectorised in chunks.

    Parameters
    ----------
    null
        From :func:`spectral_null`.
    nsim
        Number of draws.
    rng
        A NumPy generator or a seed.
    gridlength, log_grid
        RLRsim's grid of ``lambda`` (``gridlength``, ``log.grid.lo``, ``log.grid.hi``).

    Returns
    -------
    numpy.ndarray
        (nsim,) simulated statistics (>= 0).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    K = null.mu.size
    df_rest = max(null.n - null.p - K, 0)
    out = np.empty(nsim)
    chunk = max(1, _CHUNK_ELEMENTS // max(gridlength, K))
    # one BLAS thread: the products are small, and BLAS threads contending with other work cost up to 10x (measured)
    with threadpool_limits(1, user_api="blas"):
        for start in range(0, nsim, chunk):
            m = min(chunk, nsim - start)
            chi_rest = rng.chisquare(df_rest, m) if df_rest else np.zeros(m)
            chi1 = rng.standard_normal((m, K)) ** 2  # chi2(1), faster than rng.chisquare
            extra = rng.chisquare(null.q, m) if not null.reml and null.q else None
            out[start:start + m] = null_statistics(null, chi1, chi_rest, extra, gridlength=gridlength,
                                                   log_grid=log_grid)
    return out


def null_statistics(null: SpectralNull, chi1: np.ndarray, chi_rest: np.ndarray, extra: np.ndarray | None = None,
                    *, gridlength: int = GRID_LENGTH, log_grid: tuple[float, float] = LOG_GRID) -> np.ndarray:
    """The statistics (m,) of given variates (module notation): ``chi1`` (m, K) the ``w_s^2``, ``chi_rest`` (m,)
    ``W``, ``extra`` (m,) the ``chi2(q)`` of an ML test of fixed effects (None: ``q = 0``)."""
    lam = lambda_grid(gridlength, log_grid)
    mu = null.mu
    n0 = null.n - null.p if null.reml else null.n
    xi = mu if null.reml else null.xi
    lm = lam[:, None] * mu[None, :]  # (g, K)
    fN = (lm / (1.0 + lm)).T  # (K, g)
    fD = (1.0 / (1.0 + lm)).T
    penalty = np.log1p(lam[:, None] * xi[None, :]).sum(axis=1)  # (g,)
    N = chi1 @ fN
    D = chi1 @ fD + chi_rest[:, None]
    profile = n0 * np.log1p(N / D) - penalty[None, :]  # (m, g); 0 at lambda = 0
    down = profile[:, 1:] < profile[:, :-1]
    stop = np.where(down.any(axis=1), down.argmax(axis=1), gridlength - 1)  # the first local maximum
    stat = profile[np.arange(chi1.shape[0]), stop]
    if not null.reml and extra is not None:
        stat = stat + null.n * np.log1p(extra / (chi1.sum(axis=1) + chi_rest))
    return np.maximum(stat, 0.0)


def exact_p_value(statistic: float, simulated: Sequence[float] | np.ndarray) -> float:
    """The fraction of simulated statistics ``>= statistic`` (module notation)."""
    return float(np.mean(np.asarray(simulated) >= statistic))


__all__: Sequence[str] = ("SpectralNull", "spectral_null", "simulate_null", "null_statistics", "grouped_columns",
                          "lambda_grid", "exact_p_value")
