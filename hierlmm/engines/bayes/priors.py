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
from hierlmm.structures.random_effects import Piece, pieces


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
    sd_scale, eta = {}, {}
    for block in design.blocks:
        rms = np.sqrt(np.mean(block.Z**2, axis=0))
        sd_scale[block.factor] = tuple(float(2.5 * s_y / r) if r > 0 else 2.5 * s_y for r in rms)
        full = [(block.structure, block.q)] if block.structure != "pdBlocked" else list(block.parts)
        if any(structure == "pdSymm" and q > 1 for structure, q in full):
            eta[block.factor] = 1.0
    return Priors(tuple(mu), tuple(sd), 2.5 * s_y, sd_scale, eta)


def with_overrides(priors: Priors, design: Design, overrides: Mapping[str, Any] | None) -> Priors:
    """Apply user overrides.

    ``overrides`` keys: ``"beta"`` ({name: (mu, sigma)}), ``"sigma"`` (scale), ``"sd"`` ({factor: [scales]} or
    {"factor:effect": scale}), ``"lkj_eta"`` (a number for every block, or {factor: eta}).
    """
    if not overrides:
        return priors
    unknown = set(overrides) - {"beta", "sigma", "sd", "lkj_eta"}
    if unknown:
        raise SpecError(f"Unknown prior(s) {sorted(unknown)}.", given=dict(overrides),
                        fix="Override 'beta', 'sigma', 'sd' or 'lkj_eta'.")
    mu, sd = list(priors.beta_mu), list(priors.beta_sigma)
    for name, value in dict(overrides.get("beta", {})).items():
        if name not in design.fixef_names:
            raise SpecError(f"No fixed effect {name!r} to set a prior on.", given=name,
                            fix=f"Use one of {list(design.fixef_names)}.")
        m, s = _pair(value, f"beta[{name}]")
        j = design.fixef_names.index(name)
        mu[j], sd[j] = m, s
    sigma_scale = _positive(overrides.get("sigma", priors.sigma_scale), "sigma")
    sd_scale = dict(priors.sd_scale)
    for key, value in dict(overrides.get("sd", {})).items():
        factor, _, effect = key.partition(":") if key not in sd_scale else (key, "", "")
        block = next((b for b in design.blocks if b.factor == (key if key in sd_scale else factor)), None)
        if block is None:
            raise SpecError(f"No grouping factor for the prior 'sd[{key}]'.", given=key,
                            fix=f"Use one of {[b.factor for b in design.blocks]} (optionally ':effect').")
        scales = list(sd_scale[block.factor])
        if effect:
            if effect not in block.effect_names:
                raise SpecError(f"No random effect {effect!r} in {block.factor}.", given=key,
                                fix=f"Use one of {list(block.effect_names)}.")
            scales[block.effect_names.index(effect)] = _positive(value, f"sd[{key}]")
        else:
            values = np.atleast_1d(value).astype(float)
            if values.size not in (1, block.q):
                raise SpecError(f"sd[{key}] needs 1 or {block.q} scales.", given=value, fix="Give one per effect.")
            scales = [_positive(v, f"sd[{key}]") for v in np.broadcast_to(values, (block.q,))]
        sd_scale[block.factor] = tuple(scales)
    eta = dict(priors.lkj_eta)
    value = overrides.get("lkj_eta")
    if isinstance(value, Mapping):
        for factor, e in value.items():
            if factor not in eta:
                raise SpecError(f"No full (pdSymm) block {factor!r} for an LKJ prior.", given=factor,
                                fix=f"Use one of {sorted(eta)}.")
            eta[factor] = _positive(e, f"lkj_eta[{factor}]")
    elif value is not None:
        eta = {f: _positive(value, "lkj_eta") for f in eta}
    return replace(priors, beta_mu=tuple(mu), beta_sigma=tuple(sd), sigma_scale=sigma_scale, sd_scale=sd_scale,
                   lkj_eta=eta)


def _positive(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not v > 0:
        raise SpecError(f"The prior scale of {name} must be a positive number.", given=value, fix="Use e.g. 2.5.")
    return v


def _pair(value: Any, name: str) -> tuple[float, float]:
    try:
        m, s = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SpecError(f"The prior of {name} must be (mean, sd).", given=value, fix="Use e.g. (0, 10).") from None
    return m, _positive(s, name)


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
