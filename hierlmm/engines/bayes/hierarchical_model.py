"""The Bayesian hierarchical model as a PyMC model, with two ways to sample it.

Stage 3 of the pipeline for the Bayesian engine: ``Design -> BayesModel`` (a PyMC model plus what is needed to
interpret its draws).

Notation
--------
``y_i = X_i beta + sum_k Z_ki b_ki + e_i``, ``b_ki ~ N(0, D_k)``, ``e_i ~ N(0, sigma^2 I)``; priors in
:mod:`hierlmm.engines.bayes.priors`. Every block's ``D_k = L_k L_k'``: a full (pdSymm) block's ``L_k`` comes from PyMC's
``LKJCholeskyCov`` (SDs and an LKJ correlation matrix, so D is positive definite), a diagonal one's from its SDs;
the other structures (pdIdent, pdCompSymm, pdBlocked) as :mod:`hierlmm.engines.bayes.random_effects_covariance` says.

- ``sampler="joint"``: NUTS over everything. ``b_k`` is non-centred (``b_k = z_k L_k'``, ``z_k ~ N(0, I)``) unless
  ``centered`` asks for some of its effects centred (:mod:`hierlmm.engines.bayes.parametrisation`).
- ``sampler="marginal"``: NUTS over ``(beta, D, sigma)`` on the exact marginalised likelihood
  (:mod:`hierlmm.kernels.marginalised_loglik`); afterwards every ``b_i`` is drawn exactly from ``p(b_i | y_i, theta)``
  for every posterior draw (:mod:`hierlmm.engines.bayes.conditional_effects`). Crossed factors are all integrated out
  too, through the global cross-products (:mod:`hierlmm.kernels.crossed_loglik`).

Free parameters are named ``beta_centred`` (fixed effects of the centred design), ``sigma``, and per block
``chol_<factor>`` (LKJ) or ``sd_<factor>`` (diagonal), or as :mod:`hierlmm.engines.bayes.random_effects_covariance`
says, and (joint) ``z_<factor>`` or centred ``c_<factor>``. The model has no PyMC deterministics on purpose (nutpie
would compile a second function for them, seconds per fit): ``beta``, ``sd_<factor>``, ``cor_<factor>`` and
``b_<factor>`` are computed from the draws afterwards (:func:`hierlmm.fit_bayes`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from hierlmm.design.design import Design
from hierlmm.design.sufficient_stats import is_crossed
from hierlmm.engines.bayes.centring import CentredFixedEffects, centring, uncentred
from hierlmm.engines.bayes.parametrisation import Parametrisation, parametrisation
from hierlmm.engines.bayes.priors import Priors, default_priors, with_overrides
from hierlmm.engines.bayes.random_effects_covariance import block_factor
from hierlmm.engines.bayes.random_effects_covariance import coords as block_coords
from hierlmm.errors import SpecError
from hierlmm.kernels.crossed_loglik import CrossedStats, crossed_loglik
from hierlmm.kernels.marginalised_loglik import MarginalisedStats, stacked_factor
from hierlmm.kernels.marginalised_op import marginalised_loglik_op

SAMPLERS = ("marginal", "joint")


def var_name(kind: str, factor: str) -> str:
    """PyMC variable name of a block's quantity (``sd_patient``, ``b_id:eye``)."""
    return f"{kind}_{factor}"


def sd_label(factor: str, effect: str) -> str:
    """Reported name of a random-effect SD: ``sd[patient:obstime]``."""
    return f"sd[{factor}:{effect}]"


def cor_label(factor: str, first: str, second: str) -> str:
    """Reported name of a random-effects correlation: ``cor[patient:(Intercept),obstime]``."""
    return f"cor[{factor}:{first},{second}]"


