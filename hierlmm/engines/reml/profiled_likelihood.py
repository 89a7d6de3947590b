"""ML and REML estimation of the marginal model, profiled over beta and sigma (the chapter's section 3.4).

Stage 3 of the pipeline for the frequentist engine, the analogue of lme4's ``mkLmerDevfun`` + ``optimizeLmer``:
:func:`profiled_deviance` returns the objective as a function of ``theta`` alone, :func:`fit_ml` optimises it and
returns an :class:`~hierlmm.engines.reml.ml_fit.MLFit`.

Notation
--------
``V_i = Z_i D Z_i' + sigma^2 I = sigma^2 W_i`` with ``D = sigma^2 Lambda Lambda'`` (``Lambda`` block diagonal,
one relative factor per block and nested slot). With ``A_i = I + Lambda' Z_i'Z_i Lambda`` (Woodbury)::

    log|W_i| = log|A_i|,   W_i^{-1} = I - Z_i Lambda A_i^{-1} Lambda' Z_i'
    X'W^{-1}X = X'X - sum_i c_i' A_i^{-1} c_i,   c_i = Lambda' Z_i'X_i   (likewise X'W^{-1}y, y'W^{-1}y)
    beta_hat = (X'W^{-1}X)^{-1} X'W^{-1}y        (GLS), r'W^{-1}r = y'W^{-1}y - beta_hat' X'W^{-1}y

ML:   -2 l = N (1 + log(2 pi r'W^{-1}r / N)) + sum_i log|A_i|,            sigma^2 = r'W^{-1}r / N
REML: -2 l = (N-p)(1 + log(2 pi r'W^{-1}r / (N-p))) + sum_i log|A_i| + log|X'W^{-1}X|,  sigma^2 = r'W^{-1}r/(N-p)

The REML form is Harville's, as nlme's ``logLik`` reports it (checked against nlme on four reference fits).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from hierlmm.design.design import Design
from hierlmm.design.sufficient_stats import SubjectStats, subject_stats
from hierlmm.engines.reml.finite_differences import clearly_positive_definite, hessian_from_gradient
from hierlmm.errors import BoundaryWarning, ConvergenceWarning, NumericalError
from hierlmm.structures.random_effects import ThetaLayout


@dataclass(frozen=True, eq=False)
class ProfiledState:
    """Everything computed at one ``theta``: the pieces the fit result needs."""

    deviance: float
    Lambda: np.ndarray  # (Q, Q)
    A: np.ndarray  # (M, Q, Q)
    XtWX: np.ndarray
    XtWy: np.ndarray
    beta: np.ndarray
    rss: float
    sigma2: float
    logdet_A: float
    grad_Lambda: np.ndarray | None = None


def layout_for(design: Design) -> ThetaLayout:
    """The ``theta`` layout of a design's blocks (in design order)."""
    return ThetaLayout.for_blocks([b.structure for b in design.blocks], [b.q for b in design.blocks],
                                  [b.parts for b in design.blocks])


