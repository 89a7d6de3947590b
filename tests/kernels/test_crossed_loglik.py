"""The marginal sampler with nested and crossed grouping factors: likelihood and exact b draws against dense scipy,
short NUTS fits against REML (issue: NUTS for the glaucoma models; the full-data fits are in test_glaucoma_bayes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.stats
import xarray as xr
from simulated import random_factors, simulate

import hierlmm
from hierlmm.engines.bayes.hierarchical_model import build_bayes_model, var_name
from hierlmm.engines.bayes.posterior_tree import complete_tree
from hierlmm.kernels.crossed_loglik import CrossedPieces, CrossedStats, crossed_loglik

CROSSED = {
    "scalar": "y ~ t + (1 | id) + (1 | item)",
    "slopes eliminated": "y ~ t + (t | id) + (1 | item)",
    "slopes in the rest": "y ~ t + (1 | id) + (t | item)",
    "three factors": "y ~ t + (1 | item) + (t | id) + (1 | site)",
}


def crossed_data(seed: int, n_subjects: int = 14, n_items: int = 6) -> pd.DataFrame:
    """Subjects crossed with items (each subject sees a random subset of items, unequal counts) and with sites."""
    rng = np.random.default_rng(seed)
    b, c, d = rng.normal(0, 1.2, n_subjects), rng.normal(0, 0.8, n_items), rng.normal(0, 0.5, 3)
    rows = []
    for i in range(n_subjects):
        for j in rng.choice(n_items, size=rng.integers(2, n_items + 1), replace=False):
            for _ in range(rng.integers(1, 3)):
                t, s = rng.uniform(0, 3), rng.integers(3)
                rows.append({"id": f"s{i}", "item": f"i{j}", "site": f"k{s}", "t": t,
                             "y": 1 + 0.5 * t + b[i] + c[j] * (1 + 0.3 * t) + d[s] + rng.normal(0, 0.7)})
    return pd.DataFrame(rows)



def dense_moments(design, factors, beta, sigma):
    """Dense ``V``, the stacked ``G = [Z_1 ... Z_K]`` and the block-diagonal covariance of b."""
    n = design.n_obs
    Gs = []
    for block in design.blocks:
        G = np.zeros((n, block.n_levels * block.q))
        for j in range(block.q):
            G[np.arange(n), block.group_index * block.q + j] = block.Z[:, j]
        Gs.append(G)
    G = np.hstack(Gs)
    Db = scipy.linalg.block_diag(*[np.kron(np.eye(b.n_levels), L @ L.T) for b, L in zip(design.blocks, factors,
                                                                                         strict=True)])
    return G @ Db @ G.T + sigma**2 * np.eye(n), G, Db


@pytest.mark.parametrize("kind", sorted(CROSSED))
def test_crossed_marginalised_loglik_equals_dense_mvn(kind):
    import pytensor.tensor as pt

    design = hierlmm.build_design(hierlmm.model_spec(CROSSED[kind]), crossed_data(3))
    rng = np.random.default_rng(5)
    factors, beta, sigma = random_factors(design, rng), rng.normal(0, 1, design.p), 0.9
    V, _, _ = dense_moments(design, factors, beta, sigma)
    dense = scipy.stats.multivariate_normal(design.X @ beta, V).logpdf(design.y)
    cs = CrossedStats.of(design)
    for kernel in (True, False):  # the kernel serves scalar effects only; the expression serves every design
        value = crossed_loglik(cs, pt.as_tensor(beta), [pt.as_tensor(f) for f in factors], pt.as_tensor(sigma),
                               kernel=kernel).eval()
        assert value == pytest.approx(dense, rel=1e-10)
    pieces = CrossedPieces.of(cs, beta[None], [f[None] for f in factors], np.array([sigma]))
    assert pieces.loglik(cs, np.array([sigma]))[0] == pytest.approx(dense, rel=1e-10)


def test_crossed_gradient_equals_finite_differences_of_the_dense_likelihood():
    """PyTensor's gradient of the expression's grouped (1 | id) path against central differences of the dense
    MVN (the kernel is checked against this gradient below)."""
    import pytensor
    import pytensor.tensor as pt

    design = hierlmm.build_design(hierlmm.model_spec(CROSSED["scalar"]), crossed_data(8))
    rng = np.random.default_rng(1)
    x0 = np.r_[rng.normal(0, 1, design.p), 0.8, 1.3, 0.7]  # beta, l_id, l_item, sigma
    x = pt.dvector()
    value = crossed_loglik(CrossedStats.of(design), x[:2], [x[2].reshape((1, 1)), x[3].reshape((1, 1))], x[4],
                           kernel=False)
    grad = pytensor.function([x], pt.grad(value, x), mode="FAST_COMPILE")(x0)

    def dense(v):
        V, _, _ = dense_moments(design, [np.array([[v[2]]]), np.array([[v[3]]])], v[:2], v[4])
        return scipy.stats.multivariate_normal(design.X @ v[:2], V).logpdf(design.y)

    numeric = [(dense(x0 + h) - dense(x0 - h)) / 2e-6 for h in 1e-6 * np.eye(x0.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "NUMBA"])
@pytest.mark.parametrize("formula", [CROSSED["scalar"], "y ~ t + (1 | item) + (1 | id) + (1 | site)"])
def test_crossed_kernel_value_and_gradient_equal_autodiff_of_the_expression(formula, mode):
    """hierlmm.kernels.crossed_op's analytic gradient against PyTensor's gradient of the expression it replaces, in the
    Python and the Numba backend."""
    import pytensor
    import pytensor.tensor as pt

    design = hierlmm.build_design(hierlmm.model_spec(formula), crossed_data(6))
    cs = CrossedStats.of(design)
    K = len(design.blocks)
    x = pt.dvector()
    args = (x[:2], [x[2 + k].reshape((1, 1)) for k in range(K)], x[2 + K])
    x0 = np.r_[np.random.default_rng(K).normal(0, 1, 2), np.linspace(0.4, 1.6, K), 0.75]
    got, want = [pytensor.function([x], [v, pt.grad(v, x)], mode=mode)(x0)
                 for v in (crossed_loglik(cs, *args, kernel=True), crossed_loglik(cs, *args, kernel=False))]
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9)


def fixed_posterior(bm, factors, beta, sigma, S):
    """A one-chain DataTree of S identical draws of the free parameters (diagonal blocks: ``sd_<factor>``)."""
    post = {"beta_centred": (("chain", "draw", "fixef"), np.broadcast_to(bm.to_centred(beta), (1, S, beta.size))),
            "sigma": (("chain", "draw"), np.full((1, S), sigma))}
    for block, L in zip(bm.design.blocks, factors, strict=True):
        post[var_name("sd", block.factor)] = (("chain", "draw", f"{block.factor}__effect"),
                                              np.broadcast_to(np.diag(L), (1, S, block.q)))
    return xr.DataTree.from_dict({"posterior": xr.Dataset(post)})


@pytest.mark.parametrize("formula", ["y ~ t + (1 | id) + (1 | item)", "y ~ t + (1 | id/eye)"])
def test_exact_b_draws_of_the_completed_tree_have_the_dense_conditional_moments(formula):
    """End to end through complete_tree (crossed: hierlmm.kernels.crossed_loglik; nested: levels put back from slots):
    b | y, theta ~ N(D_b G'V^-1 r, D_b - D_b G'V^-1 G D_b), whitened draws N(0, I) within Monte Carlo error."""
    data = crossed_data(4) if "item" in formula else simulate(6, n_subjects=12, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    bm = build_bayes_model(design, sampler="marginal")
    rng = np.random.default_rng(2)
    factors = [np.diag(rng.uniform(0.5, 1.5, b.q)) for b in design.blocks]
    beta, sigma, S = rng.normal(0, 1, design.p), 0.8, 20_000
    tree = fixed_posterior(bm, factors, beta, sigma, S)
    complete_tree(bm, tree, np.random.default_rng(3), pointwise=False)
    draws = np.concatenate([tree["posterior"][var_name("b", b.factor)].values[0].reshape(S, -1)
                            for b in design.blocks], axis=1)
    V, G, Db = dense_moments(design, factors, beta, sigma)
    mean = Db @ G.T @ np.linalg.solve(V, design.y - design.X @ beta)
    cov = Db - Db @ G.T @ np.linalg.solve(V, G @ Db)
    white = np.linalg.solve(np.linalg.cholesky(cov), (draws - mean).T).T
    assert np.max(np.abs(white.mean(axis=0))) < 5 / np.sqrt(S)
    assert np.max(np.abs(np.cov(white.T) - np.eye(mean.size))) < 6 * np.sqrt(2 / S)


@pytest.mark.parametrize("formula", ["y ~ t + (1 | id) + (1 | item)", "y ~ t + (1 | id/eye)"])
def test_the_pymc_model_density_is_prior_plus_the_dense_marginal_likelihood(formula):
    data = crossed_data(9) if "item" in formula else simulate(4, n_subjects=10, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    bm = build_bayes_model(design, sampler="marginal")
    model = bm.model
    point = model.initial_point()
    rng = np.random.default_rng(0)
    point = {k: v + rng.normal(0, 0.3, np.shape(v)) for k, v in point.items()}
    logp = model.compile_logp(mode="FAST_COMPILE")(point)
    priors = model.compile_logp(vars=model.free_RVs, mode="FAST_COMPILE")(point)
    outs = model.replace_rvs_by_values([model["beta_centred"], model["sigma"],
                                        *[model[var_name("sd", b.factor)] for b in design.blocks]])
    values = model.compile_fn(outs, inputs=model.value_vars, mode="FAST_COMPILE", on_unused_input="ignore")(point)
    beta = bm.from_centred(values[0])
    factors = [np.diag(np.atleast_1d(v)) for v in values[2:]]
    V, _, _ = dense_moments(design, factors, beta, float(values[1]))
    dense = scipy.stats.multivariate_normal(design.X @ beta, V).logpdf(design.y)
    assert logp - priors == pytest.approx(dense, rel=1e-9)


@pytest.mark.parametrize("formula", ["y ~ t + (1 | id) + (1 | item)", "y ~ t + (1 | id/eye)"])
def test_short_nuts_fit_centres_on_reml(formula):
    data = crossed_data(11, n_subjects=40, n_items=12) if "item" in formula else simulate(12, n_subjects=60,
                                                                                        nested=True)
    design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    bayes = hierlmm.fit_bayes(design, chains=2, draws=300, tune=300, seed=2, progressbar=False)
    reml = hierlmm.fit(formula, data)
    table = hierlmm.compare(bayes, reml)
    # fixed effects and sigma within half a posterior SD of REML; the SDs of factors with few levels sit further
    # out (the posterior of an SD is skewed: its mean lies above the REML mode), so they get one posterior SD
    fixed = table.index.str.startswith("beta[") | (table.index == "sigma")
    assert np.all(np.abs(table.loc[fixed, "z"]) < 0.5), table
    assert np.all(np.abs(table.loc[~fixed, "z"]) < 1.0), table
    assert bayes.diagnostics().divergences == 0
    for block in design.blocks:
        assert bayes.tree["posterior"][var_name("b", block.factor)].shape == (2, 300, block.n_levels, block.q)
    if "item" in formula:  # no subjects: no per-subject log-likelihood; the per-observation one is there
        assert set(bayes.tree["log_likelihood"].data_vars) == {"y"}


def test_cli_fits_crossed_factors_by_reml_with_lme4s_engine(tmp_path):
    import json

    from hierlmm.cli import main
    from hierlmm.engines.reml.crossed_fit import fit_crossed

    rng = np.random.default_rng(5)
    subject, field = np.repeat(np.arange(10), 12), np.tile(np.arange(6), 20)
    t = rng.uniform(0, 3, subject.size)
    y = 1 + 0.5 * t + rng.normal(size=10)[subject] + 0.5 * rng.normal(size=6)[field] + 0.7 * rng.normal(size=t.size)
    data = pd.DataFrame({"y": y, "t": t, "subject": [f"s{s}" for s in subject], "field": [f"f{f}" for f in field]})
    data.to_csv(tmp_path / "crossed.csv", index=False)
    formula = "y ~ t + (1 | subject) + (1 | field)"
    assert main(["fit", "--data", str(tmp_path / "crossed.csv"), "--formula", formula, "--json",
                 str(tmp_path / "fit.json")]) == 0
    out = json.loads((tmp_path / "fit.json").read_text())
    direct = fit_crossed(hierlmm.build_design(hierlmm.model_spec(formula), hierlmm.datasets.read_csv(
        str(tmp_path / "crossed.csv"))))
    assert out["loglik"] == pytest.approx(direct.loglik, abs=1e-8)
    assert out["groups"] == {"subject": 10, "field": 6}
