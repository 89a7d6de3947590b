"""How the joint sampler parametrises each block's random effects: centred, non-centred, or a mix of the two.

Stage between the design and the Bayesian model (``Design -> Parametrisation -> BayesModel``), for the joint
sampler only: the marginal sampler integrates ``b`` out and needs none.

Notation
--------
Block ``k`` with factor ``L_k`` (``D_k = L_k L_k'``, lower triangular). Its first ``q_c`` effects may be sampled
*centred* (Gelfand, Sahu and Carlin, 1995): ``c_i = m + b_i[:q_c] ~ N(m, L_cc L_cc')``, where ``m`` holds the fixed
effect of every such column of ``Z_k`` that is also a column of X (the intercept, a time slope; 0 otherwise); the
others *non-centred*: ``z_i[q_c:] ~ N(0, I)``. With ``z_i[:q_c] = L_cc^-1 (c_i - m)``, ``b_i = L_k z_i`` either
way, so every choice is the same model. Centring suits effects the subject's own data pin down (the fixed effect
and the subjects' effects then stop trading off along a ridge NUTS crosses slowly); non-centring suits weakly
informed ones (no funnel) (Papaspiliopoulos, Roberts and Skold, 2007).

``centered`` names factors (every effect centred), ``factor:effect`` (that effect and those before it), or is
``"auto"``: effect ``j`` is centred, in order and while the rule holds, when at the REML estimates the subjects'
data shrink its variance to less than half, i.e. ``mean_l C_l[j, j] / D[j, j] < 1/2`` with
``C_l = (D^-1 + Z_l'Z_l / sigma^2)^-1`` the conditional covariance of ``b_l`` given its own rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierlmm.design.design import Design
from hierlmm.engines.reml.ml_fit import fit_ml
from hierlmm.errors import SpecError

AUTO_THRESHOLD = 0.5
"""Centre an effect when the data shrink its conditional variance below this fraction of its prior variance."""


@dataclass(frozen=True)
class Parametrisation:
    """Per grouping factor, how many leading effects are sampled centred, and at which fixed effects.

    Attributes
    ----------
    centred
        Factor -> number ``q_c`` of leading effects sampled centred (absent: 0, non-centred).
    absorbed
        Factor -> for each centred effect, the column of X whose coefficient is its mean ``m`` (-1: mean 0).
    """

    centred: Mapping[str, int] = field(default_factory=dict)
    absorbed: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def names(self, design: Design) -> list[str]:
        """The centred effects as ``factor:effect`` labels."""
        return [f"{b.factor}:{e}" for b in design.blocks for e in b.effect_names[: self.centred.get(b.factor, 0)]]


def parametrisation(design: Design, centered: Sequence[str] | str = (), reml: Any = None) -> Parametrisation:
    """Resolve ``centered`` (see the module notation) into a :class:`Parametrisation`.

    Parameters
    ----------
    design
        The design.
    centered
        Factor names and ``factor:effect`` labels, or ``"auto"``.
    reml
        The REML fit ``"auto"`` reads (fitted here when not given).
    """
    if isinstance(centered, str):
        if centered != "auto":
            centered = [centered]
        else:
            return _auto(design, reml)
    factors = {b.factor: b for b in design.blocks}
    counts: dict[str, int] = {}
    for item in centered:
        factor, effect = (item, "") if item in factors else next(
            ((f, item[len(f) + 1:]) for f in factors if item.startswith(f + ":")), (item, ""))
        block = factors.get(factor)
        if block is None:
            raise SpecError(f"centered names an unknown grouping factor in {item!r}.", given=list(centered),
                            fix=f"Use factors {list(factors)} or 'factor:effect', or 'auto'.")
        if effect and effect not in block.effect_names:
            raise SpecError(f"{factor} has no random effect {effect!r}.", given=item,
                            fix=f"Use one of {list(block.effect_names)}.")
        n = block.effect_names.index(effect) + 1 if effect else block.q
        counts[factor] = max(counts.get(factor, 0), n)
    return _with_absorbed(design, counts)


def _with_absorbed(design: Design, counts: Mapping[str, int]) -> Parametrisation:
    """Pair every centred effect with the identical column of X it absorbs; each column of X is used once."""
    absorbed: dict[str, tuple[int, ...]] = {}
    taken: set[int] = set()
    for block in design.blocks:
        n = counts.get(block.factor, 0)
        if n == 0:
            continue
        match = []
        for j in range(n):
            k = next((k for k in range(design.p) if k not in taken
                      and np.array_equal(block.Z[:, j], design.X[:, k])), -1)
            match.append(k)
            if k >= 0:
                taken.add(k)
        absorbed[block.factor] = tuple(match)
    return Parametrisation({f: n for f, n in counts.items() if n}, absorbed)


def shrinkage(design: Design, reml: Any) -> dict[str, np.ndarray]:
    """Per factor, ``mean_l C_l[j, j] / D[j, j]`` for every effect ``j`` at the REML estimates (NaN where
    ``D[j, j]`` is 0): near 0, the subjects' data pin the effect down; near 1, they say little about it."""
    out = {}
    s2 = reml.sigma**2
    for block, D in zip(design.blocks, reml.D, strict=True):
        d = np.diag(D)
        if np.any(d <= 1e-12 * max(1.0, d.max())):
            out[block.factor] = np.full(block.q, np.nan)
            continue
        ZtZ = np.zeros((block.n_levels, block.q, block.q))
        np.add.at(ZtZ, block.group_index, block.Z[:, :, None] * block.Z[:, None, :])
        C = np.linalg.inv(np.linalg.inv(D)[None] + ZtZ / s2)
        out[block.factor] = np.diagonal(C, axis1=1, axis2=2).mean(axis=0) / d
    return out


def _auto(design: Design, reml: Any) -> Parametrisation:
    if reml is None:
        reml = fit_ml(design, "REML")
    counts = {}
    for factor, ratio in shrinkage(design, reml).items():
        n = 0
        while n < ratio.size and ratio[n] < AUTO_THRESHOLD:
            n += 1
        counts[factor] = n
    return _with_absorbed(design, counts)
