"""The completed posterior DataTree of a Bayesian fit: derived parameters, every b, and the log-likelihoods.

Stage after sampling (``draws -> DataTree``): NUTS returns the free parameters; this adds ``beta`` (uncentred),
``sd_<factor>``, ``cor_<factor>``, ``b_<factor>`` (exact conditional draws for the marginal sampler; from ``z``/``c``
for the joint one), ``observed_data`` and ``log_likelihood`` (``y`` per observation given ``b``, ``y_subject`` per
subject with ``b`` integrated out). See :mod:`hierlmm.engines.bayes.bayes_fit` for the layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from hierlmm.design.sufficient_stats import stack_factors
from hierlmm.engines.bayes.conditional_effects import DrawPieces, draw_effects
from hierlmm.engines.bayes.hierarchical_model import BayesModel, var_name
from hierlmm.engines.bayes.random_effects_covariance import factor_draws
from hierlmm.kernels.crossed_loglik import CrossedPieces, CrossedStats
from hierlmm.kernels.marginalised_loglik import solve_lower

MAX_POINTWISE = 50_000_000  # draws x observations above which the per-observation log-likelihood is not stored


def packed_to_chol(packed: np.ndarray, q: int) -> np.ndarray:
    """Lower-triangular matrices (..., q, q) from PyMC's packed Cholesky factors (..., q (q + 1) / 2)."""
    rows, cols = np.tril_indices(q)
    out = np.zeros((*packed.shape[:-1], q, q))
    out[..., rows, cols] = packed
    return out


def block_factors(bm: BayesModel, post: xr.Dataset) -> list[np.ndarray]:
    """Every block's factor ``L_k`` per draw: (chain, draw, q, q)."""
    return [factor_draws(block, post, bm.priors) for block in bm.design.blocks]


def _derived_parameters(bm: BayesModel, post: xr.Dataset, factors: list[np.ndarray]) -> None:
    """Add ``beta`` (uncentred), ``sd_<factor>`` and ``cor_<factor>`` to the posterior, from the free parameters
    (``factors``: every block's factor per draw, from :func:`block_factors`)."""
    design = bm.design
    post["beta"] = post["beta_centred"].copy(data=bm.from_centred(post["beta_centred"].values))
    for block, Lk in zip(design.blocks, factors, strict=True):
        f = block.factor
        if var_name("sd", f) in post:  # a diagonal block: its SDs are the free parameters
            continue
        cov = Lk @ np.swapaxes(Lk, -1, -2)
        sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        cor = cov / (sd[..., :, None] * sd[..., None, :])
        post[var_name("sd", f)] = xr.DataArray(sd, dims=("chain", "draw", f"{f}__effect"),
                                               coords={f"{f}__effect": list(block.effect_names)})
        post[var_name("cor", f)] = xr.DataArray(cor, dims=("chain", "draw", f"{f}__effect", f"{f}__effect_bis"),
                                                coords={f"{f}__effect": list(block.effect_names),
                                                        f"{f}__effect_bis": list(block.effect_names)})


def _joint_effects(bm: BayesModel, post: xr.Dataset, block: Any, Lk: np.ndarray) -> xr.DataArray:
    """A block's ``b`` draws from the joint sampler's free variables: ``b = z L'`` with the centred part's
    ``z = L_cc^-1 (c - m)`` (:mod:`hierlmm.engines.bayes.parametrisation`)."""
    f = block.factor
    n = bm.parametrisation.centred.get(f, 0)
    pieces = []
    if n:
        beta = post["beta"].values
        m = np.stack([beta[..., k] if k >= 0 else np.zeros(beta.shape[:2]) for k in bm.parametrisation.absorbed[f]],
                     axis=-1)
        pieces.append(solve_lower(Lk[:, :, None, :n, :n], post[var_name("c", f)].values - m[:, :, None, :]))
    if n < block.q:
        pieces.append(post[var_name("z", f)].values)
    b = np.einsum("cdlq,cdrq->cdlr", np.concatenate(pieces, axis=-1), Lk)
    return xr.DataArray(b, dims=("chain", "draw", f"{f}__level", f"{f}__effect"),
                        coords={f"{f}__level": list(block.levels), f"{f}__effect": list(block.effect_names)})


def _effects_array(block: Any, b: np.ndarray) -> xr.DataArray:
    """A block's ``b`` draws (chain, draw, levels, q) as a labelled array."""
    f = block.factor
    return xr.DataArray(b, dims=("chain", "draw", f"{f}__level", f"{f}__effect"),
                        coords={f"{f}__level": list(block.levels), f"{f}__effect": list(block.effect_names)})


