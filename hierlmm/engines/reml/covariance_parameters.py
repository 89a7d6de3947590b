"""The implied marginal covariance of any ML/REML fit as a function of its covariance parameters, with derivatives.

Satterthwaite's and Kenward and Roger's denominator degrees of freedom
(:mod:`hierlmm.engines.reml.denominator_df`) need how ``V`` and ``cov(beta)`` move with the covariance parameters.
This module writes ``V`` of every fit kind (nested or crossed random effects, the marginal model, serially correlated
and heteroscedastic errors) in one form, and gives ``G_j = dV / dphi_j`` and, where ``V`` is not linear in ``phi``,
``dG_j / dphi_k``.

Notation
--------
``V = sum_k Z_k (I ⊗ D_k) Z_k' + sigma^2 S R S`` (the chapter's ``V_i`` stacked over subjects) with the parameters
``phi`` in this order:

- every block's ``D_k`` as a linear combination ``D_k = sum_e phi_e E_e`` of its structure's basis (pbkrtest's
  choice for lme4 models): ``pdSymm`` the lower triangle (``E = e_a e_b' + e_b e_a'``, ``e_a e_a'`` on the
  diagonal), ``pdDiag`` the diagonal, ``pdIdent`` one variance (``E = I``), ``pdCompSymm`` a variance and a
  covariance (``I`` and ``J - I``), ``pdBlocked`` its parts in turn;
- ``sigma^2`` (``G = S R S``);
- the error structure's own parameters (:meth:`ErrorModel.values`: the correlation's unconstrained parameters, then
  the variance function's ``omega``), with ``V`` non-linear in them: their ``G`` and ``dG/dphi`` are central
  differences (step ``1e-4``, relative error about ``1e-8``).

``V`` is block diagonal over the outermost grouping factor's levels (subjects), batched here by subject size; a model
with crossed grouping factors is one dense block of all ``N`` rows (up to :data:`MAX_DENSE_ROWS`).

lme4's parametrisation. lmerTest differentiates the deviance with respect to ``psi = (theta, sigma)``: the relative
Cholesky factors ``L_k`` of ``D_k = sigma^2 L_k L_k'`` (:class:`~hierlmm.structures.random_effects.ThetaLayout`'s
natural scale) and ``sigma``, then the error structure's parameters. :meth:`CovarianceParameters.phi_of_psi` maps
``psi`` to ``phi``; at a boundary (an SD of 0) ``dphi/dpsi`` loses rank, which is what makes lmerTest's
Satterthwaite DF differ from a computation in ``phi`` there (:mod:`hierlmm.engines.reml.denominator_df`). The
marginal model has no Cholesky factor (its ``D`` may be indefinite): its ``psi`` is ``phi``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hierlmm.design.design import Design, RandomEffectsBlock
from hierlmm.design.sufficient_stats import is_crossed, outermost_block
from hierlmm.engines.reml.profiled_likelihood import layout_for
from hierlmm.errors import NotSupportedError
from hierlmm.structures.error_parameters import ErrorParameters
from hierlmm.structures.random_effects import ThetaLayout
from hierlmm.structures.serial_correlation import CorrelationStructure

STEP = 1e-4  # central-difference step of the error structure's parameters (unconstrained scale)
MAX_DENSE_ROWS = 6000  # crossed factors: V is one dense N x N block, and its derivatives m of them


@dataclass(frozen=True, eq=False)
class ErrorModel:
    """The within-subject errors' relative covariance ``S R S`` (``E = sigma^2 S R S``) as a function of the error
    structure's parameters (:class:`~hierlmm.structures.error_parameters.ErrorParameters` with ``sigma = 1``).

    Attributes
    ----------
    names
        Names of the parameters beyond ``sigma^2`` (empty for independent errors of one variance).
    values
        Their estimates: the correlation's unconstrained parameters, then the variance function's ``omega``.
    batches, distances
        The subjects' rows (k, n) batched by size, and the distances (k, n, n) the correlation reads.
    structure, n_max, n_correlation
        The correlation structure (None: ``R = I``), the largest subject size, the number of its parameters.
    M
        (N, k) the variance function's design (None without one).
    """

    names: tuple[str, ...] = ()
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    batches: tuple[np.ndarray, ...] | None = None
    distances: tuple[np.ndarray, ...] = ()
    structure: CorrelationStructure | None = None
    n_max: int = 1
    n_correlation: int = 0
    M: np.ndarray | None = None

    def matrices(self, values: np.ndarray, rows: np.ndarray, batch: int) -> np.ndarray:
        """``S R S`` (k, n, n) of batch ``batch`` (rows (k, n)) at ``values``."""
        if not self.names:
            return np.broadcast_to(np.eye(rows.shape[1]), (rows.shape[0], rows.shape[1], rows.shape[1]))
        omega = values[self.n_correlation:][None] if self.M is not None else None
        params = ErrorParameters(self.structure, self.n_max, np.ones(1), omega,
                                 unconstrained=values[:self.n_correlation])
        return params.matrices(self.distances[batch], None if self.M is None else self.M[rows])[0]


def _basis(structure: str, effects: tuple[str, ...]) -> list[tuple[np.ndarray, str]]:
    """The basis ``E_e`` of a (non-blocked) structure's ``D`` (module notation), each with its name."""
    q = len(effects)
    if structure == "pdIdent":
        return [(np.eye(q), f"var({', '.join(effects)})")]
    if structure == "pdCompSymm":
        variance = (np.eye(q), f"var({', '.join(effects)})")
        return [variance, (np.ones((q, q)) - np.eye(q), f"cov({', '.join(effects)})")] if q > 1 else [variance]
    out = []
    for b in range(q):  # column-major lower triangle, as pbkrtest's lower.tri(, diag = TRUE)
        for a in range(b, q):
            if a != b and structure == "pdDiag":
                continue
            E = np.zeros((q, q))
            E[a, b] = E[b, a] = 1.0
            out.append((E, f"var({effects[a]})" if a == b else f"cov({effects[a]}, {effects[b]})"))
    return out


