"""Satterthwaite's and Kenward and Roger's denominator degrees of freedom for tests of the fixed effects.

nlme gives a t or F test of the fixed effects the degrees of freedom of the grouping level where the coefficients are
estimated (:mod:`hierlmm.engines.reml.t_table`). lme4 users expect lmerTest's Satterthwaite approximation or
pbkrtest's Kenward-Roger one: both treat ``cov(beta)`` as an estimate whose variability comes from the estimated
covariance parameters ``phi`` (:mod:`hierlmm.engines.reml.covariance_parameters`). Everything here is computed
exactly from ``V(phi)`` and its derivatives, subject by subject (lmerTest differentiates numerically, which bounds how
closely the two agree: about 1e-4 relative).

Notation
--------
``Phi = (X'V^-1X)^-1`` (lme4's ``vcov``: under REML it is nlme's too; under ML it uses the ML ``sigma^2``),
``G_j = dV/dphi_j``, ``P = V^-1 - V^-1 X Phi X'V^-1``, and::

    P_j  = X'V^-1 G_j V^-1 X                    (dPhi/dphi_j = Phi P_j Phi)
    Q_jl = X'V^-1 G_j V^-1 G_l V^-1 X
    R_jl = X'V^-1 (d^2 V / dphi_j dphi_l) V^-1 X   (0 when V is linear in phi)
    I_jl = tr(P G_j P G_l)                      (twice the expected REML information)

**Satterthwaite** (lmerTest): with ``H`` the Hessian of the deviance ``-2 l(phi)`` (REML or ML, ``beta`` profiled
out, ``sigma`` free) and ``A = 2 H^-1`` the asymptotic covariance of ``phi``, a contrast ``l`` has
``df = 2 (l'Phi l)^2 / (g'A g)``, ``g_j = l'Phi P_j Phi l``. A q-row ``L``: ``L Phi L' = U diag(d) U'``, each row
``u_m'L`` its own ``nu_m``; ``E = sum nu_m / (nu_m - 2)``, ``df = 2E / (E - q)`` (2 when some ``nu_m <= 2``),
``F = sum (u_m'L beta)^2 / d_m / q``. ``H`` is exact::

    H_jl = -tr(P G_j P G_l) + tr(P dG_jl) + 2 y'P G_j P G_l P y - y'P dG_jl P y      (REML)
    H_jl = -tr(V^-1 G_j V^-1 G_l) + tr(V^-1 dG_jl) + 2 y'P G_j P G_l P y - y'P dG_jl P y   (ML)

At an interior optimum ``g'A g`` does not depend on how ``phi`` is parametrised. At a boundary (an SD estimated as
0) it does, and lmerTest's choice is ``psi = (theta, sigma)`` (:mod:`hierlmm.engines.reml.covariance_parameters`):
``H`` and ``g`` are taken there by the chain rule, ``H_psi = J H J' + sum_k d_k d^2 phi_k / dpsi^2`` and
``g_psi = J g`` with ``J = dphi/dpsi`` and ``d = d(-2 l)/dphi`` (the second term vanishes at an interior optimum).
A zero SD's row of ``J`` is 0, so it adds nothing to the denominator, as in lmerTest.

**Kenward-Roger** (pbkrtest; REML only): ``W = 2 I^-1``, the adjusted covariance
``Phi_A = Phi + 2 Phi [sum_jl W_jl (Q_jl - P_j Phi P_l - R_jl / 4)] Phi``, and for ``L`` of rank ``q``, with
``Theta = L'(L Phi L')^-1 L``, ``A1 = sum W_jl tr(Theta Phi P_j Phi) tr(Theta Phi P_l Phi)``,
``A2 = sum W_jl tr(Theta Phi P_j Phi Theta Phi P_l Phi)``::

    B = (A1 + 6 A2) / (2q),  g = ((q+1) A1 - (q+4) A2) / ((q+2) A2),  c = 3q + 2(1 - g)
    c1 = g / c,  c2 = (q - g) / c,  c3 = (q + 2 - g) / c
    rho = (1 - A2/q)^2 (1 + c1 B) / (q (1 - c2 B)^2 (1 - c3 B)),  df = 4 + (q + 2) / (q rho - 1)
    lambda = df (1 - A2/q) / (df - 2),   F = lambda (L beta)'(L Phi_A L')^-1 (L beta) / q

(``lambda = 1`` when ``df`` is within 0.01 of 2, as pbkrtest). The parametrisation is pbkrtest's (the elements of
every ``D`` and ``sigma^2``, in which ``V`` is linear); an error structure's parameters enter with their ``R_jl``
term, which pbkrtest (lme4 has no such structures) never needs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.stats

from hierlmm.engines.reml.covariance_parameters import CovarianceParameters
from hierlmm.errors import ConvergenceWarning, NotSupportedError

DDF_METHODS = ("nlme", "satterthwaite", "kenward-roger")


@dataclass(frozen=True, eq=False)
class ParameterInformation:
    """How ``cov(beta)`` and the likelihood move with the covariance parameters (module notation).

    Attributes
    ----------
    parameters
        ``V(phi)`` and the estimates ``phi``.
    method
        ``"REML"`` or ``"ML"``: which deviance ``hessian`` is of.
    beta, Phi
        GLS fixed effects and ``(X'V^-1X)^-1`` at the estimates.
    P, Q, R
        (m, p, p), (m, m, p, p) and (m, m, p, p) (``R`` None when ``V`` is linear in ``phi``).
    expected
        (m, m) ``tr(P G_j P G_l)``.
    hessian
        (m, m) the Hessian of the deviance ``-2 l(phi)``.
    gradient
        (m,) the gradient of the deviance, ``d(-2 l)/dphi``.
    """

    parameters: CovarianceParameters
    method: str
    beta: np.ndarray
    Phi: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    R: np.ndarray | None
    expected: np.ndarray
    hessian: np.ndarray
    gradient: np.ndarray

    # ---- Satterthwaite -------------------------------------------------------------------------------------------
    @cached_property
    def psi_jacobian(self) -> tuple[np.ndarray, np.ndarray]:
        """``J = dphi/dpsi`` (m_psi, m) and ``sum_k d_k d^2 phi_k / dpsi^2`` (m_psi, m_psi) at lme4's ``psi``
        (identity and 0 without one), by central differences of the polynomial map ``psi -> phi``."""
        params = self.parameters
        if params.psi is None:
            return np.eye(self.gradient.size), np.zeros((self.gradient.size, self.gradient.size))
        psi, f = params.psi, params.phi_of_psi
        k = psi.size - params.error.values.size  # theta and sigma: the rest maps to itself
        h = 1e-4 * np.maximum(np.abs(psi), 1.0)
        J = np.zeros((psi.size, self.gradient.size))
        curvature = np.zeros((psi.size, psi.size))
        for a in range(psi.size):
            if a >= k:  # an error-structure parameter: the same in both
                J[a, params.n_linear + a - k] = 1.0
                continue
            e = np.eye(psi.size)[a] * h[a]
            J[a] = (f(psi + e) - f(psi - e)) / (2 * h[a])
            for b in range(a, k):
                d = np.eye(psi.size)[b] * h[b]
                second = (f(psi + e + d) - f(psi + e - d) - f(psi - e + d) + f(psi - e - d)) / (4 * h[a] * h[b])
                curvature[a, b] = curvature[b, a] = self.gradient @ second
        return J, curvature

    @cached_property
    def cov_varpar(self) -> np.ndarray:
        """``A = 2 H_psi^-1``, the asymptotic covariance of lmerTest's ``psi`` (module notation; a pseudo-inverse
        over the positive eigenvalues, as lmerTest, which warns, as hierlmm does, of negative ones)."""
        J, curvature = self.psi_jacobian
        H = J @ self.hessian @ J.T + curvature
        values, vectors = np.linalg.eigh((H + H.T) / 2)
        scale = max(float(np.max(np.abs(values))), 1e-300)
        if np.any(values < -1e-6 * scale):
            warnings.warn("The deviance's Hessian in the covariance parameters has negative eigenvalues "
                          f"({', '.join(f'{v:.2g}' for v in values[values < -1e-6 * scale])}): the fit may not be at "
                          "a maximum, and Satterthwaite's DF are unreliable.", ConvergenceWarning, stacklevel=3)
        keep = values > 1e-8 * scale
        return 2 * (vectors[:, keep] / values[keep]) @ vectors[:, keep].T

    def satterthwaite_df(self, l: np.ndarray) -> float:
        """Satterthwaite's degrees of freedom of one contrast ``l'beta`` (module notation)."""
        Phi_l = self.Phi @ l
        g = self.psi_jacobian[0] @ np.einsum("a,mab,b->m", Phi_l, self.P, Phi_l, optimize=True)
        return float(2 * (l @ Phi_l) ** 2 / (g @ self.cov_varpar @ g))

    # ---- Kenward-Roger -------------------------------------------------------------------------------------------
    @property
    def W(self) -> np.ndarray:
        """``2 I^-1`` (the inverse expected REML information; a pseudo-inverse when it is near singular, as
        pbkrtest)."""
        values = np.linalg.eigvalsh(self.expected)
        if np.min(np.abs(values)) > 1e-10:
            return 2 * np.linalg.inv(self.expected)
        return 2 * np.linalg.pinv(self.expected)

    @property
    def Phi_adjusted(self) -> np.ndarray:
        """Kenward and Roger's adjusted covariance of ``beta``, ``Phi_A`` (module notation)."""
        W, Phi, P = self.W, self.Phi, self.P
        PPhiP = np.einsum("jab,bc,lcd->jlad", P, Phi, P, optimize=True)
        inner = self.Q - PPhiP - (0.25 * self.R if self.R is not None else 0.0)
        U = np.einsum("jl,jlab->ab", W, inner, optimize=True)
        U = (U + U.T) / 2
        return Phi + 2 * Phi @ U @ Phi

    def kenward_roger(self, L: np.ndarray) -> tuple[float, float, float]:
        """``(F, df, lambda)`` of Kenward and Roger for ``L beta = 0``, ``L`` of full row rank (module notation)."""
        q = L.shape[0]
        Phi, W = self.Phi, self.W
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        u = np.einsum("ab,bc,jcd,de->jae", Theta, Phi, self.P, Phi, optimize=True)
        traces = np.trace(u, axis1=1, axis2=2)
        A1 = float(traces @ W @ traces)
        A2 = float(np.einsum("jl,jab,lba->", W, u, u, optimize=True))
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        c = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / c, (q - g) / c, (q + 2 - g) / c
        V0, V1, V2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        ratio = 1.0 if abs(1 - A2 / q) < 1e-14 and abs(V1) < 1e-14 else (1 - A2 / q) / V1
        rho = ratio**2 * V0 / V2 / q
        df = 4 + (q + 2) / (q * rho - 1)
        scale = 1.0 if abs(df - 2) < 0.01 else df * (1 - A2 / q) / (df - 2)
        Lb = L @ self.beta
        wald = float(Lb @ np.linalg.solve(L @ self.Phi_adjusted @ L.T, Lb))
        return scale * wald / q, float(df), float(scale)


