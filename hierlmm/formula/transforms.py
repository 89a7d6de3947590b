"""Stateful basis transforms for model formulas: R's ``ns()``, ``bs()`` and ``poly()``.

A stateful transform is *fitted* once on the training data (knots at training quantiles, boundary knots at
the training range, the recurrence coefficients of orthogonal polynomials) and then *evaluated* on any data
with those stored parameters. This is what R does through ``makepredictcall`` and ``predict(basis, newx)``,
so predictions on new data use the training knots, never knots recomputed from the new data.

The numbers agree with R 4.2 (``splines::ns``, ``splines::bs``, ``stats::poly``) to rounding error; see
``tests/fixtures/make_transforms_reference.R``. Two deliberate differences: where R only *warns* that
``df`` is too small, or silently builds a degenerate basis because tied values put an interior knot on a
boundary knot, these classes raise :class:`~hierlmm.errors.FormulaError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from scipy.interpolate import BSpline as _ScipyBSpline

from hierlmm.errors import FormulaError
from hierlmm.formula.transform_arguments import as_bool, as_int, bind_arguments, knot_vector, numeric_vector

__all__ = ["STATEFUL_TRANSFORMS", "BSpline", "NaturalSpline", "OrthogonalPolynomial", "StatefulTransform"]

_BOUNDARY_ALIASES = {"boundary_knots": "Boundary_knots", "Boundary.knots": "Boundary_knots"}


@runtime_checkable
class StatefulTransform(Protocol):
    """What the formula evaluator needs from a stateful transform such as ``ns(x, 2)``."""

    name: ClassVar[str]

    @classmethod
    def fit(cls, x: np.ndarray, *args: Any, **kwargs: Any) -> StatefulTransform:
        """Learn the parameters from training data ``x``; ``args``/``kwargs`` are R's arguments."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the basis at ``x`` with the stored parameters; returns an ``(n, k)`` float array."""

    @property
    def column_suffixes(self) -> tuple[str, ...]:
        """R's column names of the basis, e.g. ``("1", "2")`` for ``ns(x, 2)``."""


def _fit_spline(fun: str, x: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                ) -> tuple[tuple[float, ...], tuple[float, float], int, bool]:
    """Knots, boundary knots, degree and intercept exactly as R's ``ns``/``bs`` choose them."""
    names = ("df", "knots") + (() if fun == "ns" else ("degree",)) + ("intercept", "Boundary_knots")
    a = bind_arguments(fun, names, (), _BOUNDARY_ALIASES, args, kwargs)
    x = numeric_vector(x, fun, fitting=True)
    degree = 3 if fun == "ns" else as_int(a.get("degree", 3), "degree", fun, 1)
    intercept = as_bool(a.get("intercept", False), "intercept", fun)
    knots, boundary, n_interior = a.get("knots"), a.get("Boundary_knots"), 0
    if a.get("df") is not None and knots is None:
        # R: ns has df - 1 - intercept interior knots, bs has df - (degree + 1) + (1 - intercept).
        n_min = (1 if fun == "ns" else degree) + intercept
        n_interior = as_int(a["df"], "df", fun, n_min) - n_min
    if boundary is None:
        if np.unique(x).size < 2:
            raise FormulaError(f"{fun}() needs at least 2 distinct values of x to place its boundary knots.",
                               given=f"x has the single value {float(x[0])}" if x.size else "x is empty",
                               fix="Use a variable that varies, or give Boundary_knots= explicitly.")
        lo, hi = float(x.min()), float(x.max())
    else:
        b = knot_vector(boundary, fun, "Boundary_knots")
        if b.size != 2:
            raise FormulaError(f"{fun}(): Boundary_knots must have exactly 2 values.", given=b.tolist(),
                               fix="Pass Boundary_knots=(lower, upper).")
        lo, hi = float(b[0]), float(b[1])
    if knots is not None or not n_interior:
        chosen = () if knots is None else tuple(knot_vector(knots, fun, "knots"))
        return chosen, (lo, hi), degree, intercept
    inside = x[(x >= lo) & (x <= hi)]
    if inside.size == 0:
        raise FormulaError(f"{fun}(): no value of x lies within the boundary knots to place knots at.",
                           given=f"Boundary_knots=({lo}, {hi})", fix="Widen Boundary_knots or give knots=.")
    # R: quantile(x, seq(0, 1, length = n + 2)[-c(1, n + 2)]), type 7 = numpy's default "linear" method.
    probs = np.linspace(0.0, 1.0, n_interior + 2)[1:-1]
    return tuple(np.quantile(inside, probs)), (lo, hi), degree, intercept


