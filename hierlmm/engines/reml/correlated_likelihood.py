"""The profiled REML/ML log-likelihood of the dense engine (serially correlated and/or heteroscedastic errors) and
its gradient in ``theta`` (no finite differences).

Notation
--------
``Delta = D / sigma^2 = Lambda Lambda'`` (log-Cholesky), ``W_i = Z_i Delta Z_i' + T_i``, ``T_i = S_i R_i(u) S_i`` with
``u`` the correlation parameters on the unconstrained scale (:mod:`hierlmm.structures.serial_correlation`; ``R_i = I``
without a structure) and ``S_i = diag(exp(M_i omega))`` the SD ratios of a variance function
(:mod:`hierlmm.structures.variance_functions`; ``S_i = I`` without one); ``theta = (log-Cholesky of Lambda, u,
omega)``. Profiled over ``beta`` and ``sigma^2``:

- ML: ``sigma^2 = r'W^-1r / N``, ``l = -N/2 (log 2 pi sigma^2 + 1) - 1/2 sum_i log|W_i|``;
- REML: ``sigma^2 = r'W^-1r / (N - p)``, ``l = -(N-p)/2 (log 2 pi sigma^2 + 1) - 1/2 sum log|W_i| - 1/2 log|X'W^-1X|``.

The gradient: with ``C = sum_i X_i' W_i^-1 X_i`` and ``a_i = W_i^-1 (y_i - X_i beta_hat)`` (so that
``sigma^2 = sum_i r_i' a_i / dof``), at the GLS ``beta_hat`` the derivative
of the profiled log-likelihood along any ``dW`` is ``1/2 sum_i tr(A_i dW_i)`` with

``A_i = a_i a_i' / sigma^2 - W_i^-1 + [REML] W_i^-1 X_i C^-1 X_i' W_i^-1``,

so that ``dl/dLambda = sum_i Z_i' A_i Z_i Lambda``, ``dl/domega_k = sum_ij M_ijk (A_i T_i)_jj`` and
``dl/du = 1/2 sum_i sum(A_i * S_i dR_i/du S_i)``. ``dR/du`` is a central difference of the closed-form elementwise
correlation (hand-written: SciPy has no derivative of these functions; the error is ~1e-10 relative).
"""

from __future__ import annotations

import numpy as np

from hierlmm.design.design import Design
from hierlmm.design.subject_batches import SubjectBatches
from hierlmm.engines.reml.profiled_likelihood import layout_for
from hierlmm.structures.serial_correlation import CorrelationStructure
from hierlmm.structures.variance_functions import BoundVarianceFunction


def profile(design: Design, batches: SubjectBatches, structure: CorrelationStructure | None, theta: np.ndarray,
            reml: bool, variance: BoundVarianceFunction | None = None) -> tuple[float, np.ndarray, float, np.ndarray]:
    """(log-likelihood, beta, sigma^2, X'W^-1X) at ``theta`` = (log-Cholesky of Lambda, correlation params,
    variance-function params)."""
    block = design.blocks[0]
    Lam = factor_of(theta, design)
    delta = Lam @ Lam.T
    u, omega = split_theta(theta, design, structure)
    log_s = variance.M @ omega if variance is not None else np.zeros(design.n_obs)
    p = design.p
    XtWX, XtWy, ytWy, logdet = np.zeros((p, p)), np.zeros(p), 0.0, 0.0
    for idx, d in zip(batches.rows, batches.distances, strict=True):
        Z, X, y = block.Z[idx], design.X[idx], design.y[idx]  # (k, n, q), (k, n, p), (k, n)
        s = np.exp(log_s[idx])  # (k, n) SD ratios
        if structure is None:
            R_s = s[..., None] ** 2 * np.eye(idx.shape[1])
        else:
            R_s = s[..., :, None] * structure.from_distances(u, d, batches.n_max) * s[..., None, :]
        W = Z @ delta @ np.swapaxes(Z, -1, -2) + R_s
        C = np.linalg.cholesky(W)
        logdet += 2 * np.log(np.diagonal(C, axis1=-2, axis2=-1)).sum()
        A = np.linalg.solve(C, np.concatenate([X, y[..., None]], axis=-1))  # C^-1 [X y]
        G = np.einsum("kna,knb->ab", A, A)
        XtWX += G[:p, :p]
        XtWy += G[:p, p]
        ytWy += G[p, p]
    beta = np.linalg.solve(XtWX, XtWy)
    rWr = ytWy - beta @ XtWy
    N = design.n_obs
    dof = N - p if reml else N
    sigma2 = rWr / dof
    loglik = -0.5 * dof * (np.log(2 * np.pi * sigma2) + 1) - 0.5 * logdet
    if reml:
        loglik -= 0.5 * np.linalg.slogdet(XtWX)[1]
    return float(loglik), beta, float(sigma2), XtWX



