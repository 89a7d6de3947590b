"""Bayesian fits with serially correlated and/or heteroscedastic errors: NUTS on the marginalised model, then exact
draws of ``b``.

Stage 4 for ``correlation=`` and ``weights=``: ``CorrelatedBayesModel -> CorrelatedBayesFit``
(:mod:`hierlmm.engines.bayes.correlated_model`).

Notation
--------
Per posterior draw and subject, with ``C_i = chol(V_i)``, ``r_i = y_i - X_i beta`` and ``G_i = C_i^-1 Z_i L``
(``D = L L'``), the random effects given the data are Gaussian::

    b_i | y_i ~ N(L G_i' C_i^-1 r_i,  L (I - G_i'G_i) L'),

drawn exactly for every draw, as the marginal sampler of :mod:`hierlmm.engines.bayes.posterior_tree` does with iid
errors. The DataTree's ``posterior`` holds ``beta``, ``sigma``, ``sd_<factor>`` (and ``cor_<factor>``), ``b_<factor>``,
the correlation parameters under nlme's names (``range``, ``phi``, ``rho``, ``nugget``) and ``omega`` (log SD ratios,
``log s = M omega``); summaries report the variance function's parameters as nlme does (varIdent's
``sd_ratio[<stratum>]`` = ``exp(omega)``, varPower's ``power``, varExp's ``expon``). ``log_likelihood/y_subject`` is
``log N(y_i | X_i beta, V_i)`` per subject (for LOO by subject).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from hierlmm.design.design import Design
from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.correlated_model import (
    CorrelatedBayesModel,
    build_correlated_bayes_model,
)
from hierlmm.engines.bayes.hierarchical_model import var_name
from hierlmm.engines.bayes.posterior_tree import _derived_parameters, block_factors, portable_sample_stats
from hierlmm.engines.bayes.random_effects_covariance import set_initial_values
from hierlmm.engines.bayes.sampling import SamplerOptions, sample_posterior
from hierlmm.engines.reml.correlated_fit import fit_correlated
from hierlmm.errors import SpecError
from hierlmm.kernels.small_linalg import LOG_2PI
from hierlmm.structures.error_parameters import ErrorParameters
from hierlmm.structures.serial_correlation import CorrelationStructure, correlation_values
from hierlmm.structures.variance_functions import parse_weights

CHUNK = 250  # draws per vectorised chunk of the post-processing


def free_draws(bm: CorrelatedBayesModel, post: Any) -> dict[str, np.ndarray]:
    """The correlation structure's free variables (:attr:`~hierlmm.structures.serial_correlation.CorrelationStructure.
    free_names`) from a posterior; none without a structure."""
    names = () if bm.structure is None else bm.structure.free_names
    return {k: np.asarray(post[k].values) for k in names}


def subject_terms(bm: CorrelatedBayesModel, beta: np.ndarray, L: np.ndarray, sigma: np.ndarray,
                  free: Mapping[str, np.ndarray], omega: np.ndarray | None,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Per draw (leading axis S) and subject: ``log p(y_i)`` (S, subjects) and, given ``rng``, one exact draw of
    every ``b_i`` (S, subjects, q) (module notation). ``beta`` (S, p), ``L`` (S, q, q), ``sigma`` (S,)."""
    S, q = beta.shape[0], L.shape[-1]
    n_levels = bm.design.blocks[0].n_levels
    ll = np.zeros((S, n_levels))
    b = np.zeros((S, n_levels, q)) if rng is not None else None
    errors = ErrorParameters(bm.structure, bm.n_max, sigma, omega, free=dict(free))
    for batch in bm.batches:
        n = batch.y.shape[1]
        r = batch.y[None] - np.einsum("knp,sp->skn", batch.X, beta)
        ZL = np.einsum("knq,sqr->sknr", batch.Z, L)
        E = errors.matrices(batch.distances, batch.M)  # sigma^2 S R S, (S, k, n, n)
        C = np.linalg.cholesky(ZL @ np.swapaxes(ZL, -1, -2) + E)
        w = np.linalg.solve(C, r[..., None])  # C is triangular; batched LAPACK solve is fast at these sizes
        logdet = 2 * np.log(np.diagonal(C, axis1=-2, axis2=-1)).sum(-1)
        ll[:, batch.subjects] = -0.5 * (n * LOG_2PI + logdet + (w[..., 0] ** 2).sum(-1))
        if rng is not None:
            G = np.linalg.solve(C, ZL)  # (S, k, n, q)
            Gt = np.swapaxes(G, -1, -2)
            mean_u = (Gt @ w)[..., 0]
            cov_u = np.eye(q) - Gt @ G
            eps = rng.standard_normal(mean_u.shape)
            u = mean_u + (np.linalg.cholesky(cov_u + 1e-12 * np.eye(q)) @ eps[..., None])[..., 0]
            b[:, batch.subjects] = np.einsum("sqr,skr->skq", L, u)
    return ll, b


def initial_values(bm: CorrelatedBayesModel, reml: Any) -> None:
    """Start the chains at the REML estimates (jittered by the sampler); any REML failure leaves PyMC's defaults."""
    if reml is None:
        return
    model, block = bm.model, bm.design.blocks[0]
    model.set_initval(model["beta_centred"], bm.to_centred(reml.beta))
    if bm.log_sd_centre is not None:  # the prior's scale: the SD at the mean of M
        omega = reml.omega if reml.omega.size == len(bm.log_sd_names) else np.zeros(len(bm.log_sd_names))
        omega = np.clip(omega, -3.0, 3.0)
        model.set_initval(model["sigma_centred"], max(reml.sigma * float(np.exp(bm.log_sd_centre @ omega)), 1e-3))
    else:
        model.set_initval(model["sigma"], max(reml.sigma, 1e-3))
    set_initial_values(model, block, bm.priors, reml.D[0])
    params = reml.correlation_parameters
    if "range" in model.named_vars:  # bounded away from the flat tails, where REML may stop
        rng_value = params["range"] if "range" in params else -1.0 / np.log(np.clip(params["phi"], 1e-3, 0.999))
        lo, hi = 0.05 * bm.correlation_priors.range_median, 20 * bm.correlation_priors.range_median
        model.set_initval(model["range"], float(np.clip(rng_value, lo, hi)))
    if "nugget" in model.named_vars:
        model.set_initval(model["nugget"], float(np.clip(params["nugget"], 0.05, 0.95)))
    if "omega" in model.named_vars and reml.omega.size == len(bm.log_sd_names):
        model.set_initval(model["omega"], np.clip(reml.omega, -3.0, 3.0))


def _reml(bm: CorrelatedBayesModel, data: pd.DataFrame, weights: Any) -> Any:
    """The REML fit the chains start from (with the variance function, when it is known), or None."""
    if bm.log_sd_names and weights is None:  # a bare log-SD design: REML knows only variance functions
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_correlated(bm.design, data, bm.structure, "REML", weights=weights)
    except Exception:  # noqa: BLE001 - the REML start is a convenience
        return None


@dataclass(frozen=True, eq=False)
class CorrelatedBayesFit(BayesFit):
    """A Bayesian fit with serially correlated and/or heteroscedastic errors:
    :class:`~hierlmm.engines.bayes.bayes_fit.BayesFit`'s methods, with the correlation parameters and the variance
    function's (nlme's names; ``omega[...]`` for a bare log-SD design) added to ``summary()``."""

    @property
    def structure(self) -> CorrelationStructure | None:
        """The correlation structure (None: independent errors)."""
        return self.bayes_model.structure

    def parameter_draws(self) -> dict[str, np.ndarray]:
        """Draws (chain, draw) of every reported parameter, by its reported name."""
        out = super().parameter_draws()
        post = self.tree["posterior"]
        for name in ("range", "phi", "rho", "nugget"):
            if name in post:
                out[name] = post[name].values
        if "omega" in post:
            variance = self.bayes_model.variance
            omega = post["omega"].values
            labels = [f"omega[{n}]" for n in self.bayes_model.log_sd_names] if variance is None else variance.labels
            values = omega if variance is None else variance.natural(omega)
            for j, label in enumerate(labels):
                out[label] = values[..., j]
        return out

    def variance_labels(self) -> list[str]:
        """The summary rows of the variance function's parameters (empty without one)."""
        variance, names = self.bayes_model.variance, self.bayes_model.log_sd_names
        return list(variance.labels) if variance is not None else [f"omega[{n}]" for n in names]

    def correlation(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """Posterior summaries of the correlation parameters and the variance function's."""
        table = self.summary(ci_prob)
        keep = set(self.variance_labels()) | {"range", "phi", "rho", "nugget"}
        return table.loc[[i for i in table.index if i in keep]]


def fit_bayes_correlated(
    design: Design,
    data: pd.DataFrame,
    correlation: CorrelationStructure | str | None,
    *,
    weights: Any = None,
    log_sd_design: Any = None,
    options: SamplerOptions | None = None,
    priors: Mapping[str, Any] | None = None,
    chains: int | None = None,
    draws: int | None = None,
    tune: int | None = None,
    cores: int | None = None,
    seed: int | None = None,
    target_accept: float | None = None,
    progressbar: bool | None = None,
    **nuts: Any,
) -> CorrelatedBayesFit:
    """Sample the posterior of ``design`` with serially correlated and/or heteroscedastic errors by NUTS (nutpie),
    ``b`` integrated out.

    Parameters
    ----------
    design, data
        The design (one random-effects grouping factor) and the data it was built from.
    correlation
        nlme's syntax (``"corExp(form = ~ obstime | patient)"``), a
        :class:`~hierlmm.structures.serial_correlation.CorrelationStructure`, or None (independent errors).
    weights
        A variance function (:mod:`hierlmm.structures.variance_functions`) or nlme's syntax (``"varIdent(form = ~ 1 |
        drug)"``); its parameters are reported under nlme's names, and the chains start from the REML fit with it.
    log_sd_design
        Heteroscedastic errors: ``(M, names)`` with log SD ratio = ``M omega`` (see
        :func:`hierlmm.engines.bayes.correlated_model.build_correlated_bayes_model`); ``None``: homoscedastic.
    options
        NUTS settings (:class:`~hierlmm.engines.bayes.sampling.SamplerOptions`), or give them as keywords
        (``chains``, ``draws``, ``tune``, ``cores``, ``seed``, ``target_accept``, ``progressbar``), not both. Here
        ``tune`` is 2000 by default with a correlation structure, 1000 without, and ``target_accept`` 0.9, with
        nutpie's low-rank mass-matrix adaptation.
    priors
        Overrides of the default priors (:mod:`hierlmm.engines.bayes.correlated_model`).
    nuts
        Further settings for ``nutpie.sample`` (e.g. ``adaptation="low_rank"``).
    """
    t0 = time.perf_counter()
    options = SamplerOptions.resolve(options, chains=chains, draws=draws, tune=tune, cores=cores, seed=seed,
                                     target_accept=target_accept, progressbar=progressbar)
    function = None
    if weights is not None:
        if log_sd_design is not None:
            raise SpecError("weights= and log_sd_design= both set the error SDs.", given={"weights": str(weights)},
                            fix="Pass one of them.")
        function = parse_weights(weights)
        log_sd_design = function.bind(design, data)
    if correlation is None and log_sd_design is None:
        raise SpecError("Neither a correlation structure nor a variance function was given: this is the plain "
                        "hierarchical model.", given={"correlation": None, "weights": None},
                        fix="Use hierlmm.fit_bayes(design), or pass correlation= or weights=.")
    bm = build_correlated_bayes_model(design, data, correlation, priors=priors, log_sd_design=log_sd_design)
    initial_values(bm, _reml(bm, data, function))
    # the chapter's Model II with corExp, 4 x 1000 draws, seeds 1-5: 1000 tuning steps left R-hat up to 1.25 (2 of 3
    # seeds over 1.01), 2000 gave R-hat <= 1.007 on all five (docs/serial_correlation.md)
    options = options.with_default_tune(2000 if bm.structure is not None else 1000)
    # nutpie's low-rank mass matrix and a higher target acceptance, measured on the chapter's Model III (corExp,
    # 4 x (1000 + 1000)): 178 s, R-hat 1.006, min bulk ESS 1247, no divergence, against 373 s, R-hat 1.012 and
    # ESS 934 with the diagonal default (which also left one divergence in Model II); docs/serial_correlation.md
    nuts = options.nuts_settings(**{"adaptation": "low_rank", "target_accept": 0.9, **nuts})
    logging.getLogger("pymc").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*BLAS.*")
        tree = sample_posterior(bm.model, options, **nuts)
    complete_correlated_tree(bm, tree, np.random.default_rng(options.seed))
    portable_sample_stats(tree)
    return CorrelatedBayesFit(bm, tree, time.perf_counter() - t0)


def complete_correlated_tree(bm: CorrelatedBayesModel, tree: Any, rng: np.random.Generator) -> None:
    """Add ``beta``, SDs and correlations, the correlation parameters, exact ``b`` draws, ``observed_data`` and
    ``log_likelihood/y_subject`` to a sampled tree."""
    design, block = bm.design, bm.design.blocks[0]
    post = tree["posterior"].to_dataset()
    C, S = post.sizes["chain"], post.sizes["draw"]
    factors = block_factors(bm, post)
    _derived_parameters(bm, post, factors)
    free = free_draws(bm, post)
    for name, values in correlation_values(bm.structure, free, bm.n_max, np).items():
        post[name] = xr.DataArray(values, dims=("chain", "draw"))
    if "sigma_centred" in post:  # nlme's sigma: the SD where the variance function's ratio is 1
        post["sigma"] = post["sigma_centred"] * np.exp(-(post["omega"].values @ bm.log_sd_centre))
    flat = {k: v.reshape(C * S) for k, v in free.items()}
    beta, L = post["beta"].values.reshape(C * S, -1), factors[0].reshape(C * S, block.q, block.q)
    sigma = post["sigma"].values.reshape(C * S)
    omega = post["omega"].values.reshape(C * S, -1) if "omega" in post else None
    lls, bs = [], []
    for i in range(0, C * S, CHUNK):
        c = slice(i, i + CHUNK)
        ll, b = subject_terms(bm, beta[c], L[c], sigma[c], {k: v[c] for k, v in flat.items()},
                              None if omega is None else omega[c], rng)
        lls.append(ll)
        bs.append(b)
    f = block.factor
    post[var_name("b", f)] = xr.DataArray(np.concatenate(bs).reshape(C, S, block.n_levels, block.q),
                                          dims=("chain", "draw", f"{f}__level", f"{f}__effect"),
                                          coords={f"{f}__level": list(block.levels),
                                                  f"{f}__effect": list(block.effect_names)})
    tree["posterior"] = xr.DataTree(post)
    tree["log_likelihood"] = xr.DataTree(xr.Dataset({"y_subject": xr.DataArray(
        np.concatenate(lls).reshape(C, S, -1), dims=("chain", "draw", "subject"),
        coords={"subject": list(block.levels)})}))
    tree["observed_data"] = xr.DataTree(xr.Dataset({"y": xr.DataArray(design.y, dims=("obs",))}))