def _check_knots(fun: str, knots: tuple[float, ...], boundary: tuple[float, float], order: int) -> None:
    lo, hi = boundary
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise FormulaError(f"{fun}(): the boundary knots must be two different finite numbers.",
                           given=boundary, fix="Use a variable with at least 2 distinct values.")
    if any(not lo < k < hi for k in knots):  # R silently builds a degenerate basis here
        raise FormulaError(f"{fun}(): interior knots must lie strictly inside the boundary knots.",
                           given=f"knots={list(knots)}, Boundary_knots={list(boundary)}",
                           fix="Tied values at an end of x put a quantile knot on a boundary knot: use a "
                           "smaller df, or give knots= explicitly.")
    _, counts = np.unique(np.asarray(knots), return_counts=True)
    if counts.size and counts.max() > order:
        raise FormulaError(f"{fun}(): a knot is repeated more than {order} times.", given=list(knots),
                           fix="x has fewer distinct values than the basis needs: use a smaller df.")


# --- B-splines: evaluation by scipy; knot placement, extrapolation and the ns projection are R's rules,
# --- written by hand from R's splines sources (ns.R/bs.R, R 4.2) because scipy has no equivalent.
def _spline_design(aknots: np.ndarray, x: np.ndarray, order: int, nu: int = 0) -> np.ndarray:
    """R's ``splineDesign(aknots, x, order, derivs = nu)`` for ``x`` within the boundary knots.

    scipy's ``BSpline`` with an identity coefficient matrix evaluates every basis function at once. Like R it
    is right-continuous at interior knots and takes the left limit at the right boundary knot, so ``x``
    equal to the upper boundary knot gives R's row (the last basis function equals 1 there).
    """
    n_basis = len(aknots) - order
    spline = _ScipyBSpline(aknots, np.eye(n_basis), order - 1, extrapolate=False)
    return np.asarray(spline(np.asarray(x, dtype=float), nu=nu)).reshape(len(x), n_basis)


def _freeze(obj: object, **values: Any) -> None:
    for key, value in values.items():  # normalise the fields of a frozen dataclass in __post_init__
        object.__setattr__(obj, key, value)


def _with_nan_rows(x: np.ndarray, n_cols: int, evaluate: Any) -> np.ndarray:
    ok = ~np.isnan(x)  # NaN entries give NaN rows, as R's NA rows
    out = np.full((x.size, n_cols), np.nan)
    out[ok] = evaluate(x[ok])
    return out