@dataclass(frozen=True, eq=False)
class LambdaMap:
    """``theta`` -> the stacked ``Lambda`` by one scatter, and the gradient back by one gather.

    ``pdSymm``/``pdDiag`` layouts scatter ``theta`` itself: ``Lambda.flat[target[j]] = theta[source[j]]`` (scales
    exponentiated on the log-Cholesky scale). Other structures (:mod:`hierlmm.structures.random_effects`) make each
    block's ``L_k`` first and scatter its lower triangle (``block_targets``); the gradient goes back through ``dL_k / d
    theta_k``.
    """

    Q: int
    target: np.ndarray
    source: np.ndarray
    diag: np.ndarray
    size: int
    layout: ThetaLayout | None = None
    block_targets: tuple[np.ndarray, ...] = ()

    @classmethod
    def build(cls, layout: ThetaLayout, stats: SubjectStats) -> LambdaMap:
        """Precompute the scatter indices of a layout on a subject layout."""
        targets, sources = [], []
        per_block: list[list[np.ndarray]] = [[] for _ in layout.blocks]
        for lay in stats.layouts:
            param = layout.blocks[lay.block]
            rows, cols = np.tril_indices(param.q)
            linear_rows, linear_cols = (rows, cols) if param.structure == "pdSymm" else (np.arange(param.q),) * 2
            for slot in range(lay.n_slots):
                o = lay.offset + slot * lay.q
                per_block[lay.block].append((o + rows) * stats.Q + (o + cols))
                if layout.is_linear():
                    targets.append((o + linear_rows) * stats.Q + (o + linear_cols))
                    sources.append(param.start + np.arange(param.size))
        if layout.is_linear():
            return cls(stats.Q, np.concatenate(targets), np.concatenate(sources), layout.diagonal_mask(), layout.size)
        block_targets = tuple(np.stack(t) if t else np.zeros((0, 0), int) for t in per_block)
        return cls(stats.Q, np.zeros(0, int), np.zeros(0, int), layout.diagonal_mask(), layout.size, layout,
                   block_targets)

    def lam(self, theta: np.ndarray, log_diagonal: bool) -> np.ndarray:
        """The stacked relative factor at ``theta``."""
        out = np.zeros(self.Q * self.Q)
        if self.layout is None:
            values = np.array(theta, dtype=float)
            if log_diagonal:
                values[self.diag] = np.exp(values[self.diag])
            out[self.target] = values[self.source]
        else:
            for L, targets in zip(self.layout.factors(theta, log_diagonal), self.block_targets, strict=True):
                if targets.size:
                    out[targets] = L[np.tril_indices(L.shape[0])][None, :]
        return out.reshape(self.Q, self.Q)

    def chain(self, grad_lambda: np.ndarray, theta: np.ndarray, log_diagonal: bool) -> np.ndarray:
        """Gradient with respect to ``theta`` from the gradient with respect to ``Lambda``."""
        if self.layout is None:
            grad = np.bincount(self.source, weights=grad_lambda.ravel()[self.target], minlength=self.size)
            if log_diagonal:
                grad[self.diag] *= np.exp(theta[self.diag])
            return grad
        grad = np.zeros(self.size)
        flat = grad_lambda.ravel()
        for param, (_, J), targets in zip(self.layout.blocks, self.layout.factors_and_jacobians(theta, log_diagonal),
                                          self.block_targets, strict=True):
            if targets.size:
                rows, cols = np.tril_indices(param.q)
                grad[param.start:param.start + param.size] = J[:, rows, cols] @ flat[targets].sum(axis=0)
        return grad


