"""The marginal model by ML/REML (hierlmm.engines.reml.marginal_model): D may be indefinite, every V_i positive
definite."""

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
from hierlmm.design.sufficient_stats import subject_stats
from hierlmm.engines.reml.marginal_model import delta_of, fit_marginal, kappa_of, profile, theta_of


@pytest.fixture(scope="module")
def negative_icc():
    """200 subjects x 5 visits, compound symmetry with ICC -0.15, and nlme::gls's fits of it."""
    data = pd.read_csv(FIXTURES / "cs_negative_icc.csv")
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    return design, json.loads((FIXTURES / "cs_negative_icc_reference.json").read_text())


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_negative_intra_class_correlation_equals_nlme_gls(negative_icc, method):
    design, reference = negative_icc
    ref = reference[method]
    fit = fit_marginal(design, method)
    assert fit.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-6)
    assert fit.icc == pytest.approx(ref["rho"], abs=1e-5)
    assert np.sqrt(fit.D[0][0, 0] + fit.sigma**2) == pytest.approx(ref["sigma"], rel=1e-5)  # gls' sigma: total SD
    np.testing.assert_allclose(fit.beta, ref["beta"], rtol=1e-6)
    np.testing.assert_allclose(fit.fixef()["Std.Error"], ref["se"], rtol=1e-4)
    assert fit.min_eigen_D < 0  # D is no covariance matrix ...
    for subject in design.blocks[0].levels[:20]:  # ... yet every V_i is one
        assert np.linalg.eigvalsh(fit.marginal_cov(subject))[0] > 0


def test_the_hierarchical_fit_cannot_go_below_zero(negative_icc):
    design, _ = negative_icc
    with pytest.warns(hierlmm.BoundaryWarning):
        hier = hierlmm.fit_ml(design, "REML")
    assert hier.D[0][0, 0] < 1e-6
    assert fit_marginal(design, "REML").loglik > hier.loglik + 1.0


@pytest.mark.parametrize(("formula", "ref"), [
    ("CD4 ~ obstime + obstime:drug + (1 | patient)", "aids_ri_reml"),
    ("CD4 ~ obstime + obstime:drug + (obstime | patient)", "aids_ri_rs_reml"),
])
def test_at_a_positive_definite_optimum_it_is_the_hierarchical_fit(chapter_data, reference, formula, ref):
    design = hierlmm.build_design(hierlmm.model_spec(formula), chapter_data("aids"))
    fit = fit_marginal(design, "REML")
    assert fit.loglik == pytest.approx(reference(ref)["logLik"], abs=1e-5)
    np.testing.assert_allclose(fit.D[0], hierlmm.fit_ml(design, "REML").D[0], rtol=1e-3, atol=1e-5)
    assert fit.min_eigen_D > 0


@settings(deadline=None, max_examples=25, database=None)
@given(seed=st.integers(0, 10_000), q=st.sampled_from([1, 2]))
def test_every_theta_gives_positive_definite_V_and_the_ml_profile_is_the_dense_likelihood(seed, q):
    data = simulate(seed, n_subjects=12)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (1 | id)" if q == 1 else "y ~ t + x + (t | id)"),
                                  data)
    stats = subject_stats(design)
    kappa = kappa_of(stats)
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1.5, q * (q + 1) // 2)
    delta = delta_of(theta, q, kappa)
    np.testing.assert_allclose(delta_of(theta_of(delta, kappa), q, kappa), delta, atol=1e-10)
    prof = profile(stats, delta, reml=False)
    block = design.blocks[0]
    D = delta * prof.sigma2
    dense = 0.0
    for level in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == level)
        V = block.Z[rows] @ D @ block.Z[rows].T + prof.sigma2 * np.eye(rows.size)
        assert np.linalg.eigvalsh(V)[0] > 0
        dense += scipy.stats.multivariate_normal(design.X[rows] @ prof.beta, V).logpdf(design.y[rows])
    assert prof.loglik == pytest.approx(dense, rel=1e-9)


def test_kappa_reaches_the_whole_admissible_range_for_a_random_intercept(negative_icc):
    design, _ = negative_icc
    stats = subject_stats(design)
    n_max = stats.n_per_subject.max()
    assert kappa_of(stats) == pytest.approx(1 / n_max)  # D > -sigma^2 / n_max: ICC > -1 / (n_max - 1)


def test_unsupported_and_bad_requests_say_what_to_do():
    data = simulate(2, n_subjects=10, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id) + (1 | id:eye)"), data)
    with pytest.raises(hierlmm.NotSupportedError, match="one grouping factor"):
        fit_marginal(design)
    with pytest.raises(hierlmm.SpecError, match="REML"):
        fit_marginal(design, "bayes")


def test_fit_kind_marginal_and_the_cli_json(negative_icc, tmp_path):
    from hierlmm.cli import main

    design, reference = negative_icc
    data = pd.read_csv(FIXTURES / "cs_negative_icc.csv")
    fit = hierlmm.fit("y ~ t + (1 | id)", data, kind="marginal")
    assert isinstance(fit, hierlmm.MarginalFit) and fit.method == "REML"
    with pytest.raises(hierlmm.SpecError, match="kind"):
        hierlmm.fit("y ~ t + (1 | id)", data, kind="both")
    out = tmp_path / "m.json"
    assert main(["fit", "--data", str(FIXTURES / "cs_negative_icc.csv"), "--formula", "y ~ t + (1 | id)",
                 "--kind", "marginal", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["kind"] == "marginal"
    assert result["loglik"] == pytest.approx(reference["REML"]["logLik"], abs=1e-6)
    assert result["random"]["id"]["variance"][0] < 0 and result["random"]["id"]["sd"] == [None]
    assert result["min_eigen_D"] == pytest.approx(result["random"]["id"]["cov"][0][0])
    assert result["icc"] == pytest.approx(reference["REML"]["rho"], abs=1e-5)
    assert main(["fit", "--data", str(FIXTURES / "cs_negative_icc.csv"), "--formula", "y ~ t + (1 | id)",
                 "--kind", "marginal", "--method", "both"]) == 2