@dataclass(frozen=True)
class NaturalSpline:
    r"""Natural cubic spline basis, R's ``splines::ns``; ``fit`` mirrors
    ``ns(x, df=None, knots=None, intercept=False, Boundary_knots=None)``.

    Parameters
    ----------
    knots
        Interior knots (R's ``attr(, "knots")``), strictly inside the boundary knots.
    boundary_knots
        ``(lower, upper)``: the training range unless given.
    intercept
        Keep the column that, together with the others, spans the constant.

    Notation
    --------
    With the knot sequence :math:`\tau` = boundary knots repeated 4 times plus the interior knots, let
    :math:`B(x)` be the row of cubic B-splines :math:`B_{j,4}(x;\tau)` (without :math:`B_1` unless
    ``intercept``), and :math:`C = [B''(\xi_L); B''(\xi_U)]` their second derivatives at the boundary knots.
    With the Householder QR :math:`C^\top = QR`, the basis is :math:`N(x) = B(x)\,Q_{[:, 3:]}` (columns
    3, 4, ... of :math:`Q`), which spans the cubic splines with :math:`f''(\xi_L) = f''(\xi_U) = 0`.
    Beyond a boundary knot :math:`\xi`, :math:`B(x) = B(\xi) + (x - \xi) B'(\xi)`, so :math:`N` is linear.
    Number of columns: ``len(knots) + 1 + intercept``; with ``df`` the ``df - 1 - intercept`` interior
    knots sit at the quantiles :math:`i/(m+1)` of x (R's type 7).
    """

    knots: tuple[float, ...]
    boundary_knots: tuple[float, float]
    intercept: bool = False
    name: ClassVar[str] = "ns"

    def __post_init__(self) -> None:
        _freeze(self, knots=tuple(sorted(float(k) for k in self.knots)), intercept=bool(self.intercept),
                boundary_knots=tuple(float(b) for b in self.boundary_knots))
        _check_knots(self.name, self.knots, self.boundary_knots, 4)

    @classmethod
    def fit(cls, x: np.ndarray, *args: Any, **kwargs: Any) -> NaturalSpline:
        """Place the knots on training data ``x`` as ``splines::ns`` does (see the class docstring)."""
        knots, boundary, _, intercept = _fit_spline("ns", x, args, kwargs)
        return cls(knots, boundary, intercept)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The basis at ``x`` (``predict(ns_object, x)`` in R): an ``(n, len(column_suffixes))`` array."""
        xv = numeric_vector(x, self.name, fitting=False)
        lo, hi = self.boundary_knots
        aknots = np.sort(np.r_[[lo] * 4, self.knots, [hi] * 4])
        first = 0 if self.intercept else 1
        const = np.vstack([_spline_design(aknots, np.array([b]), 4, nu=2) for b in (lo, hi)])[:, first:]
        # R: t(qr.qty(qr(t(const)), t(basis)))[, -(1:2)]. LAPACK's Householder reflectors equal LINPACK's
        # (dqrdc2, no pivoting for this full-rank 2-column matrix), so Q is R's Q, signs included.
        q = np.linalg.qr(const.T, mode="complete")[0][:, 2:]

        def evaluate(v: np.ndarray) -> np.ndarray:
            basis = np.zeros((v.size, aknots.size - 4))
            inside = (v >= lo) & (v <= hi)
            basis[inside] = _spline_design(aknots, v[inside], 4)
            for pivot, side in ((lo, v < lo), (hi, v > hi)):  # R: linear extrapolation beyond the boundary
                if side.any():
                    taylor = np.vstack([_spline_design(aknots, np.array([pivot]), 4, nu) for nu in (0, 1)])
                    basis[side] = np.column_stack([np.ones(side.sum()), v[side] - pivot]) @ taylor
            return basis[:, first:] @ q

        return _with_nan_rows(xv, len(self.column_suffixes), evaluate)

    @property
    def column_suffixes(self) -> tuple[str, ...]:
        """``("1", ..., str(len(knots) + 1 + intercept))``, R's column names."""
        return tuple(str(i) for i in range(1, len(self.knots) + 2 + self.intercept))


