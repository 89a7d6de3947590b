"""The marginal model by NUTS: ``y_i ~ N(X_i beta, Z_i D Z_i' + sigma^2 I)`` with D free to be indefinite.

The Bayesian counterpart of :mod:`hierlmm.engines.reml.marginal_model`, with the same parametrisation (every ``V_i``
positive definite for every parameter value, so NUTS never meets a wall). There are no random effects in this model:
only ``beta``, ``D`` and ``sigma`` (and the intra-class correlation). Side by side with the hierarchical fit
(:func:`hierlmm.fit_bayes`), it shows what the hierarchy adds: ``D`` positive definite.

Notation
--------
``Delta = D / sigma^2 = P - kappa I`` with ``kappa = 1 / max_i lambda_max(Z_i'Z_i)`` and ``P`` positive definite.
Priors: ``beta`` and ``sigma`` as in :mod:`hierlmm.engines.bayes.priors`; ``P`` (dimensionless, in units of
``sigma^2``) has half-Student-t(3, 2.5 / r_j) standard deviations (``r_j`` the root mean square of column j of Z) and,
for two or more effects, an LKJ(1) correlation (PyMC's ``LKJCholeskyCov``). For a random intercept the implied prior of
the ICC covers its whole admissible range ``(-1/(n_max - 1), 1)``.

Per subject, with ``S_i = Z_i'Z_i``, ``c_i = Z_i'r_i`` and ``M_i = I + S_i Delta``:
``log|V_i| = n_i log sigma^2 + log|M_i|`` and ``r_i'V_i^-1 r_i = (r_i'r_i - c_i' Delta M_i^-1 c_i) / sigma^2``,
written out for one and two random effects; larger blocks use batched factorisations.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from hierlmm.design.design import Design
from hierlmm.engines.bayes.bayes_fit import Diagnostics, diagnose, summarise_draws
from hierlmm.engines.bayes.centring import CentredFixedEffects, centring, uncentred
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.bayes.posterior_tree import packed_to_chol, portable_sample_stats
from hierlmm.engines.bayes.priors import Priors, default_priors, with_overrides
from hierlmm.engines.bayes.sampling import SamplerOptions, sample_posterior
from hierlmm.engines.reml.marginal_model import check_unstructured, kappa_of
from hierlmm.errors import NotSupportedError
from hierlmm.kernels.marginalised_loglik import MarginalisedStats


def subject_terms(ms: MarginalisedStats, beta: Any, delta: Any, lib: Any) -> tuple[Any, Any]:
    """``log|M_i|`` and ``c_i' Delta M_i^-1 c_i`` for every subject (NumPy or PyTensor, ``lib`` = np or pt).

    ``beta`` (..., p) and ``delta`` (..., q, q) may carry leading draw axes (NumPy only)."""
    s = ms.subject
    c = s.Zty - (s.ZtX @ beta[..., None, :, None])[..., 0] if lib is np else s.Zty - lib.dot(s.ZtX, beta)
    S = s.ZtZ
    if s.Q > 2:  # batched factorisations: general, slower to compile and to run than the closed forms below
        M = np.eye(s.Q) + S @ delta[..., None, :, :] if lib is np else lib.eye(s.Q) + lib.matmul(S, delta)
        if lib is np:
            logdet = np.linalg.slogdet(M)[1]
            x = np.linalg.solve(M, c[..., None])[..., 0]
            quad = ((c @ delta) * x).sum(-1) if delta.ndim == 2 else (np.einsum("...mq,...qr->...mr", c, delta) * x
                                                                      ).sum(-1)
        else:
            logdet = lib.log(lib.abs(lib.linalg.det(M)))
            x = lib.linalg.solve(M, c[:, :, None])[:, :, 0]
            quad = (lib.dot(c, delta) * x).sum(axis=1)
        return logdet, quad
    if s.Q == 1:
        d = delta[..., None, 0, 0] if lib is np else delta[0, 0]
        m = 1 + S[:, 0, 0] * d
        return lib.log(m), c[..., 0] ** 2 * d / m
    d00, d01, d11 = ((delta[..., None, 0, 0], delta[..., None, 0, 1], delta[..., None, 1, 1]) if lib is np
                     else (delta[0, 0], delta[0, 1], delta[1, 1]))
    s00, s01, s11 = S[:, 0, 0], S[:, 0, 1], S[:, 1, 1]
    m00, m01 = 1 + s00 * d00 + s01 * d01, s00 * d01 + s01 * d11
    m10, m11 = s01 * d00 + s11 * d01, 1 + s01 * d01 + s11 * d11
    det = m00 * m11 - m01 * m10
    # K = Delta M^-1 (symmetric), M^-1 = [[m11, -m01], [-m10, m00]] / det
    k00 = (d00 * m11 - d01 * m10) / det
    k01 = (-d00 * m01 + d01 * m00) / det
    k11 = (-d01 * m01 + d11 * m00) / det
    c0, c1 = c[..., 0], c[..., 1]
    return lib.log(det), k00 * c0**2 + 2 * k01 * c0 * c1 + k11 * c1**2


def subject_loglik(ms: MarginalisedStats, beta: Any, delta: Any, sigma: Any, lib: Any) -> Any:
    """Per-subject log-likelihood of the marginal model (see the module notation)."""
    s = ms.subject
    s2 = sigma**2
    if lib is np:
        rr = ms.yty_i - 2 * (beta @ ms.Xty_i.T) + np.einsum("...p,mpq,...q->...m", beta, ms.XtX_i, beta)
        s2 = np.asarray(s2)[..., None]
    else:
        rr = ms.yty_i - 2 * lib.dot(ms.Xty_i, beta) + lib.dot(lib.dot(ms.XtX_i, beta), beta)
    logdet, quad = subject_terms(ms, beta, delta, lib)
    return -0.5 * (s.n_per_subject * lib.log(2 * np.pi * s2) + logdet + (rr - quad) / s2)


@dataclass(frozen=True, eq=False)
class MarginalBayesModel(CentredFixedEffects):
    """The PyMC model of a design's marginal model, and what reading its draws needs."""

    design: Design
    priors: Priors
    model: Any
    kappa: float
    stats: MarginalisedStats
    x_mean: np.ndarray
    intercept: int | None

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickle the design and the priors (the PyMC model holds compiled functions that do not pickle):
        unpickling compiles the model again."""
        return build_marginal_bayes_model, (self.design, self.priors)


def build_marginal_bayes_model(design: Design, priors: Priors | Mapping[str, Any] | None = None) -> MarginalBayesModel:
    """Compile the marginal model of ``design`` to PyMC (one grouping factor, one or two random effects)."""

    if len(design.blocks) != 1:
        raise NotSupportedError("The Bayesian marginal model supports one grouping factor (the subject).",
                                given=[b.factor for b in design.blocks],
                                fix="Use one random-effects term, e.g. (time | id), or the hierarchical model.")
    check_unstructured(design)
    if not isinstance(priors, Priors):
        priors = with_overrides(default_priors(design), design, priors, kind="marginal")
    block = design.blocks[0]
    stats = MarginalisedStats.of(design)
    kappa = kappa_of(stats.subject)
    _, x_mean, intercept = centring(design)
    rms = np.sqrt(np.mean(block.Z**2, axis=0))
    scales = np.where(rms > 0, 2.5 / np.where(rms > 0, rms, 1.0), 2.5)
    with pm.Model(coords={"fixef": list(design.fixef_names)}) as model:
        beta_c = pm.Normal("beta_centred", mu=np.array(priors.beta_mu), sigma=np.array(priors.beta_sigma),
                           dims="fixef")
        beta = uncentred(beta_c, x_mean, intercept)
        sigma = pm.HalfStudentT("sigma", nu=3, sigma=priors.sigma_scale)
        if block.q == 1:
            lam = pm.HalfStudentT("lambda", nu=3, sigma=scales[0])
            P = pt.reshape(lam**2, (1, 1))
        else:
            chol, _, _ = pm.LKJCholeskyCov("chol_P", n=block.q, eta=1.0, sd_dist=pm.HalfStudentT.dist(
                nu=3, sigma=scales, shape=block.q), compute_corr=True, store_in_trace=False)
            P = chol @ chol.T
        delta = P - kappa * pt.eye(block.q)
        pm.Potential("marginal_loglik", subject_loglik(stats, beta, delta, sigma, pt).sum())
    return MarginalBayesModel(design, priors, model, kappa, stats, x_mean, intercept)


def fit_bayes_marginal(design: Design, *, options: SamplerOptions | None = None,
                       priors: Mapping[str, Any] | None = None, chains: int | None = None, draws: int | None = None,
                       tune: int | None = None, cores: int | None = None, seed: int | None = None,
                       target_accept: float | None = None, progressbar: bool | None = None) -> MarginalBayesFit:
    """Sample the marginal model of ``design`` with NUTS (settings: ``options``, or the keywords of
    :class:`~hierlmm.engines.bayes.sampling.SamplerOptions`); returns a :class:`MarginalBayesFit`."""
    t0 = time.perf_counter()
    options = SamplerOptions.resolve(options, chains=chains, draws=draws, tune=tune, cores=cores, seed=seed,
                                     target_accept=target_accept, progressbar=progressbar).with_default_tune(1000)
    bm = build_marginal_bayes_model(design, priors)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*BLAS.*")
        tree = sample_posterior(bm.model, options, **options.nuts_settings())
    post = tree["posterior"].to_dataset()
    C, S = post.sizes["chain"], post.sizes["draw"]
    beta = bm.from_centred(post["beta_centred"].values)
    sigma = post["sigma"].values
    q = design.blocks[0].q
    if q == 1:
        P = (post["lambda"].values ** 2)[..., None, None]
    else:
        L = packed_to_chol(post["chol_P"].values, q)
        P = L @ np.swapaxes(L, -1, -2)
    delta = P - bm.kappa * np.eye(q)
    D = delta * (sigma**2)[..., None, None]
    names = list(design.blocks[0].effect_names)
    post["beta"] = xr.DataArray(beta, dims=("chain", "draw", "fixef"), coords={"fixef": list(design.fixef_names)})
    post["D"] = xr.DataArray(D, dims=("chain", "draw", "effect", "effect_bis"),
                             coords={"effect": names, "effect_bis": names})
    post["min_eigen_D"] = xr.DataArray(np.linalg.eigvalsh(D)[..., 0], dims=("chain", "draw"))
    tree["posterior"] = xr.DataTree(post)
    ll = subject_loglik(bm.stats, beta.reshape(C * S, -1), delta.reshape(C * S, q, q), sigma.reshape(C * S), np)
    tree["log_likelihood"] = xr.DataTree(xr.Dataset({"y_subject": xr.DataArray(
        ll.reshape(C, S, -1), dims=("chain", "draw", "subject"),
        coords={"subject": list(design.blocks[0].levels)})}))
    tree["observed_data"] = xr.DataTree(xr.Dataset({"y": xr.DataArray(design.y, dims=("obs",))}))
    portable_sample_stats(tree)
    return MarginalBayesFit(bm, tree, time.perf_counter() - t0)


@dataclass(frozen=True, eq=False)
class MarginalBayesFit(PosteriorResult):
    """A Bayesian fit of the marginal model: ``summary()`` (beta, the entries of D, sigma, ICC), ``diagnostics()``
    and the DataTree (``posterior``: ``beta``, ``D``, ``min_eigen_D``, ``sigma``; ``log_likelihood/y_subject``)."""

    bayes_model: MarginalBayesModel
    tree: Any
    seconds: float
    sampler = "marginal"
    kind = "marginal"

    @property
    def design(self) -> Design:
        """The design that was fitted."""
        return self.bayes_model.design

    def parameter_draws(self) -> dict[str, np.ndarray]:
        """Draws (chain, draw) of every reported parameter: ``beta[...]``, ``D[factor:a,b]``, ``sigma``, ``icc``."""
        post = self.tree["posterior"]
        block = self.design.blocks[0]
        out = {f"beta[{n}]": post["beta"].values[..., j] for j, n in enumerate(self.design.fixef_names)}
        D = post["D"].values
        for j, a in enumerate(block.effect_names):
            for k in range(j + 1):
                out[f"D[{block.factor}:{block.effect_names[k]},{a}]"] = D[..., k, j]
        out["sigma"] = post["sigma"].values
        if "(Intercept)" in block.effect_names:
            i = block.effect_names.index("(Intercept)")
            out["icc"] = D[..., i, i] / (D[..., i, i] + out["sigma"] ** 2)
        return out

    def summary(self, ci_prob: float = 0.95) -> pd.DataFrame:
        """mean, sd, equal-tailed interval, R-hat, ESS and MCSE of every parameter."""
        return summarise_draws(self.parameter_draws(), ci_prob)

    def ranef(self, ci_prob: float = 0.95) -> dict[str, pd.DataFrame]:
        """Refused: the marginal model has no random effects."""
        raise NotSupportedError(
            "The marginal model has no random effects: D is only a parameter of V_i = Z_i D Z_i' + sigma^2 I and may "
            "be indefinite, so there is no distribution b_i ~ N(0, D) to draw b_i from.",
            given="a MarginalBayesFit", fix="Fit the hierarchical model (hierlmm.fit_bayes(design)) for the b_i.")

    def diagnostics(self) -> Diagnostics:
        """Divergences, R-hat, ESS and E-BFMI, each with what to do about it."""
        return diagnose(self)

    def _D_draws(self) -> list[np.ndarray]:  # the chapter's D
        D = self.tree["posterior"]["D"].values
        return [D.reshape(-1, *D.shape[2:])]