def block_basis(block: RandomEffectsBlock) -> tuple[list[np.ndarray], list[str]]:
    """A block's ``D`` basis (module notation) and the parameters' names (``patient: var(obstime)``)."""
    parts = block.parts if block.structure == "pdBlocked" else ((block.structure, block.q),)
    basis, names, first = [], [], 0
    for structure, q in parts:
        for E, label in _basis(structure, block.effect_names[first:first + q]):
            full = np.zeros((block.q, block.q))
            full[first:first + q, first:first + q] = E
            basis.append(full)
            names.append(f"{block.factor}: {label}")
        first += q
    return basis, names


@dataclass(frozen=True, eq=False)
class CovarianceParameters:
    """``V(phi)`` of a fit (module notation), batched by subject size.

    Attributes
    ----------
    design
        The fit's design.
    names, values
        The parameters ``phi`` and their estimates.
    batches
        Row positions (k, n) of the subjects of each size (one (1, N) batch for crossed factors).
    n_linear
        The number of leading parameters in which ``V`` is linear (the ``D`` elements and ``sigma^2``).
    bases
        Per random-effects block, its basis matrices (q, q) in ``phi`` order.
    error
        The error model.
    """

    design: Design
    names: tuple[str, ...]
    values: np.ndarray
    batches: tuple[np.ndarray, ...]
    n_linear: int
    bases: tuple[tuple[np.ndarray, ...], ...]
    error: ErrorModel
    layout: ThetaLayout | None = None
    psi: np.ndarray | None = None

    def phi_of_psi(self, psi: np.ndarray) -> np.ndarray:
        """``phi`` at lme4's ``psi = (theta, sigma, error parameters)`` (module notation)."""
        if self.layout is None:
            return np.asarray(psi, dtype=float)
        k = self.layout.size
        sigma = psi[k]
        out = []
        for L, basis in zip(self.layout.factors(psi[:k], log_diagonal=False), self.bases, strict=True):
            out.append(_coefficients(sigma**2 * L @ L.T, basis))
        return np.concatenate([*out, [sigma**2], psi[k + 1:]])

    @property
    def is_linear(self) -> bool:
        """Whether ``V`` is linear in every parameter (no error structure)."""
        return self.n_linear == self.values.size

    def _same_level(self, block: RandomEffectsBlock, rows: np.ndarray) -> np.ndarray:
        g = block.group_index[rows]
        return (g[..., :, None] == g[..., None, :]).astype(float)

    def random_part_derivatives(self, rows: np.ndarray) -> np.ndarray:
        """``dV / dphi_e`` (n_D, k, n, n) of the ``D`` elements for a batch of rows (k, n)."""
        out = []
        for block, basis in zip(self.design.blocks, self.bases, strict=True):
            Z = block.Z[rows]  # (k, n, q)
            same = self._same_level(block, rows)
            for E in basis:
                out.append(same * (Z @ E @ np.swapaxes(Z, -1, -2)))
        return np.stack(out) if out else np.zeros((0, *rows.shape, rows.shape[1]))

    def covariance(self, phi: np.ndarray, batch: int) -> np.ndarray:
        """``V`` (k, n, n) of batch ``batch`` at ``phi``."""
        rows = self.batches[batch]
        G = self.random_part_derivatives(rows)
        n_D = G.shape[0]
        V = np.tensordot(phi[:n_D], G, axes=1) if n_D else np.zeros((*rows.shape, rows.shape[1]))
        return V + phi[n_D] * self.error.matrices(phi[self.n_linear:], rows, batch)

    def derivatives(self, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``G`` (m, k, n, n) with ``G_j = dV/dphi_j`` at the estimates for batch ``batch``, and ``dG_j/dphi_l``
        (m, m, k, n, n), None when ``V`` is linear in ``phi`` (module notation)."""
        rows = self.batches[batch]
        random_part = self.random_part_derivatives(rows)
        n_D, m = random_part.shape[0], self.values.size
        sigma2, extra = self.values[n_D], self.values[self.n_linear:]
        relative = self.error.matrices(extra, rows, batch)
        G = [*random_part, relative]
        if self.is_linear:
            return np.stack(G), None
        k, n = rows.shape
        second = np.zeros((m, m, k, n, n))
        first_extra = []
        for j in range(extra.size):  # d(S R S)/d psi_j by central differences
            up, down = extra.copy(), extra.copy()
            up[j] += STEP
            down[j] -= STEP
            d_relative = (self.error.matrices(up, rows, batch) - self.error.matrices(down, rows, batch)) / (2 * STEP)
            first_extra.append(d_relative)
            G.append(sigma2 * d_relative)
            second[n_D, self.n_linear + j] = second[self.n_linear + j, n_D] = d_relative
            for l in range(j, extra.size):
                second[self.n_linear + j, self.n_linear + l] = sigma2 * _second_difference(self.error, extra, j, l,
                                                                                          rows, batch)
                second[self.n_linear + l, self.n_linear + j] = second[self.n_linear + j, self.n_linear + l]
        return np.stack(G), second


def _second_difference(error: ErrorModel, values: np.ndarray, j: int, l: int, rows: np.ndarray,
                       batch: int) -> np.ndarray:
    """``d^2 (S R S) / d psi_j d psi_l`` by central differences."""
    def at(dj: float, dl: float) -> np.ndarray:
        x = values.copy()
        x[j] += dj
        x[l] += dl
        return error.matrices(x, rows, batch)

    h = STEP * 10  # a wider step for the second derivative (its rounding error grows as 1 / h^2)
    if j == l:
        return (at(h, 0) - 2 * at(0, 0) + at(-h, 0)) / h**2
    return (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4 * h * h)


def _coefficients(D: np.ndarray, basis: Sequence[np.ndarray]) -> np.ndarray:
    """``D``'s coefficients on a block's basis (exact for a ``D`` of the structure)."""
    A = np.stack([E.ravel() for E in basis], axis=1)
    return np.linalg.lstsq(A, np.asarray(D, dtype=float).ravel(), rcond=None)[0]


def psd_cholesky(A: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """A lower-triangular ``L`` with ``L L' = A`` for a positive semi-definite ``A``, singular ones included (a zero
    pivot gives a zero column: numpy's Cholesky refuses a singular matrix)."""
    q = A.shape[0]
    L = np.zeros_like(A, dtype=float)
    scale = max(float(np.max(np.abs(np.diag(A)))), 1e-300) if q else 1.0
    for j in range(q):
        d = A[j, j] - L[j, :j] @ L[j, :j]
        if d <= tol * scale:
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1:, j] = (A[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L


def subject_batches_of(design: Design) -> tuple[np.ndarray, ...]:
    """Row positions of the outermost grouping factor's levels, batched by size (k, n); crossed factors: one batch of
    all rows."""
    if not design.blocks or is_crossed(design):
        return (np.arange(design.n_obs)[None, :],)
    block = design.blocks[outermost_block(design)]
    order = np.argsort(block.group_index, kind="stable")
    sizes = np.bincount(block.group_index, minlength=block.n_levels)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    out = []
    for n in np.unique(sizes[sizes > 0]):
        levels = np.flatnonzero(sizes == n)
        out.append(order[starts[levels][:, None] + np.arange(n)[None, :]])
    return tuple(out)


def covariance_parameters(design: Design, D: tuple[np.ndarray, ...], sigma: float,
                          error: ErrorModel | None = None, *, cholesky: bool = True) -> CovarianceParameters:
    """``V(phi)`` (module notation) of a fit with random-effects covariances ``D``, residual SD ``sigma`` and error
    model ``error`` (None: independent errors of one variance). The batches are the error model's (in the order of
    the rows its distances refer to), or :func:`subject_batches_of`. ``cholesky``: whether ``D`` is a covariance
    matrix with lme4's parametrisation ``psi`` (False for the marginal model)."""
    error = error if error is not None else ErrorModel()
    if is_crossed(design) and design.n_obs > MAX_DENSE_ROWS:
        raise NotSupportedError(
            f"With crossed grouping factors V is one dense N x N matrix; N = {design.n_obs} rows is beyond "
            f"{MAX_DENSE_ROWS} (memory grows as N^2 and time as N^3).", given=f"N = {design.n_obs}",
            fix="Use ddf='nlme' (N - p for crossed factors), or test on a subset of the data.")
    names: list[str] = []
    values: list[float] = []
    bases = []
    for block, Dk in zip(design.blocks, D, strict=True):
        basis, labels = block_basis(block)
        names += labels
        values += list(_coefficients(Dk, basis))
        bases.append(tuple(basis))
    names.append("sigma^2")
    values.append(sigma**2)
    n_linear = len(values)
    names += list(error.names)
    values += list(error.values)
    layout = psi = None
    if cholesky and sigma > 0:
        layout = layout_for(design)
        factors = [psd_cholesky(np.asarray(Dk, dtype=float) / sigma**2) for Dk in D]
        psi = np.concatenate([layout.from_factors(factors, log_diagonal=False), [sigma], error.values])
    return CovarianceParameters(design, tuple(names), np.asarray(values, dtype=float),
                                error.batches if error.batches is not None else subject_batches_of(design), n_linear,
                                tuple(bases), error, layout, psi)