@dataclass(frozen=True)
class BSpline:
    r"""B-spline basis, R's ``splines::bs``; ``fit`` mirrors
    ``bs(x, df=None, knots=None, degree=3, intercept=False, Boundary_knots=None)``.

    Parameters
    ----------
    knots
        Interior knots, strictly inside the boundary knots.
    boundary_knots
        ``(lower, upper)``: the training range unless given.
    degree
        Polynomial degree of the pieces (3: cubic); the order is ``degree + 1``.
    intercept
        Keep the first B-spline (the columns then sum to 1 within the boundary knots).

    Notation
    --------
    With order :math:`o = d + 1` and :math:`\tau` = boundary knots repeated :math:`o` times plus the interior
    knots, the basis is :math:`B_{j,o}(x;\tau)`, :math:`j = 2, \dots` (:math:`j = 1, \dots` with
    ``intercept``). Beyond the boundary R uses the degree-:math:`d` Taylor polynomial of each B-spline at the
    pivot :math:`p = \tfrac34 \xi_L + \tfrac14 \tau_{o+1}` (left) or :math:`p = \tfrac34 \xi_U + \tfrac14 \tau_{K-o}`
    (right, :math:`K` knots): :math:`\sum_{r=0}^{d} B^{(r)}(p) (x - p)^r / r!`. With ``df`` there are ``df - o + 1 -
    intercept`` interior knots at quantiles of x; the number of columns is ``len(knots) + degree + intercept``.
    """

    knots: tuple[float, ...]
    boundary_knots: tuple[float, float]
    degree: int = 3
    intercept: bool = False
    name: ClassVar[str] = "bs"

    def __post_init__(self) -> None:
        _freeze(self, knots=tuple(sorted(float(k) for k in self.knots)), intercept=bool(self.intercept),
                boundary_knots=tuple(float(b) for b in self.boundary_knots),
                degree=as_int(self.degree, "degree", self.name, 1))
        _check_knots(self.name, self.knots, self.boundary_knots, self.degree + 1)

    @classmethod
    def fit(cls, x: np.ndarray, *args: Any, **kwargs: Any) -> BSpline:
        """Place the knots on training data ``x`` as ``splines::bs`` does (see the class docstring)."""
        return cls(*_fit_spline("bs", x, args, kwargs))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The basis at ``x`` (``predict(bs_object, x)`` in R): an ``(n, len(column_suffixes))`` array."""
        xv = numeric_vector(x, self.name, fitting=False)
        lo, hi = self.boundary_knots
        order = self.degree + 1
        aknots = np.sort(np.r_[[lo] * order, self.knots, [hi] * order])
        pivots = (0.75 * lo + 0.25 * aknots[order], 0.75 * hi + 0.25 * aknots[-order - 1])  # R's e = 1/4
        powers = np.arange(self.degree + 1)
        factorials = np.array([math.factorial(r) for r in powers], dtype=float)

        def evaluate(v: np.ndarray) -> np.ndarray:
            basis = np.zeros((v.size, aknots.size - order))
            inside = (v >= lo) & (v <= hi)
            basis[inside] = _spline_design(aknots, v[inside], order)
            for pivot, side in zip(pivots, (v < lo, v > hi), strict=True):  # R: Taylor polynomial at pivot
                if side.any():
                    taylor = np.vstack([_spline_design(aknots, np.array([pivot]), order, r) for r in powers])
                    basis[side] = ((v[side] - pivot)[:, None] ** powers) @ (taylor / factorials[:, None])
            return basis[:, (0 if self.intercept else 1):]

        return _with_nan_rows(xv, len(self.column_suffixes), evaluate)

    @property
    def column_suffixes(self) -> tuple[str, ...]:
        """``("1", ..., str(len(knots) + degree + intercept))``, R's column names."""
        return tuple(str(i) for i in range(1, len(self.knots) + self.degree + self.intercept + 1))


