"""The implied marginal structure of fits (hierlmm.inference.implied_covariance)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from simulated import simulate

import hierlmm
from hierlmm.inference.implied_covariance import ImpliedCovariance, icc, implied_covariance


@pytest.fixture(scope="module")
def aids_reml(chapter_data):
    return hierlmm.fit("CD4 ~ obstime + obstime:drug + (obstime | patient)", chapter_data("aids"))


def test_V_of_patient_450_equals_nlme(aids_reml, reference):
    implied = implied_covariance(aids_reml, subject="450")
    assert implied.V.shape == (1, 5, 5)
    np.testing.assert_allclose(implied.V[0], reference("aids_ri_rs_reml")["V_patient450"], atol=1e-3)
    np.testing.assert_allclose(implied.V[0], aids_reml.marginal_cov("450").to_numpy(), atol=1e-10)
    corr = implied.correlation[0]
    np.testing.assert_allclose(np.diag(corr), 1.0)
    assert implied.is_positive_definite().all()


def test_a_time_grid_gives_the_variance_function(aids_reml):
    grid = pd.DataFrame({"obstime": [0.0, 6.0, 12.0, 18.0], "drug": "ddC", "patient": "450"})
    implied = implied_covariance(aids_reml, rows=grid)
    D, s2 = aids_reml.D[0], aids_reml.sigma**2
    z = np.column_stack([np.ones(4), grid["obstime"]])
    np.testing.assert_allclose(implied.variance[0], np.einsum("ra,ab,rb->r", z, D, z) + s2, rtol=1e-12)
    np.testing.assert_allclose(implied.V[0], z @ D @ z.T + s2 * np.eye(4), rtol=1e-12)


def test_rows_of_different_subjects_are_uncorrelated_and_nested_levels_share_their_effects():
    data = simulate(3, n_subjects=12, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (1 | id) + (1 | id:eye)"), data)
    fit = hierlmm.fit_ml(design)
    two = data.iloc[:0].copy()
    first = data[data["id"] == data["id"].iloc[0]].head(2)
    other = data[data["id"] != data["id"].iloc[0]].head(1)
    two = pd.concat([first, other])
    implied = implied_covariance(fit, rows=two).V[0]
    d_id, d_eye, s2 = fit.D[0][0, 0], fit.D[1][0, 0], fit.sigma**2
    same_eye = first["eye"].iloc[0] == first["eye"].iloc[1]
    assert implied[0, 1] == pytest.approx(d_id + (d_eye if same_eye else 0.0))
    assert implied[0, 2] == 0.0
    assert implied[2, 2] == pytest.approx(d_id + d_eye + s2)


def test_bayesian_implied_covariance_has_draws_near_reml():
    data = simulate(7, n_subjects=60)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), data)
    reml = hierlmm.fit_ml(design)
    bayes = hierlmm.fit_bayes(design, chains=2, draws=300, tune=300, seed=2, progressbar=False)
    subject = design.blocks[0].levels[0]
    post = implied_covariance(bayes, subject=subject)
    assert post.V.shape[0] == 600
    summary = post.summary("V")
    sd = post.V.std(axis=0)
    ml = implied_covariance(reml, subject=subject).V[0]
    assert np.all(np.abs(summary["mean"] - ml) < 1.5 * sd + 1e-12)
    assert np.all(summary["lower"] <= summary["mean"]) and np.all(summary["mean"] <= summary["upper"])
    table = icc(bayes)
    assert 0 < table.loc["id", "lower"] < table.loc["id", "icc"] < table.loc["id", "upper"] < 1


def test_icc_of_a_random_intercept_fit():
    data = simulate(2, n_subjects=30)
    fit = hierlmm.fit("y ~ t + (1 | id)", data)
    d, s2 = fit.D[0][0, 0], fit.sigma**2
    assert icc(fit).loc["id", "icc"] == pytest.approx(d / (d + s2))


def test_bad_arguments_say_what_to_give(aids_reml):
    with pytest.raises(hierlmm.DataError, match="either subject"):
        implied_covariance(aids_reml)
    with pytest.raises(hierlmm.DataError, match="not a level"):
        implied_covariance(aids_reml, subject="no-such-patient")
    assert isinstance(implied_covariance(aids_reml, subject=450), ImpliedCovariance)


def test_heatmap_and_variance_function_plots(aids_reml, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from hierlmm import plots

    grid = pd.DataFrame({"obstime": np.linspace(0, 18, 7), "drug": "ddC", "patient": "450"})
    implied = implied_covariance(aids_reml, rows=grid)
    fig = plots.covariance_heatmap(implied, labels=grid["obstime"])
    fig.savefig(tmp_path / "heat.png")
    image = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(image, implied.correlation[0])
    fig = plots.variance_function(implied, "obstime")
    line = fig.axes[0].get_lines()[0].get_ydata()
    np.testing.assert_allclose(line, implied.variance[0])
    fig.savefig(tmp_path / "var.png")
    assert (tmp_path / "heat.png").stat().st_size > 0


def test_rows_without_the_grouping_column_get_a_clear_error(aids_reml):
    grid = pd.DataFrame({"obstime": [0.0, 6.0], "drug": "ddC"})
    with pytest.raises(hierlmm.DataError, match="grouping column"):
        implied_covariance(aids_reml, rows=grid)