def small_inverse(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses and log-determinants of a batch of small SPD matrices (closed form for 1x1 and 2x2).

    Written out by hand because LAPACK's per-matrix overhead dominates for hundreds of 2x2 matrices.
    """
    Q = A.shape[-1]
    if Q == 1:
        if np.any(A[:, 0, 0] <= 0):
            raise np.linalg.LinAlgError("not positive definite")
        return 1.0 / A, np.log(A[:, 0, 0])
    if Q == 2:
        a, b, d = A[:, 0, 0], A[:, 0, 1], A[:, 1, 1]
        det = a * d - b * b
        if np.any(det <= 0) or np.any(a <= 0):
            raise np.linalg.LinAlgError("not positive definite")
        inv = np.stack([np.stack([d, -b], -1), np.stack([-b, a], -1)], -2) / det[:, None, None]
        return inv, np.log(det)
    chol = np.linalg.cholesky(A)
    logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    return np.linalg.inv(A), logdet


def evaluate(stats: SubjectStats, Lam: np.ndarray, reml: bool, gradient: bool = False) -> ProfiledState:
    """Profiled deviance (-2 log-likelihood) and its by-products at a relative factor ``Lam``.

    With ``gradient=True`` also the derivative of the deviance with respect to every entry of ``Lam``
    (``ProfiledState.grad_Lambda``)::

        d dev / d Lambda = 2 sum_i [ S_i Lambda (A_i^{-1} - U_i Phi U_i') + T_i Phi U_i' ]

    with ``S_i = Z_i'Z_i``, ``T_i = [Z_i'X_i, Z_i'y_i]``, ``U_i = A_i^{-1} Lambda' T_i`` and ``Phi`` the derivative of
    the profiled terms with respect to ``G = sum_i T_i' Lambda A_i^{-1} Lambda' T_i`` (see the module notation).
    """
    p = stats.XtX.shape[0]
    N = int(stats.n_per_subject.sum())
    M, Q = stats.M, stats.Q
    k = p + 1
    # Batched small products written as single 2-D BLAS calls over all subjects.
    SL = (stats.ZtZ.reshape(M * Q, Q) @ Lam).reshape(M, Q, Q)  # Z'Z Lambda
    A = (SL.transpose(0, 2, 1).reshape(M * Q, Q) @ Lam).reshape(M, Q, Q)  # (Lambda'Z'Z Lambda)' = A - I
    A[:, np.arange(Q), np.arange(Q)] += 1.0
    A_inv, logdets = small_inverse(A)
    T = stats.T  # (M, Q, p+1)
    C = (stats.T_rows @ Lam).reshape(M, k, Q).transpose(0, 2, 1)  # Lambda'T
    U = A_inv @ C if Q > 1 else A_inv * C
    G = C.reshape(M * Q, k).T @ U.reshape(M * Q, k)
    Omega = stats.XyXy - G
    XtWX = Omega[:p, :p]
    XtWy = Omega[:p, p]
    cx = np.linalg.cholesky(XtWX)
    beta = np.linalg.solve(XtWX, XtWy)
    rss = float(Omega[p, p] - XtWy @ beta)
    if not rss > 0:
        raise np.linalg.LinAlgError("non-positive residual sum of squares")
    dof = N - p if reml else N
    sigma2 = rss / dof
    logdet_A = float(logdets.sum())
    deviance = dof * (1.0 + np.log(2.0 * np.pi * sigma2)) + logdet_A
    if reml:
        deviance += 2.0 * float(np.log(np.diag(cx)).sum())
    grad = None
    if gradient:
        Omega_inv = np.linalg.inv(Omega)
        E = np.zeros_like(Omega)
        E[:p, :p] = np.linalg.inv(XtWX)
        dOmega = dof * (Omega_inv - E) + (E if reml else 0.0)
        Phi = -dOmega
        UPhi = U @ Phi  # (M, Q, p+1)
        inner = A_inv - UPhi @ np.swapaxes(U, 1, 2)
        grad = 2.0 * (
            SL.transpose(1, 0, 2).reshape(Q, M * Q) @ inner.reshape(M * Q, Q)
            + T.transpose(1, 0, 2).reshape(Q, M * k) @ UPhi.transpose(1, 0, 2).reshape(Q, M * k).T
        )
    return ProfiledState(float(deviance), Lam, A, XtWX, XtWy, beta, rss, sigma2, logdet_A, grad)


def profiled_deviance(
    design: Design, method: str = "REML", *, log_diagonal: bool = True, stats: SubjectStats | None = None
) -> tuple[Callable[[np.ndarray], tuple[float, np.ndarray]], ThetaLayout, SubjectStats]:
    """The profiled objective ``theta -> (-2 l, gradient)`` of a design (lme4's ``mkLmerDevfun``).

    Returns
    -------
    deviance, layout, stats
        ``deviance(theta)`` returns ``(inf, nan)`` where the matrices are not positive definite.
    """
    stats = stats if stats is not None else subject_stats(design)
    layout = layout_for(design)
    reml = method.upper() == "REML"
    lambda_map = LambdaMap.build(layout, stats)

    def deviance(theta: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            state = evaluate(stats, lambda_map.lam(theta, log_diagonal), reml, gradient=True)
        except np.linalg.LinAlgError:
            return np.inf, np.full(theta.shape, np.nan)
        assert state.grad_Lambda is not None
        return state.deviance, lambda_map.chain(state.grad_Lambda, theta, log_diagonal)

    return deviance, layout, stats


def starting_theta(design: Design, layout: ThetaLayout) -> np.ndarray:
    """Start with every random effect's SD equal to the residual SD divided by the RMS of its Z column."""
    factors = []
    for block in design.blocks:
        scale = np.sqrt(np.mean(block.Z**2, axis=0))
        factors.append(np.diag(1.0 / np.where(scale > 0, scale, 1.0)))
    return layout.from_factors(factors)


@dataclass(frozen=True)
class OptimizerReport:
    """What the optimiser did, and whether the convergence checks passed.

    ``scaled_gradient`` is ``max |H^{-1} g|`` at the optimum (lme4's check): the Newton step still to go, in
    ``theta`` units; the fit counts as converged when it is below 1e-4 and the Hessian is positive definite.
    """

    converged: bool
    message: str
    n_evaluations: int
    gradient_norm: float
    scaled_gradient: float
    hessian_positive_definite: bool
    boundary: tuple[str, ...]
    seconds: float


def _minimize(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, bounds: list | None = None):
    """BFGS on the unconstrained log-Cholesky scale; L-BFGS-B when some parameters are bounded (boundary fits).

    Tolerances are moderate on purpose: Newton steps with the exact gradient finish the job (see optimize_theta).
    """
    if bounds is None:
        return scipy.optimize.minimize(fun, x0, jac=True, method="BFGS", options={"gtol": 1e-5, "maxiter": 2000})
    return scipy.optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8}
    )


def optimize_theta(
    design: Design, method: str, start: np.ndarray | None = None
) -> tuple[np.ndarray, ThetaLayout, SubjectStats, OptimizerReport]:
    """Minimise the profiled deviance over ``theta`` (log-Cholesky; boundary fits on lme4's bounded scale).

    Parameters
    ----------
    design, method
        The design and ``"REML"``/``"ML"``.
    start
        Optional starting ``theta`` on the log-Cholesky scale (default: SDs scaled to the Z columns).

    Notes
    -----
    When a run ends near the boundary or with a large gradient, further starting points are tried (a flat
    likelihood near a zero variance stalls quasi-Newton methods) and the best optimum is kept. Returns ``theta``
    on the *natural* scale (diagonal not logged), so boundary estimates (0) are representable.
    """
    t0 = time.perf_counter()
    dev, layout, stats = profiled_deviance(design, method)
    diag = layout.diagonal_mask()
    evals = 0
    best = None
    starts = [starting_theta(design, layout), np.zeros(layout.size)]
    if start is not None:
        starts.insert(0, np.asarray(start, dtype=float))
    for theta0 in starts:
        res = _minimize(dev, theta0)
        evals += res.nfev
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun - 1e-9):
            best = res
        if np.isfinite(res.fun) and np.all(res.x[diag] > np.log(1e-2)) and np.max(np.abs(res.jac)) < 1e-2:
            break  # an interior optimum: the Newton polish and the checks below finish the job
    if best is None:
        raise NumericalError(
            "The likelihood could not be evaluated at any starting value.",
            given=design.spec.formula,
            fix="Check the scale of the covariates (rescale very large values) and the random-effects structure.",
        )
    natural = np.array(best.x)
    natural[diag] = np.exp(natural[diag])
    ndev, _, _ = profiled_deviance(design, method, log_diagonal=False, stats=stats)
    boundary: tuple[str, ...] = ()
    if np.any(natural[diag] < 1e-2):
        # A variance may head to 0 (log scale -> -inf): refit on lme4's bounded scale, where 0 is reachable.
        bounds = [(0.0, None) if d else (None, None) for d in diag]
        res = _minimize(ndev, natural, bounds)
        evals += res.nfev
        if res.fun <= best.fun + 1e-9:
            natural = np.array(res.x)
        natural[diag & (natural < 1e-6)] = 0.0  # L-BFGS-B stops within its tolerance of the bound
        boundary = _boundary_names(design, layout, natural)
    # Convergence check, polishing with Newton steps while they still move theta (theta is short: cheap).
    edge = layout.edge_mask(natural)  # a compound-symmetry correlation at +1 or -1/(q-1): t runs off to +-inf
    if edge.any():
        boundary = (*boundary, *_edge_names(design, layout, edge))
    free = ~(diag & (natural <= 1e-8)) & ~edge
    current, hess_pd, scaled, step, gfree = _newton_check(ndev, natural, free)
    evals += 2 + 2 * int(free.sum())
    for _ in range(5):
        if not hess_pd or scaled < 1e-8:
            break
        trial = natural.copy()
        trial[free] -= step
        if (boundary and np.any(trial[diag] < 0)) or not ndev(trial)[0] <= current + 1e-10:
            break
        natural = trial
        current, hess_pd, scaled, step, gfree = _newton_check(ndev, natural, free)
        evals += 3 + 2 * int(free.sum())
    gnorm = float(np.max(np.abs(gfree))) if gfree.size else 0.0
    converged = bool(hess_pd and scaled < 1e-4)
    if not converged:
        warnings.warn(
            f"The {method} optimisation did not pass its convergence checks (scaled gradient {scaled:.2g}, "
            f"Hessian {'positive definite' if hess_pd else 'NOT positive definite'}): estimates may be unreliable. "
            "Simplify the random-effects structure or rescale covariates.",
            ConvergenceWarning,
            stacklevel=3,
        )
    if boundary:
        warnings.warn(
            f"Estimates on the boundary of the parameter space (singular fit): {', '.join(boundary)}. "
            "ML/REML keeps D positive semi-definite here; the data are compatible with a simpler random-effects "
            "structure (or with a marginal model whose D is not positive definite).",
            BoundaryWarning,
            stacklevel=3,
        )
    report = OptimizerReport(
        converged, str(best.message), evals, gnorm, scaled, hess_pd, boundary, time.perf_counter() - t0
    )
    return natural, layout, stats, report