def parameter_information(parameters: CovarianceParameters, y: np.ndarray, X: np.ndarray,
                          method: str) -> ParameterInformation:
    """Compute :class:`ParameterInformation` subject batch by subject batch (module notation)."""
    m, p = parameters.values.size, X.shape[1]
    XtVX, XtVy = np.zeros((p, p)), np.zeros(p)
    P, Q, T = np.zeros((m, p, p)), np.zeros((m, m, p, p)), np.zeros((m, m))
    nonlinear = not parameters.is_linear
    R = np.zeros((m, m, p, p)) if nonlinear else None
    trace_second = np.zeros((m, m))
    trace_VG = np.zeros(m)
    pieces = []
    for batch, rows in enumerate(parameters.batches):
        G, second = parameters.derivatives(batch)
        V = np.tensordot(parameters.values[:parameters.n_linear], G[:parameters.n_linear], axes=1)
        V_inv = np.linalg.inv(V)
        Xb, yb = X[rows], y[rows]
        VX = V_inv @ Xb
        XtVX += np.einsum("knp,knr->pr", Xb, VX, optimize=True)
        XtVy += np.einsum("knp,kn->p", VX, yb, optimize=True)
        GVX = G @ VX
        P += np.einsum("knp,mknr->mpr", VX, GVX, optimize=True)
        Q += np.einsum("mknp,knl,jklr->mjpr", GVX, V_inv, GVX, optimize=True)
        H = G @ V_inv
        T += np.einsum("mkab,jkba->mj", H, H, optimize=True)
        trace_VG += np.einsum("mkaa->m", H)
        if second is not None:
            R += np.einsum("knp,mjknl,klr->mjpr", VX, second, VX, optimize=True)
            trace_second += np.einsum("kab,mjkba->mj", V_inv, second, optimize=True)
        pieces.append((rows, G, second, V_inv, VX))
    Phi = np.linalg.inv(XtVX)
    beta = Phi @ XtVy
    a, b, u_second, uGu = np.zeros((m, m)), np.zeros((m, p)), np.zeros((m, m)), np.zeros(m)
    for rows, G, second, V_inv, VX in pieces:
        u = np.einsum("kab,kb->ka", V_inv, y[rows] - X[rows] @ beta)
        w = np.einsum("mkab,kb->mka", G, u, optimize=True)
        a += np.einsum("mkn,knl,jkl->mj", w, V_inv, w, optimize=True)
        b += np.einsum("knp,mkn->mp", VX, w, optimize=True)
        uGu += np.einsum("mkn,kn->m", w, u)
        if second is not None:
            u_second += np.einsum("kn,mjknl,kl->mj", u, second, u, optimize=True)
    PhiP = np.einsum("ab,jbc->jac", Phi, P, optimize=True)
    expected = (T - 2 * np.einsum("ab,jlba->jl", Phi, Q, optimize=True)
                + np.einsum("jab,lba->jl", PhiP, PhiP, optimize=True))
    quadratic = a - b @ Phi @ b.T
    if method == "REML":
        trace_R = np.einsum("ab,jlba->jl", Phi, R, optimize=True) if R is not None else 0.0
        trace_part = -expected + trace_second - trace_R
    else:
        trace_part = -T + trace_second
    hessian = trace_part + 2 * quadratic - u_second
    hessian = (hessian + hessian.T) / 2
    gradient = trace_VG - uGu - (np.einsum("ab,jba->j", Phi, P) if method == "REML" else 0.0)
    return ParameterInformation(parameters, method, beta, Phi, P, (Q + np.swapaxes(Q, 0, 1)) / 2, R, expected,
                                hessian, gradient)


