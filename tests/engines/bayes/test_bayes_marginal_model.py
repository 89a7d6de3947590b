"""The marginal model by NUTS (hierlmm.engines.bayes.marginal_model), and the chapter's first claim of section 3.3 on
data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import FIXTURES
from simulated import simulate

import hierlmm
from hierlmm.engines.bayes.marginal_model import fit_bayes_marginal, subject_loglik
from hierlmm.engines.reml.marginal_model import delta_of, kappa_of
from hierlmm.kernels.marginalised_loglik import MarginalisedStats

FAST = dict(chains=2, draws=400, tune=400, progressbar=False)


@settings(deadline=None, max_examples=20, database=None)
@given(seed=st.integers(0, 10_000), q=st.sampled_from([1, 2, 3]))
def test_loglik_equals_dense_mvn_for_indefinite_D_numpy_and_pytensor(seed, q):
    import pytensor.tensor as pt

    data = simulate(seed, n_subjects=10)
    formula = {1: "y ~ t + x + (1 | id)", 2: "y ~ t + x + (t | id)", 3: "y ~ t + x + (t + x | id)"}[q]
    design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    ms = MarginalisedStats.of(design)
    rng = np.random.default_rng(seed)
    delta = delta_of(rng.normal(-1, 1, q * (q + 1) // 2), q, kappa_of(ms.subject))  # often indefinite
    beta, sigma = rng.normal(0, 1, design.p), float(rng.uniform(0.5, 2))
    block = design.blocks[0]
    dense = []
    for level in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == level)
        V = sigma**2 * (block.Z[rows] @ delta @ block.Z[rows].T + np.eye(rows.size))
        dense.append(scipy.stats.multivariate_normal(design.X[rows] @ beta, V).logpdf(design.y[rows]))
    np.testing.assert_allclose(subject_loglik(ms, beta, delta, sigma, np), dense, atol=1e-8)
    expr = subject_loglik(ms, pt.as_tensor(beta), pt.as_tensor(delta), pt.as_tensor(sigma), pt)
    np.testing.assert_allclose(expr.eval(), dense, atol=1e-8)
    draws = subject_loglik(ms, np.stack([beta, beta]), np.stack([delta, delta]), np.array([sigma, sigma]), np)
    np.testing.assert_allclose(draws, [dense, dense], atol=1e-8)


@pytest.fixture(scope="module")
def negative_icc_fits():
    data = pd.read_csv(FIXTURES / "cs_negative_icc.csv")  # compound symmetry, ICC -0.15, 200 x 5
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    return (design, fit_bayes_marginal(design, seed=4, **FAST), hierlmm.fit_bayes(design, seed=4, **FAST))


def test_compound_symmetry_does_not_imply_random_intercepts(negative_icc_fits):
    """Chapter 3.3: the marginal fit finds the negative ICC; the hierarchical fit cannot, and LOO says so."""
    import arviz_stats as azs

    design, marginal, hierarchical = negative_icc_fits
    table = marginal.summary()
    assert table.loc["icc", "upper"] < 0 < 1  # the 95% interval excludes 0 ...
    assert table.loc["icc", "lower"] < -0.15 < table.loc["icc", "upper"]  # ... and covers the truth
    assert marginal.diagnostics().divergences == 0 and marginal.diagnostics().max_rhat < 1.02
    sd = hierarchical.tree["posterior"]["sd_id"].values.ravel()
    assert np.median(sd) < 0.2 * np.median(hierarchical.tree["posterior"]["sigma"].values)
    comparison = azs.compare({"marginal": marginal.tree, "hierarchical": hierarchical.tree}, var_name="y_subject")
    assert comparison.index[0] == "marginal"
    worse = comparison.loc["hierarchical"]
    assert abs(worse["elpd_diff"]) > 2 * worse["dse"]  # ArviZ 1 reports the worse model's difference as negative


def test_marginal_posterior_centres_on_the_reml_fit(negative_icc_fits):
    design, marginal, _ = negative_icc_fits
    reml = hierlmm.fit_marginal(design, "REML")
    table = marginal.summary()
    assert abs(table.loc["icc", "mean"] - reml.icc) < table.loc["icc", "sd"]
    assert abs(table.loc["D[id:(Intercept),(Intercept)]", "mean"] - reml.D[0][0, 0]) < 1.5 * table.loc[
        "D[id:(Intercept),(Intercept)]", "sd"]
    assert (marginal.tree["posterior"]["min_eigen_D"].values < 0).mean() > 0.99


def test_cli_marginal_kind_by_nuts(tmp_path):
    from hierlmm.cli import main

    out = tmp_path / "m.json"
    code = main(["fit", "--data", str(FIXTURES / "cs_negative_icc.csv"), "--formula", "y ~ t + (1 | id)", "--kind",
                 "marginal", "--method", "nuts", "--chains", "2", "--draws", "200", "--tune", "200", "--quiet",
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "marginal" and result["method"] == "nuts"
    assert "icc" in result["posterior"]["parameter"]
    assert result["min_eigen_D"]["prob_negative"] > 0.9 and result["min_eigen_D"]["upper"] < 0


def test_three_random_effects_by_nuts():
    data = simulate(4, n_subjects=40)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t + x | id)"), data)
    fit = fit_bayes_marginal(design, chains=2, draws=150, tune=150, progressbar=False)
    assert fit.tree["posterior"]["D"].shape[-2:] == (3, 3)
    assert np.isfinite(fit.tree["log_likelihood"]["y_subject"].values).all()


def test_several_factors_say_so():
    data = simulate(1, n_subjects=10, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id) + (1 | id:eye)"), data)
    with pytest.raises(hierlmm.NotSupportedError, match="one grouping factor"):
        fit_bayes_marginal(design, **FAST)
    with pytest.raises(hierlmm.SpecError, match="sampler"):
        hierlmm.fit_bayes(design, kind="marginal", sampler="joint")


def test_implied_structure_of_marginal_fits_keeps_the_negative_correlation(negative_icc_fits):
    design, marginal, _ = negative_icc_fits
    subject = design.blocks[0].levels[0]
    post = hierlmm.implied_covariance(marginal, subject=subject)
    corr = post.summary("correlation")["mean"]
    assert corr[0, 1] < -0.1  # compound symmetry with a negative ICC, per posterior draw
    assert post.is_positive_definite().all()
    reml = hierlmm.implied_covariance(hierlmm.fit_marginal(design), subject=subject)
    assert reml.V.shape == (1, 5, 5) and reml.correlation[0, 0, 1] < -0.1
    assert marginal.tree["posterior"]["min_eigen_D"].shape[:2] == (2, 400)


def test_a_d_with_a_negative_eigenvalue_and_positive_definite_v():
    visits = pd.DataFrame([{"id": f"s{i}", "t": float(t)} for i in range(1000) for t in range(5)])
    params = {"beta": [1.0, 0.3], "D": [[1.0, 0.7], [0.7, 0.3]], "sigma": 1.0}  # eigenvalues -0.13, 1.43
    data = hierlmm.simulate("y ~ t + (t | id)", params, visits, kind="marginal", seed=5)
    marginal = hierlmm.fit("y ~ t + (t | id)", data, kind="marginal")
    assert marginal.min_eigen_D < 0
    assert all(np.linalg.eigvalsh(marginal.marginal_cov(s))[0] > 0 for s in marginal.design.blocks[0].levels[:50])
    with pytest.warns(hierlmm.BoundaryWarning):
        hierarchical = hierlmm.fit("y ~ t + (t | id)", data)
    assert np.linalg.eigvalsh(hierarchical.D[0])[0] >= -1e-10
    assert marginal.loglik > hierarchical.loglik