def _boundary_names(design: Design, layout: ThetaLayout, theta: np.ndarray) -> tuple[str, ...]:
    """What lies on the boundary: SDs estimated as 0, or a singular D (one random effect an exact linear combination
    of the others: with two effects, a correlation of +-1)."""
    out = []
    for block, L in zip(design.blocks, layout.factors(theta, log_diagonal=False), strict=True):
        sd = np.sqrt(np.diag(L @ L.T))
        zero_sd = [f"sd({block.factor}:{name})" for name, s in zip(block.effect_names, sd, strict=True) if s == 0]
        out.extend(zero_sd)
        if not zero_sd and np.any(np.diag(L) == 0):
            rank = int(np.sum(np.abs(np.diag(L)) > 0))
            out.append(f"D({block.factor}) singular (rank {rank} of {block.q}: one random effect is an exact linear "
                       "combination of the others; with two effects, a correlation of +-1)")
    return tuple(out)


def _edge_names(design: Design, layout: ThetaLayout, edge: np.ndarray) -> tuple[str, ...]:
    """Names of the compound-symmetry correlations that reached an end of their range (a singular D)."""
    out = []
    for block, param in zip(design.blocks, layout.blocks, strict=True):
        if edge[param.start:param.start + param.size].any():
            out.append(f"cor({block.factor}) at the end of its range (D singular)")
    return tuple(out)


def _newton_check(
    f: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray, free: np.ndarray
) -> tuple[float, bool, float, np.ndarray, np.ndarray]:
    """At ``x``: the objective, whether the Hessian over the free parameters is positive definite, the scaled
    gradient ``max |H^-1 g|``, the Newton step ``H^-1 g`` and ``g`` (free parameters only)."""
    value, g = f(x)
    gfree = g[free]
    if not gfree.size:
        return value, True, 0.0, gfree, gfree
    H = hessian_from_gradient(f, x)[np.ix_(free, free)]
    if not clearly_positive_definite(H):  # then H is finite and invertible
        return value, False, float("inf"), np.zeros_like(gfree), gfree
    step = np.linalg.solve(H, gfree)
    return value, True, float(np.max(np.abs(step))), step, gfree

