"""Default priors of the Bayesian models: weakly informative and scaled to the data, every one overridable.

Notation
--------
With ``s_y`` the standard deviation of ``y``, ``ybar`` its mean, ``s_j`` the standard deviation of column ``j`` of X and
``r_kj`` the root mean square of column ``j`` of block ``k``'s Z:

- fixed effects, on predictors centred at their means (as rstanarm and brms do, which decorrelates the intercept):
  intercept ``alpha ~ Normal(ybar, 2.5 s_y)``; slope ``beta_j ~ Normal(0, 10 s_y / s_j)`` (rstanarm's autoscale uses
  2.5 instead of 10: ours is weaker, so that the posterior of the chapter's models is driven by the data);
  the reported intercept ``beta_0 = alpha - sum_j beta_j mean(x_j)`` is that of the uncentred design;
- residual SD ``sigma ~ HalfStudentT(nu=3, 2.5 s_y)`` (brms' default scale);
- random-effect SD ``sd_kj ~ HalfStudentT(nu=3, 2.5 s_y / r_kj)`` (so a slope's prior is on the scale of the
  variation it can cause in y);
- correlations of a full (pdSymm) block: ``LKJ(eta = 1)``, uniform over correlation matrices; with the SDs this is
  PyMC's ``LKJCholeskyCov``, which keeps D positive definite;
- pdIdent and pdCompSymm blocks: one common SD ``s_k ~ HalfStudentT(3, mean_j 2.5 s_y / r_kj)``, and for pdCompSymm
  the common correlation ``rho_k ~ Uniform(-1/(q-1), 1)``; pdBlocked blocks: each part as its own structure
  (:mod:`hierlmm.engines.bayes.random_effects_covariance`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hierlmm.design.design import Design
from hierlmm.errors import SpecError
from hierlmm.spec.prior_overrides import check_prior_overrides
from hierlmm.structures.random_effects import Piece, pieces
from hierlmm.structures.serial_correlation import RANGE_KINDS, CorrelationStructure, parse_correlation


@dataclass(frozen=True)
class Priors:
    """The priors of one design (see the module notation for the defaults).

    Attributes
    ----------
    beta_mu, beta_sigma
        Normal prior of each fixed effect (the intercept's refers to the centred design).
    sigma_scale
        Scale of the half-Student-t(3) prior of sigma.
    sd_scale
        Per grouping factor, the scales of the half-Student-t(3) priors of the random-effect SDs.
    lkj_eta
        Per grouping factor with a full D, the LKJ shape (1 = uniform over correlation matrices).
    """

    beta_mu: tuple[float, ...]
    beta_sigma: tuple[float, ...]
    sigma_scale: float
    sd_scale: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    lkj_eta: Mapping[str, float] = field(default_factory=dict)

    def table(self, design: Design) -> list[tuple[str, str]]:
        """(parameter, prior) rows, for printing."""
        rows = [
            (f"beta[{n}]", f"Normal({m:.4g}, {s:.4g})" + (" (centred design)" if n == "(Intercept)" else ""))
            for n, m, s in zip(design.fixef_names, self.beta_mu, self.beta_sigma, strict=True)
        ]
        rows.append(("sigma", f"HalfStudentT(3, {self.sigma_scale:.4g})"))
        for block in design.blocks:
            rows.extend(prior_rows(block, self))
        return rows


def default_priors(design: Design) -> Priors:
    """The documented default priors, scaled to the data of ``design``."""
    y, X = design.y, design.X
    s_y = float(np.std(y, ddof=1)) or 1.0
    mu, sd = [], []
    for j in range(design.p):
        s_j = float(np.std(X[:, j], ddof=1)) if len(y) > 1 else 0.0
        if s_j == 0.0:  # the intercept (centred design)
            mu.append(float(np.mean(y)))
            sd.append(2.5 * s_y)
        else:
            mu.append(0.0)
            sd.append(10.0 * s_y / s_j)
    sd_scale = {}
    for block in design.blocks:
        rms = np.sqrt(np.mean(block.Z**2, axis=0))
        sd_scale[block.factor] = tuple(float(2.5 * s_y / r) if r > 0 else 2.5 * s_y for r in rms)
    eta = dict.fromkeys(lkj_factors(design), 1.0)
    return Priors(tuple(mu), tuple(sd), 2.5 * s_y, sd_scale, eta)


def lkj_factors(design: Design) -> tuple[str, ...]:
    """The grouping factors whose D has a full (pdSymm) part of two or more effects: those with an LKJ prior."""
    out = []
    for block in design.blocks:
        full = [(block.structure, block.q)] if block.structure != "pdBlocked" else list(block.parts)
        if any(structure == "pdSymm" and q > 1 for structure, q in full):
            out.append(block.factor)
    return tuple(out)


def prior_names(design: Design, *, kind: str = "hierarchical",
                correlation: CorrelationStructure | str | None = None) -> tuple[str, ...]:
    """The priors a model of ``design`` takes: ``beta`` and ``sigma``; for the hierarchical model ``sd``, and
    ``lkj_eta`` if a block has correlated random effects; with a correlation structure ``range`` (corExp, corGaus,
    corCAR1) or ``rho`` (corAR1, corCompSymm), and ``nugget`` with a nugget. The marginal model's ``D`` has fixed
    priors (:mod:`hierlmm.engines.bayes.marginal_model`): only ``beta`` and ``sigma``."""
    names = ["beta", "sigma"]
    if kind == "hierarchical":
        names += ["sd", *(["lkj_eta"] if lkj_factors(design) else [])]
    if correlation is not None:
        structure = correlation if isinstance(correlation, CorrelationStructure) else parse_correlation(correlation)
        names += ["range" if structure.kind in RANGE_KINDS else "rho", *(["nugget"] if structure.nugget else [])]
    return tuple(names)


def check_priors(design: Design, overrides: Mapping[str, Any] | None, *, kind: str = "hierarchical",
                 correlation: CorrelationStructure | str | None = None) -> dict[str, Any] | None:
    """The one check of user priors for a model of ``design``: their shapes and values
    (:func:`hierlmm.spec.prior_overrides.check_prior_overrides`), then their names against the model
    (:func:`prior_names`, the design's fixed effects, grouping factors and random effects).

    Returns
    -------
    dict or None
        The overrides, normalised (None: none given).

    Raises
    ------
    SpecError
        A prior this model does not have (listing those it has), a coefficient, factor or effect it does not have,
        or a value of the wrong shape or out of range.
    """
    table = check_prior_overrides(overrides)
    if table is None:
        return None
    names = prior_names(design, kind=kind, correlation=correlation)
    unknown = [k for k in table if k not in names]
    if unknown:
        why = []
        if "lkj_eta" in unknown and kind == "hierarchical":
            why.append("lkj_eta is the LKJ prior of correlated random effects (a pdSymm block of two or more "
                       "effects), and this model has none")
        if kind == "marginal" and {"sd", "lkj_eta"} & set(unknown):
            why.append("the marginal model's D has fixed, dimensionless priors (hierlmm.engines.bayes.marginal_model)")
        if {"range", "nugget", "rho"} & set(unknown):
            why.append("range, rho and nugget are priors of a correlation structure's parameters, and only those "
                       "of this model's structure apply" if correlation is not None else
                       "range, rho and nugget are priors of a correlation structure, and this model has none")
        raise SpecError(f"Unknown prior(s) {unknown} for this model" + (f": {'; '.join(why)}." if why else "."),
                        given=dict(overrides or {}), fix=f"This model's priors are {', '.join(names)}.")
    for name in table.get("beta", {}):
        if name not in design.fixef_names:
            raise SpecError(f"No fixed effect {name!r} to set a prior on.", given=name,
                            fix=f"Use one of {list(design.fixef_names)}.")
    factors = [b.factor for b in design.blocks]
    for key, value in table.get("sd", {}).items():
        block = _sd_block(design, key)
        effect = key[len(block.factor) + 1:] if block is not None and key != block.factor else ""
        if block is None:
            raise SpecError(f"No grouping factor for the prior 'sd[{key}]'.", given=key,
                            fix=f"Use one of {factors} (optionally 'factor:effect').")
        if effect and effect not in block.effect_names:
            raise SpecError(f"No random effect {effect!r} in {block.factor}.", given=key,
                            fix=f"Use one of {list(block.effect_names)}.")
        if effect and isinstance(value, list):
            raise SpecError(f"sd[{key}] is one effect's scale: a number, not a list.", given=value,
                            fix=f"Write e.g. sd = {{ \"{key}\" = {value[0]:g} }}.")
        if not effect and isinstance(value, list) and len(value) not in (1, block.q):
            raise SpecError(f"sd[{key}] needs 1 or {block.q} scales (one per effect: {list(block.effect_names)}).",
                            given=value, fix="Give one per effect, or one for all.")
    if isinstance(table.get("lkj_eta"), Mapping):
        for factor in table["lkj_eta"]:
            if factor not in lkj_factors(design):
                raise SpecError(f"No full (pdSymm) block {factor!r} for an LKJ prior.", given=factor,
                                fix=f"Use one of {list(lkj_factors(design))}.")
    return table


def _sd_block(design: Design, key: str) -> Any:
    """The block a ``sd`` key names: a factor (which may itself contain ':'), or ``factor:effect``; None if none."""
    exact = next((b for b in design.blocks if b.factor == key), None)
    if exact is not None:
        return exact
    return next((b for b in design.blocks if key.startswith(b.factor + ":")), None)


def with_overrides(priors: Priors, design: Design, overrides: Mapping[str, Any] | None, *,
                   kind: str = "hierarchical") -> Priors:
    """Apply user overrides, checked first by :func:`check_priors` (for a model of ``kind``, without correlation
    structure: a correlated model passes its correlation priors to
    :func:`hierlmm.engines.bayes.correlated_model.correlation_priors`).

    ``overrides`` keys: ``"beta"`` ({name: (mu, sigma)}), ``"sigma"`` (scale), ``"sd"`` ({factor: [scales]} or
    {"factor:effect": scale}), ``"lkj_eta"`` (a number for every block, or {factor: eta}).
    """
    table = check_priors(design, overrides, kind=kind)
    if table is None:
        return priors
    mu, sd = list(priors.beta_mu), list(priors.beta_sigma)
    for name, (m, s) in table.get("beta", {}).items():
        j = design.fixef_names.index(name)
        mu[j], sd[j] = m, s
    sd_scale = dict(priors.sd_scale)
    for key, value in table.get("sd", {}).items():
        block = _sd_block(design, key)
        if key != block.factor:
            scales = list(sd_scale[block.factor])
            scales[block.effect_names.index(key[len(block.factor) + 1:])] = value
        else:
            scales = list(np.broadcast_to(np.atleast_1d(value), (block.q,)).astype(float))
        sd_scale[block.factor] = tuple(float(v) for v in scales)
    eta = dict(priors.lkj_eta)
    value = table.get("lkj_eta")
    if isinstance(value, Mapping):
        eta.update(value)
    elif value is not None:
        eta = dict.fromkeys(eta, value)
    return replace(priors, beta_mu=tuple(mu), beta_sigma=tuple(sd), sigma_scale=table.get("sigma", priors.sigma_scale),
                   sd_scale=sd_scale, lkj_eta=eta)


def prior_kind(piece: Piece, factor: str, priors: Priors) -> str:
    """The prior a piece gets: a pdSymm piece without an LKJ prior (or of one effect) is sampled as pdDiag."""
    if piece.q == 1 or piece.structure == "pdDiag":
        return "pdDiag"
    if piece.structure == "pdSymm":
        return "pdSymm" if factor in priors.lkj_eta else "pdDiag"
    return piece.structure


def prior_rows(block: Any, priors: Priors) -> list[tuple[str, str]]:
    """(parameter, prior) rows of a block, for :meth:`Priors.table`."""
    f, rows = block.factor, []
    scales_all = np.array(priors.sd_scale[f])
    for piece in pieces(block):
        kind, e = prior_kind(piece, f, priors), piece.effects
        names = block.effect_names[e]
        if kind in ("pdSymm", "pdDiag"):
            rows.extend((f"sd[{f}:{n}]", f"HalfStudentT(3, {s:.4g})")
                        for n, s in zip(names, scales_all[e], strict=True))
            if kind == "pdSymm":
                rows.append((f"cor[{f}:{','.join(names)}]", f"LKJ(eta={priors.lkj_eta[f]:g})"))
        else:
            rows.append((f"s[{f}:{','.join(names)}]", f"HalfStudentT(3, {np.mean(scales_all[e]):.4g}) (common SD)"))
            if kind == "pdCompSymm":
                rows.append((f"rho[{f}:{','.join(names)}]", f"Uniform({-1 / (piece.q - 1):.4g}, 1)"))
    return rows