def profile_and_gradient(design: Design, batches: SubjectBatches, structure: CorrelationStructure | None,
                         theta: np.ndarray, reml: bool, variance: BoundVarianceFunction | None = None,
                         ) -> tuple[float, np.ndarray]:
    """(profiled log-likelihood, its gradient in ``theta``) at ``theta`` (see the module notation)."""
    block = design.blocks[0]
    q, p, N = block.q, design.p, design.n_obs
    layout = layout_for(design)  # the block's structure of D (hierlmm.structures.random_effects)
    Lam, J = layout.factors_and_jacobians(theta[: layout.size])[0]
    n_corr = structure.n_params if structure is not None else 0
    u, omega = theta[layout.size: layout.size + n_corr], theta[layout.size + n_corr:]
    log_s = variance.M @ omega if variance is not None else np.zeros(N)
    delta = Lam @ Lam.T
    parts, C, Xty, yty, logdet = [], np.zeros((p, p)), np.zeros(p), 0.0, 0.0
    for idx, d in zip(batches.rows, batches.distances, strict=True):
        Z, X, y = block.Z[idx], design.X[idx], design.y[idx]
        s = np.exp(log_s[idx])
        R = structure.from_distances(u, d, batches.n_max) if structure is not None else np.eye(idx.shape[1])
        T = s[..., :, None] * R * s[..., None, :]
        W = Z @ delta @ np.swapaxes(Z, -1, -2) + T
        L = np.linalg.cholesky(W)  # (LinAlgError if not PD)
        logdet += 2 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum()
        Linv = np.linalg.inv(L)  # W^-1 = L^-T L^-1: as accurate as profile()'s triangular solves
        Winv = np.swapaxes(Linv, -1, -2) @ Linv
        WX, Wy = Winv @ X, np.einsum("kab,kb->ka", Winv, y)
        C += np.einsum("kna,knb->ab", X, WX)
        Xty += np.einsum("kna,kn->a", X, Wy)
        yty += np.einsum("kn,kn->", y, Wy)
        parts.append((idx, d, Z, s, T, Winv, WX, Wy))
    beta = np.linalg.solve(C, Xty)
    dof = N - p if reml else N
    sigma2 = (yty - beta @ Xty) / dof
    loglik = -0.5 * dof * (np.log(2 * np.pi * sigma2) + 1) - 0.5 * logdet
    if reml:
        loglik -= 0.5 * np.linalg.slogdet(C)[1]
    Cinv = np.linalg.inv(C)
    g_lam, g_u, g_omega = np.zeros((q, q)), np.zeros(n_corr), np.zeros(omega.size)
    for idx, d, Z, s, T, Winv, WX, Wy in parts:
        a = Wy - WX @ beta
        A = a[..., :, None] * a[..., None, :] / sigma2 - Winv
        if reml:
            A = A + WX @ Cinv @ np.swapaxes(WX, -1, -2)
        g_lam += np.einsum("kna,knm,kmb->ab", Z, A, Z) @ Lam
        if variance is not None:
            g_omega += np.einsum("knj,kn->j", variance.M[idx], (A * T).sum(axis=-1))
        for m in range(n_corr):
            h = np.zeros(n_corr)
            h[m] = 1e-6
            dR = (structure.from_distances(u + h, d, batches.n_max)
                  - structure.from_distances(u - h, d, batches.n_max)) / 2e-6
            g_u[m] += 0.5 * np.sum(A * s[..., :, None] * dR * s[..., None, :])
    g_theta = np.einsum("kab,ab->k", J, g_lam)  # through dL / d theta, whatever the structure
    return float(loglik), np.concatenate([g_theta, g_u, g_omega])


def factor_of(theta: np.ndarray, design: Design) -> np.ndarray:
    """``Lambda`` from the leading part of ``theta`` (log-Cholesky, or as the block's structure says)."""
    layout = layout_for(design)
    return layout.factors(theta[: layout.size])[0]


def split_theta(theta: np.ndarray, design: Design, structure: CorrelationStructure | None,
           ) -> tuple[np.ndarray, np.ndarray]:
    """The correlation (``u``) and variance-function (``omega``) parts of ``theta``."""
    k = layout_for(design).size
    n_corr = structure.n_params if structure is not None else 0
    return theta[k:k + n_corr], theta[k + n_corr:]