@dataclass(frozen=True, eq=False)
class BayesModel(CentredFixedEffects):
    """A PyMC model of a design and how to read its draws.

    Attributes
    ----------
    design, priors
        What is modelled, with which priors.
    sampler
        ``"marginal"`` or ``"joint"``.
    centered
        The effects the joint sampler samples centred, as ``factor:effect`` labels.
    model
        The ``pymc.Model``.
    x_mean
        Column means used to centre X (0 for the intercept column).
    stats
        Per-subject statistics (marginal sampler; also used for pointwise log-likelihoods); for crossed factors the
        global cross-products (:class:`~hierlmm.kernels.crossed_loglik.CrossedStats`).
    intercept
        Column of X holding the intercept (``None`` without one): the only coefficient centring changes.
    parametrisation
        How the joint sampler parametrises each block (:class:`~hierlmm.engines.bayes.parametrisation.Parametrisation`).
    """

    design: Design
    priors: Priors
    sampler: str
    centered: tuple[str, ...]
    model: Any
    x_mean: np.ndarray
    stats: MarginalisedStats | CrossedStats
    intercept: int | None = None
    parametrisation: Parametrisation = field(default_factory=Parametrisation)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle what the model is compiled from (the PyMC model holds compiled functions that do not pickle):
        unpickling compiles it again (:func:`rebuild_bayes_model`)."""
        return rebuild_bayes_model, (self.design, self.priors, self.sampler, self.parametrisation)


def rebuild_bayes_model(design: Design, priors: Priors, sampler: str, par: Parametrisation) -> BayesModel:
    """The :class:`BayesModel` of ``design`` compiled again from what defines it (its priors, sampler and the joint
    sampler's parametrisation): what a pickled or saved fit holds (:func:`hierlmm.load`)."""
    return build_bayes_model(design, priors=priors, sampler=sampler, centered=par if sampler == "joint" else ())


def build_bayes_model(
    design: Design,
    *,
    priors: Priors | Mapping[str, Any] | None = None,
    sampler: str = "marginal",
    centered: Sequence[str] | str | Parametrisation = (),
    reml: Any = None,
) -> BayesModel:
    """Compile a design to a PyMC model (see the module notation).

    Parameters
    ----------
    design
        The design (from :func:`hierlmm.build_design`).
    priors
        A :class:`Priors`, or overrides of the defaults (see :func:`hierlmm.engines.bayes.priors.with_overrides`).
    sampler
        ``"marginal"`` (default) or ``"joint"``.
    centered
        Random effects the joint sampler samples centred: factor names, ``factor:effect`` labels, or ``"auto"``
        (:func:`hierlmm.engines.bayes.parametrisation.parametrisation`), or a resolved
        :class:`~hierlmm.engines.bayes.parametrisation.Parametrisation`.
    reml
        A REML fit of the design, read by ``centered="auto"`` (fitted when needed and not given).
    """

    if sampler not in SAMPLERS:
        raise SpecError("Unknown sampler.", given=sampler, fix="Use sampler='marginal' or sampler='joint'.")
    if centered and sampler == "marginal":
        raise SpecError("centered applies to the joint sampler only (the marginal one integrates b out).",
                        given=centered, fix="Use sampler='joint', or drop centered.")
    if sampler != "joint":
        par = Parametrisation()
    else:
        par = centered if isinstance(centered, Parametrisation) else parametrisation(design, centered, reml)
    if not isinstance(priors, Priors):
        priors = with_overrides(default_priors(design), design, priors)
    crossed = is_crossed(design)
    stats = CrossedStats.of(design) if crossed else MarginalisedStats.of(design)
    Xc, x_mean, intercept = centring(design)
    coords: dict[str, Any] = {"fixef": list(design.fixef_names), "obs": np.arange(design.n_obs)}
    for block in design.blocks:
        coords[f"{block.factor}__effect"] = list(block.effect_names)
        coords[f"{block.factor}__effect_bis"] = list(block.effect_names)
        coords[f"{block.factor}__level"] = list(block.levels)
        coords.update(block_coords(block))
        n_centred = par.centred.get(block.factor, 0)
        if n_centred:
            coords[f"{block.factor}__centred"] = list(block.effect_names[:n_centred])
            if n_centred < block.q:
                coords[f"{block.factor}__noncentred"] = list(block.effect_names[n_centred:])
    with pm.Model(coords=coords) as model:
        beta_c = pm.Normal("beta_centred", mu=np.array(priors.beta_mu), sigma=np.array(priors.beta_sigma),
                           dims="fixef")
        beta = uncentred(beta_c, x_mean, intercept)  # hierlmm.engines.bayes.centring
        sigma = pm.HalfStudentT("sigma", nu=3, sigma=priors.sigma_scale)
        chols = [block_factor(pm, pt, block, priors) for block in design.blocks]
        if sampler == "marginal":
            loglik = (crossed_loglik(stats, beta, chols, sigma) if crossed  # all integrated out: crossed_marginal
                      else marginalised_loglik_op(stats, beta, stacked_factor(stats.subject, chols), sigma))
            pm.Potential("marginalised_loglik", loglik)
        else:
            mu = pt.dot(pt.as_tensor(Xc), beta_c)
            for block, chol in zip(design.blocks, chols, strict=True):
                b = _block_effects(pm, pt, block, chol, beta, par)
                mu = mu + (pt.as_tensor(block.Z) * b[block.group_index]).sum(axis=1)
            pm.Normal("y", mu=mu, sigma=sigma, observed=design.y, dims="obs")
    return BayesModel(design, priors, sampler, tuple(par.names(design)), model, x_mean, stats, intercept, par)


def _block_effects(pm: Any, pt: Any, block: Any, chol: Any, beta: Any, par: Parametrisation) -> Any:
    """A block's ``b`` (levels x effects) in the joint model, parametrised as ``par`` says (module notation of
    :mod:`hierlmm.engines.bayes.parametrisation`)."""
    f, level = block.factor, f"{block.factor}__level"
    n = par.centred.get(f, 0)
    if n == 0:
        return pt.dot(pm.Normal(var_name("z", f), 0.0, 1.0, dims=(level, f"{f}__effect")), chol.T)
    m = pt.stack([beta[k] if k >= 0 else pt.as_tensor(0.0) for k in par.absorbed[f]])
    dims = (level, f"{f}__centred")
    if n == 1:
        c = pm.Normal(var_name("c", f), mu=m, sigma=chol[0, 0], dims=dims)
        z_c = (c - m) / chol[0, 0]
    else:
        c = pm.MvNormal(var_name("c", f), mu=m, chol=chol[:n, :n], dims=dims)
        z_c = pt.linalg.solve_triangular(chol[:n, :n], (c - m).T, lower=True).T
    if n == block.q:
        return c - m
    z_r = pm.Normal(var_name("z", f), 0.0, 1.0, dims=(level, f"{f}__noncentred"))
    return pt.dot(pt.concatenate([z_c, z_r], axis=1), chol.T)
