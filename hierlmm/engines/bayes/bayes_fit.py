"""Bayesian fits: sample a :class:`~hierlmm.engines.bayes.hierarchical_model.BayesModel` with NUTS (nutpie) into an
ArviZ DataTree.

Notation
--------
Parameters are reported with the command line's names: ``beta[NAME]`` (R's column names), ``sd[FACTOR:EFFECT]``,
``cor[FACTOR:EFFECT1,EFFECT2]`` and ``sigma``. The DataTree holds ``posterior`` (``beta``, ``sigma``, per block
``sd_<factor>``, ``cor_<factor>``, ``b_<factor>`` with dims ``(<factor>__level, <factor>__effect)``),
``sample_stats``, ``observed_data`` and ``log_likelihood`` with two variables: ``y`` (per observation, conditional
on ``b``: ``log N(y_ij | x_ij'beta + z_ij'b_i, sigma^2)``) and ``y_subject`` (per subject of the outermost factor,
marginal: ``log N(y_i | X_i beta, V_i)``), for LOO by observation or by subject. Crossed grouping factors have no
subjects, hence no ``y_subject`` (:mod:`hierlmm.kernels.crossed_loglik`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import arviz_base as azb
import arviz_stats as azs
import numpy as np
import pandas as pd
import pymc as pm

from hierlmm.design.design import Design
from hierlmm.engines.bayes.hierarchical_model import BayesModel, build_bayes_model, cor_label, sd_label, var_name
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.bayes.posterior_tree import block_factors, complete_tree, portable_sample_stats
from hierlmm.engines.bayes.priors import Priors, default_priors, with_overrides
from hierlmm.engines.bayes.random_effects_covariance import set_initial_values
from hierlmm.engines.bayes.sampling import SamplerOptions, sample_posterior
from hierlmm.engines.reml.start import starting_fit
from hierlmm.structures.random_effects import correlated_pairs


def _reml_start(design: Design) -> Any:
    """The REML fit that starts the chains (and that ``centered="auto"`` reads); ``None`` if it fails."""
    return starting_fit(design, "REML")


def _initial_values(bm: BayesModel, reml: Any) -> None:
    """Start the chains at the REML estimates (jittered); REML costs a fraction of a second."""
    design = bm.design
    if reml is None:
        return
    model = bm.model
    model.set_initval(model["beta_centred"], bm.to_centred(reml.beta))
    model.set_initval(model["sigma"], max(reml.sigma, 1e-3))
    for block, D in zip(design.blocks, reml.D, strict=True):
        set_initial_values(model, block, bm.priors, D)


@dataclass(frozen=True, eq=False)
class BayesFit(PosteriorResult):
    """A Bayesian fit: the model, its DataTree, and summaries in the chapter's names.

    Attributes
    ----------
    bayes_model
        The compiled :class:`~hierlmm.engines.bayes.hierarchical_model.BayesModel` (design, priors, sampler).
    tree
        The ArviZ DataTree (see the module notation for its groups).
    seconds
        Wall time of the whole fit, compilation included.
    """

    bayes_model: BayesModel
    tree: Any
    seconds: float

    @property
    def design(self) -> Design:
        """The design that was fitted."""
        return self.bayes_model.design

    @property
    def sampler(self) -> str:
        """``"marginal"`` or ``"joint"``."""
        return self.bayes_model.sampler

    def _D_draws(self) -> list[np.ndarray]:  # the chapter's D
        """Every block's ``D = L L'`` per draw, (S, q, q)."""
        factors = block_factors(self.bayes_model, self.tree["posterior"].to_dataset())
        return [(L @ np.swapaxes(L, -1, -2)).reshape(-1, *L.shape[2:]) for L in factors]

    def parameter_draws(self) -> dict[str, np.ndarray]:
        """Draws (chain, draw) of every reported parameter, by its reported name."""
        post = self.tree["posterior"]
        out: dict[str, np.ndarray] = {}
        beta = post["beta"].values
        for j, name in enumerate(self.design.fixef_names):
            out[f"beta[{name}]"] = beta[..., j]
        for block in self.design.blocks:
            sd = post[var_name("sd", block.factor)].values
            for j, name in enumerate(block.effect_names):
                out[sd_label(block.factor, name)] = sd[..., j]
            pairs = correlated_pairs(block)
            if pairs:
                cor = post[var_name("cor", block.factor)].values
                for j, k in pairs:
                    out[cor_label(block.factor, block.effect_names[k], block.effect_names[j])] = cor[..., j, k]
        out["sigma"] = post["sigma"].values
        return out

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """mean, sd, equal-tailed ``ci_prob`` interval, R-hat, bulk/tail ESS and MCSE of every parameter."""
        return summarise_draws(self.parameter_draws(), ci_prob)

    def ranef(self, ci_prob: float = 0.95) -> dict[str, pd.DataFrame]:
        """Posterior mean, sd and equal-tailed interval of every ``b_i``, per grouping factor."""
        out = {}
        lo, hi = (1 - ci_prob) / 2, (1 + ci_prob) / 2
        for block in self.design.blocks:
            b = self.tree["posterior"][var_name("b", block.factor)].values  # (C, D, levels, q)
            flat = b.reshape(-1, block.n_levels, block.q)
            frames = {}
            for j, name in enumerate(block.effect_names):
                frames[(name, "mean")] = flat[:, :, j].mean(axis=0)
                frames[(name, "sd")] = flat[:, :, j].std(axis=0, ddof=1)
                frames[(name, "lower")] = np.quantile(flat[:, :, j], lo, axis=0)
                frames[(name, "upper")] = np.quantile(flat[:, :, j], hi, axis=0)
            out[block.factor] = pd.DataFrame(frames, index=pd.Index(block.levels, name=block.factor))
        return out

    def diagnostics(self) -> Diagnostics:
        """Divergences, R-hat, ESS and E-BFMI, each with what to do about it."""
        return diagnose(self)


def summarise_draws(draws: Mapping[str, np.ndarray], ci_prob: float = 0.95) -> pd.DataFrame:
    """mean, sd, equal-tailed ``ci_prob`` interval, R-hat, bulk/tail ESS and MCSE of draws (chain, draw) by name."""

    tree = azb.from_dict({"posterior": dict(draws)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        table = azs.summary(tree, ci_prob=ci_prob, ci_kind="eti", round_to="none")
    table = pd.DataFrame(table).astype(float).reindex(list(draws))
    lo, hi = [c for c in table.columns if c.endswith("_lb")][0], [c for c in table.columns if c.endswith("_ub")][0]
    return table.rename(columns={lo: "lower", hi: "upper"})[
        ["mean", "sd", "lower", "upper", "r_hat", "ess_bulk", "ess_tail", "mcse_mean"]
    ]


@dataclass(frozen=True)
class Diagnostics:
    """Sampler diagnostics and advice (``problems`` is empty when everything passed)."""

    divergences: int
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    min_bfmi: float
    problems: tuple[str, ...]
    divergent_at: tuple[tuple[str, float], ...] = ()  # (parameter, quantile): see divergence_quantiles

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems

    def __str__(self) -> str:
        head = (f"divergences {self.divergences}, max R-hat {self.max_rhat:.3f}, min bulk ESS {self.min_ess_bulk:.0f}, "
                f"min tail ESS {self.min_ess_tail:.0f}, min E-BFMI {self.min_bfmi:.2f}")
        return head + ("" if self.ok else "\n" + "\n".join(f"- {p}" for p in self.problems))


def divergence_quantiles(draws: Mapping[str, np.ndarray], diverging: np.ndarray,
                         top: int = 3) -> tuple[tuple[str, float], ...]:
    """Where divergent transitions happen: the ``top`` parameters whose values at the divergent draws are the most
    extreme within their posterior.

    Parameters
    ----------
    draws
        Draws (chain, draw) of every reported parameter (:meth:`BayesFit.parameter_draws`).
    diverging
        nutpie's ``diverging`` flags (chain, draw).
    top
        How many parameters to return.

    Returns
    -------
    tuple
        ``(name, quantile)`` pairs, most extreme first: ``quantile`` is the mean over the divergent draws of the share
        of all draws below the value (near 0 or 1: the divergences sit in that parameter's tail, where the geometry
        changes; near 0.5 for every parameter: no parameter's tail stands out). Empty without divergences.
    """
    flags = np.asarray(diverging, dtype=bool).ravel()
    if not flags.any():
        return ()
    found = []
    for name, values in draws.items():
        flat = np.asarray(values, dtype=float).ravel()
        if flat.size != flags.size:
            continue
        ordered = np.sort(flat)
        q = float(np.mean(np.searchsorted(ordered, flat[flags], side="right") / flat.size))
        found.append((name, q))
    found.sort(key=lambda item: -abs(item[1] - 0.5))
    return tuple(found[:top])


def diagnose(fit: BayesFit, rhat_max: float = 1.01, ess_min: float = 400.0, bfmi_min: float = 0.3) -> Diagnostics:
    """Check a fit; every problem found comes with the fix to try."""

    table = fit.summary()
    stats = fit.tree["sample_stats"]
    divergences = int(stats["diverging"].values.sum()) if "diverging" in stats else 0
    bfmi = float(np.min(azs.bfmi(fit.tree)["energy"].values)) if "energy" in stats else np.nan
    max_rhat, min_bulk, min_tail = (float(table["r_hat"].max()), float(table["ess_bulk"].min()),
                                    float(table["ess_tail"].min()))
    problems = []
    joint = getattr(fit, "sampler", "marginal") == "joint"
    divergent_at: tuple[tuple[str, float], ...] = ()
    if divergences:
        divergent_at = divergence_quantiles(fit.parameter_draws(), stats["diverging"].values)
        where = ", ".join(f"{name} at its {100 * q:.1f}% quantile" for name, q in divergent_at)
        problems.append(
            f"{divergences} divergent transitions: NUTS met geometry it cannot follow" + (
                " (typically the funnel of sampled random effects). Use sampler='marginal' (random effects "
                "integrated out), or raise target_accept (e.g. 0.95), or let hierlmm choose which effects to centre "
                "(centered='auto')." if joint else
                " (the random effects are integrated out, so a variance, correlation or range the data barely "
                "inform). Raise target_accept (e.g. 0.95), or give that parameter a tighter prior.")
            + (f" The divergent draws sit at: {where}." if where else "")
        )
    if max_rhat > rhat_max:
        worst = table["r_hat"].idxmax()
        hint = ("With the joint sampler, centred random effects often mix far better when every subject has "
                "several observations: centered='auto' (or sampler='marginal'). " if fit.sampler == "joint" else "")
        problems.append(f"R-hat {max_rhat:.3f} > {rhat_max} ({worst}): the chains disagree. {hint}Run longer "
                        "(more tune and draws) and check for several modes.")
    if min_bulk < ess_min or min_tail < ess_min:
        worst = table["ess_bulk"].idxmin()
        problems.append(f"Effective sample size below {ess_min:.0f} (bulk {min_bulk:.0f}, tail {min_tail:.0f}; "
                        f"{worst}): increase draws" + (", or use sampler='marginal'." if joint else "."))
    if bfmi < bfmi_min:
        problems.append(f"E-BFMI {bfmi:.2f} < {bfmi_min}: the energy distribution is poorly explored (heavy tails or "
                        "a funnel). " + ("Reparameterise: sampler='marginal', or non-centred random effects." if joint
                                         else "Look for a parameter the data barely inform (a tighter prior)."))
    return Diagnostics(divergences, max_rhat, min_bulk, min_tail, bfmi, tuple(problems), divergent_at)


def fit_bayes_hierarchical(
    design: Design,
    *,
    sampler: str = "marginal",
    options: SamplerOptions | None = None,
    priors: Mapping[str, Any] | Priors | None = None,
    centered: Sequence[str] | str = (),
    pointwise: bool | None = None,
) -> BayesFit:
    """Sample the posterior of the hierarchical model of ``design`` with NUTS (nutpie): the driver behind
    :func:`hierlmm.fit_bayes` for independent errors (its arguments are documented there)."""
    t0 = time.perf_counter()
    options = (options or SamplerOptions()).with_default_tune(1000)
    if not isinstance(priors, Priors):  # checked (hierlmm.engines.bayes.priors.check_priors) before the REML start
        priors = with_overrides(default_priors(design), design, priors)
    reml = _reml_start(design)
    bm = build_bayes_model(design, priors=priors, sampler=sampler, centered=centered, reml=reml)
    _initial_values(bm, reml)
    # joint sampler, measured on AIDS (docs/bayes.md): Stan's variance-based mass matrix and a higher acceptance mix
    # better
    nuts = options.nuts_settings(**({"adaptation": "draw_diag", "target_accept": 0.9} if sampler == "joint" else {}))
    logging.getLogger("pymc").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could not link to a BLAS.*")
        warnings.filterwarnings("ignore", message=".*BLAS.*", category=UserWarning)
        if sampler == "marginal":  # a handful of parameters: the cached route (hierlmm.engines.bayes.sampling)
            tree = sample_posterior(bm.model, options, **nuts)
        else:  # hundreds of parameters: nutpie's compiled callback is worth its compilation
            tree = pm.sample(model=bm.model, nuts_sampler="nutpie", chains=options.chains, cores=options.cores,
                             draws=options.draws, tune=options.tune, random_seed=options.seed,
                             progressbar=options.progressbar, quiet=not options.progressbar, nuts=nuts)
    complete_tree(bm, tree, np.random.default_rng(options.seed), pointwise)
    portable_sample_stats(tree)
    return BayesFit(bm, tree, time.perf_counter() - t0)