@dataclass(frozen=True)
class OrthogonalPolynomial:
    r"""Orthogonal or raw polynomials, R's ``stats::poly``; ``fit`` mirrors ``poly(x, degree=1, raw=False)``.

    Parameters
    ----------
    degree
        Highest power.
    alpha, norm2
        R's ``attr(, "coefs")``: ``alpha`` has ``degree`` values, ``norm2`` has ``degree + 2`` (starting 1).
        Empty when ``raw``.
    raw
        Plain powers :math:`x, x^2, \dots, x^d` instead of orthogonal polynomials.

    Notation
    --------
    On training data :math:`x_1..x_n`, the monic polynomials :math:`P_0 = 1`, :math:`P_1 = x - \alpha_1`,
    :math:`P_{j+1} = (x - \alpha_{j+1}) P_j - (\nu_{j+1} / \nu_j) P_{j-1}` are orthogonal for the sum
    over the data, with :math:`\nu_j = \sum_i P_{j-1}(x_i)^2` (R's ``norm2[j+1]``, ``norm2[1] = 1``) and
    :math:`\alpha_{j} = \sum_i x_i P_{j-1}(x_i)^2 / \nu_{j}`. Column :math:`j` is
    :math:`P_j(x) / \sqrt{\nu_{j+1}}`, so on the training data the columns are orthonormal and orthogonal
    to the constant. Fitting computes :math:`\alpha, \nu` from a QR decomposition of
    :math:`[1, \tilde x, \dots, \tilde x^d]`, :math:`\tilde x = x - \bar x`, as R does; evaluation (also on
    the training data) uses the recurrence, as R's ``predict.poly``.
    """

    degree: int
    alpha: tuple[float, ...] = ()
    norm2: tuple[float, ...] = ()
    raw: bool = False
    name: ClassVar[str] = "poly"

    def __post_init__(self) -> None:
        _freeze(self, degree=as_int(self.degree, "degree", self.name, 1), raw=bool(self.raw),
                alpha=tuple(float(a) for a in self.alpha), norm2=tuple(float(v) for v in self.norm2))
        if not self.raw and (len(self.alpha) != self.degree or len(self.norm2) != self.degree + 2):
            raise FormulaError("poly(): alpha must have `degree` values and norm2 `degree + 2` values.",
                               given=f"degree={self.degree}, alpha={self.alpha}, norm2={self.norm2}",
                               fix="Build it with OrthogonalPolynomial.fit(x, degree).")

    @classmethod
    def fit(cls, x: np.ndarray, *args: Any, **kwargs: Any) -> OrthogonalPolynomial:
        """Compute R's ``coefs = list(alpha, norm2)`` on training data ``x``."""
        a = bind_arguments("poly", ("degree",), ("raw",), {}, args, kwargs)
        xv = numeric_vector(x, "poly", fitting=True)
        degree = as_int(a.get("degree", 1), "degree", "poly", 1)
        if as_bool(a.get("raw", False), "raw", "poly"):
            return cls(degree, raw=True)
        n_unique = np.unique(xv).size
        if degree >= n_unique:
            raise FormulaError("poly(): 'degree' must be less than the number of distinct values of x.",
                               given=f"degree={degree} with {n_unique} distinct value(s)",
                               fix=f"Use degree <= {max(n_unique - 1, 1)} (or raw=True).")
        xbar = float(xv.mean())
        xc = xv - xbar
        powers = xc[:, None] ** np.arange(degree + 1)  # R: outer(x - mean(x), 0:degree, "^")
        q, r = np.linalg.qr(powers)
        diag = np.diag(r)
        # R's qr() (LINPACK dqrdc2, tol 1e-7) would drop a column whose residual norm is this small.
        if np.any(np.abs(diag) <= 1e-7 * np.linalg.norm(powers, axis=0)):
            raise FormulaError("poly(): the powers of x are numerically collinear.", given=f"degree={degree}",
                               fix="Use a lower degree, or centre and rescale x.")
        z = q * diag  # R: qr.qy(QR, diag(R)); sign-invariant, so LAPACK vs LINPACK signs do not matter
        norm2 = np.sum(z**2, axis=0)
        alpha = (np.sum(xc[:, None] * z**2, axis=0) / norm2 + xbar)[:degree]
        return cls(degree, tuple(alpha), (1.0, *norm2), raw=False)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The basis at ``x`` (``predict(poly_object, x)`` in R): an ``(n, degree)`` array."""
        xv = numeric_vector(x, self.name, fitting=False)
        if self.raw:
            return xv[:, None] ** np.arange(1, self.degree + 1)
        z = np.ones((xv.size, self.degree + 1))
        z[:, 1] = xv - self.alpha[0]
        a, nu = self.alpha, self.norm2
        for i in range(2, self.degree + 1):  # R's predict.poly three-term recurrence
            z[:, i] = (xv - a[i - 1]) * z[:, i - 1] - (nu[i] / nu[i - 1]) * z[:, i - 2]
        return z[:, 1:] / np.sqrt(self.norm2[2:])

    @property
    def column_suffixes(self) -> tuple[str, ...]:
        """``("1", ..., str(degree))``, R's column names."""
        return tuple(str(i) for i in range(1, self.degree + 1))


STATEFUL_TRANSFORMS: dict[str, type] = {"ns": NaturalSpline, "bs": BSpline, "poly": OrthogonalPolynomial}