def _nested_effects(bm: BayesModel, post: xr.Dataset, beta: np.ndarray, factors: list[np.ndarray],
                    sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-subject marginalised log-likelihoods (draws, subjects) and, for the marginal sampler, exact ``b`` draws
    added to ``post`` (nested factors: :mod:`hierlmm.engines.bayes.conditional_effects`)."""
    design, ms = bm.design, bm.stats
    C, D = post.sizes["chain"], post.sizes["draw"]
    L = stack_factors(ms.subject, factors)
    chunks = [slice(i, i + 500) for i in range(0, C * D, 500)]
    pieces = [DrawPieces.of(ms, beta[c], L[c], sigma[c]) for c in chunks]
    ll_subject = np.concatenate([p.loglik(ms, sigma[c]) for p, c in zip(pieces, chunks, strict=True)])
    if bm.sampler == "marginal":
        stacked = np.concatenate([draw_effects(ms, beta[c], L[c], sigma[c], rng, p)
                                  for p, c in zip(pieces, chunks, strict=True)])
        for lay in ms.subject.layouts:
            block = design.blocks[lay.block]
            b = np.zeros((C * D, block.n_levels, block.q))
            for slot in range(lay.n_slots):
                subjects = np.flatnonzero(lay.slot_level[:, slot] >= 0)
                o = lay.offset + slot * lay.q
                b[:, lay.slot_level[subjects, slot], :] = stacked[:, subjects, o:o + lay.q]
            post[var_name("b", block.factor)] = _effects_array(block, b.reshape(C, D, block.n_levels, block.q))
    return ll_subject


def _crossed_effects(cs: CrossedStats, beta: np.ndarray, factors: list[np.ndarray], sigma: np.ndarray,
                     rng: np.random.Generator) -> list[np.ndarray]:
    """Exact draws of every block's ``b`` (draws, levels, q) with crossed factors, 100 draws at a time
    (:class:`~hierlmm.kernels.crossed_loglik.CrossedPieces`)."""
    chunks = [slice(i, i + 100) for i in range(0, len(sigma), 100)]
    draws = [CrossedPieces.of(cs, beta[c], [f[c] for f in factors], sigma[c]).draw(cs, sigma[c], rng) for c in chunks]
    return [np.concatenate(per_block) for per_block in zip(*draws, strict=True)]


def portable_sample_stats(tree: Any) -> None:
    """Give every object-typed variable of the tree (nutpie's ``divergence_message``: ``None`` or a message per
    draw) a string type, ``""`` for ``None``, in place: netCDF and zarr store no Python objects (an all-``None``
    column came back as floats), so the saved tree reads back identical (:func:`hierlmm.save`)."""
    for node in tree.subtree:
        objects = [name for name, v in node.data_vars.items() if v.dtype == object]
        if objects:
            ds = node.to_dataset(inherit=False)
            for name in objects:
                text = ["" if item is None else str(item) for item in ds[name].values.ravel()]
                ds[name] = ds[name].copy(data=np.array(text, dtype=str).reshape(ds[name].shape))
            node.dataset = ds


def complete_tree(bm: BayesModel, tree: Any, rng: np.random.Generator, pointwise: bool | None) -> None:
    """Add exact b draws (marginal sampler), observed data and the two log-likelihood groups."""
    design, ms = bm.design, bm.stats
    post = tree["posterior"].to_dataset()
    C, D = post.sizes["chain"], post.sizes["draw"]
    per_draw = block_factors(bm, post)  # (chain, draw, q, q) per block
    _derived_parameters(bm, post, per_draw)
    beta = post["beta"].values.reshape(C * D, -1)
    sigma = post["sigma"].values.reshape(C * D)
    factors = [f.reshape(C * D, *f.shape[2:]) for f in per_draw]
    if isinstance(ms, CrossedStats):  # crossed factors: no subjects, hence no per-subject log-likelihood
        ll_subject = None
        if bm.sampler == "marginal":
            for block, b in zip(design.blocks, _crossed_effects(ms, beta, factors, sigma, rng), strict=True):
                post[var_name("b", block.factor)] = _effects_array(block, b.reshape(C, D, block.n_levels, block.q))
    else:
        ll_subject = _nested_effects(bm, post, beta, factors, sigma, rng)
    if bm.sampler == "joint":
        for block, Lk in zip(design.blocks, per_draw, strict=True):
            post[var_name("b", block.factor)] = _joint_effects(bm, post, block, Lk)
    tree["posterior"] = xr.DataTree(post)
    coords = {"chain": post["chain"].values, "draw": post["draw"].values}
    ll = xr.Dataset()
    if ll_subject is not None:
        subjects = design.blocks[ms.subject.subject_block]
        ll["y_subject"] = xr.DataArray(ll_subject.reshape(C, D, -1), dims=("chain", "draw", "subject"),
                                       coords={**coords, "subject": list(subjects.levels)})
    if pointwise or (pointwise is None and C * D * design.n_obs <= MAX_POINTWISE):
        mu = beta @ design.X.T
        for block in design.blocks:
            b = post[var_name("b", block.factor)].values.reshape(C * D, block.n_levels, block.q)
            for q in range(block.q):  # one vector operation per effect (einsum was slower)
                mu += block.Z[None, :, q] * b[:, block.group_index, q]
        resid = (design.y[None, :] - mu) / sigma[:, None]
        ll_obs = -0.5 * (np.log(2 * np.pi) + resid**2) - np.log(sigma)[:, None]
        ll["y"] = xr.DataArray(ll_obs.reshape(C, D, -1), dims=("chain", "draw", "obs"), coords=coords)
    tree["log_likelihood"] = xr.DataTree(ll)
    if "observed_data" not in tree.children or "y" not in tree["observed_data"].data_vars:
        # the marginal model has no observed random variable, so pm.sample leaves the group empty
        tree["observed_data"] = xr.DataTree(xr.Dataset({"y": xr.DataArray(design.y, dims=("obs",))}))