@dataclass(frozen=True)
class FTest:
    """One F test of ``L beta = 0``.

    Attributes
    ----------
    numDF, denDF, F, p
        nlme's columns.
    scale
        Kenward and Roger's ``lambda`` (1 for the other methods).
    """

    numDF: int
    denDF: float
    F: float
    p: float
    scale: float = 1.0


def full_row_rank(L: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Rows spanning the row space of ``L`` (numDF = its rank, as nlme's ``sum(svd(L)$d > 0)``)."""
    U, s, Vt = np.linalg.svd(L, full_matrices=False)
    rank = int(np.sum(s > tol * max(s[0], 1e-300))) if s.size else 0
    if rank == L.shape[0]:
        return L
    return np.diag(s[:rank]) @ Vt[:rank]


def f_test(L: np.ndarray, beta: np.ndarray, cov_beta: np.ndarray, ddf: str, *, denominator: float | None = None,
           information: ParameterInformation | None = None) -> FTest:
    """The F test of ``L beta = 0`` with the named denominator degrees of freedom.

    ``ddf="nlme"`` takes ``denominator`` (nlme's rule) and the Wald statistic with ``cov_beta``; ``"satterthwaite"``
    and ``"kenward-roger"`` take the ``information`` and use its ``Phi`` (module notation).
    """
    L = full_row_rank(np.atleast_2d(np.asarray(L, dtype=float)))
    q = L.shape[0]
    if ddf == "nlme":
        Lb = L @ beta
        F = float(Lb @ np.linalg.solve(L @ cov_beta @ L.T, Lb)) / q
        return FTest(q, float(denominator), F, float(scipy.stats.f.sf(F, q, denominator)))
    if information is None:
        raise NotSupportedError("This fit gives no covariance-parameter information.", given=ddf,
                                fix="Use ddf='nlme'.")
    if ddf == "kenward-roger":
        F, df, scale = information.kenward_roger(L)
        return FTest(q, df, F, float(scipy.stats.f.sf(F, q, df)), scale)
    Phi, beta = information.Phi, information.beta
    d, U = np.linalg.eigh(L @ Phi @ L.T)
    order = np.argsort(d)[::-1]
    d, U = d[order], U[:, order]
    rows = U.T @ L
    F = float(np.sum((rows @ beta) ** 2 / d)) / q
    nu = np.array([information.satterthwaite_df(r) for r in rows])
    if q == 1 or np.all(np.abs(np.diff(nu)) < 1e-8):
        df = float(np.mean(nu))
    elif np.any(nu <= 2):
        df = 2.0
    else:
        E = float(np.sum(nu / (nu - 2)))
        df = 2 * E / (E - q)
    return FTest(q, df, F, float(scipy.stats.f.sf(F, q, df)))
