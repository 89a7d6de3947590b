"""Posterior contrasts L beta and variance components near zero, with the prior beside them
(hierlmm.inference.posterior_contrasts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from paths import FIXTURES
from simulated import simulate

import hierlmm
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference.posterior_contrasts import contrast, variance_components

FAST = dict(chains=2, draws=400, tune=300, progressbar=False)
FORMULA = "y ~ t + x + (t | id)"
L = {"t": {"t": 1}, "t - x": {"t": 1, "x": -1}, "mean at t=2": {"(Intercept)": 1, "t": 2}}


@pytest.fixture(scope="module")
def design():
    return hierlmm.build_design(hierlmm.model_spec(FORMULA), simulate(7, n_subjects=60))


@pytest.fixture(scope="module")
def fit(design):
    return hierlmm.fit_bayes(design, seed=3, **FAST)


@pytest.fixture(scope="module")
def reml(design):
    return hierlmm.fit_ml(design, "REML")


@pytest.fixture(scope="module")
def negative_icc():
    """Compound symmetry with ICC -0.15 (200 subjects x 5), by the marginal model."""
    data = pd.read_csv(FIXTURES / "cs_negative_icc.csv")
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    return hierlmm.fit_bayes(design, kind="marginal", seed=4, **FAST)


def weights(fit, hypotheses):
    return np.array([[h.get(n, 0.0) for n in fit.design.fixef_names] for h in hypotheses.values()])


def test_contrast_is_L_times_the_draws(fit):
    table = contrast(fit, L)
    Lmat = weights(fit, L)
    assert list(table.index) == list(L)
    np.testing.assert_allclose(table["mean"], Lmat @ fit.beta, atol=1e-10)
    theta = fit.tree["posterior"]["beta"].values.reshape(-1, 3) @ Lmat.T
    np.testing.assert_allclose(table["sd"], theta.std(axis=0, ddof=1), rtol=1e-6)
    np.testing.assert_allclose(table["lower"], np.quantile(theta, 0.025, axis=0), rtol=1e-6)
    np.testing.assert_allclose(table["upper"], np.quantile(theta, 0.975, axis=0), rtol=1e-6)
    np.testing.assert_allclose(table["P(> 0)"] + table["P(< 0)"], 1.0)
    assert table.loc["t", "P(> 0)"] == 1.0  # the time slope (0.5 in the simulation, posterior sd 0.07)
    assert list(table.columns) == ["mean", "sd", "lower", "upper", "P(> 0)", "P(< 0)", "r_hat", "ess_bulk",
                                   "ess_tail", "mcse_mean"]
    # one coefficient: the fit's own posterior table, R-hat and ESS included
    single = contrast(fit, {"x": {"x": 1}}).iloc[0]
    own = fit.fixef().loc["x"]
    for column in ("mean", "sd", "lower", "upper", "r_hat", "ess_bulk", "ess_tail"):
        assert single[column] == pytest.approx(own[column], rel=1e-10)
    assert single["P(< 0)"] == pytest.approx(np.mean(fit.tree["posterior"]["beta"].values[..., 2] < 0))


def test_interval_covers_the_reml_estimate(fit, reml):
    post, freq = contrast(fit, L), contrast(reml, L)
    np.testing.assert_allclose(freq["estimate"], weights(reml, L) @ reml.beta, atol=1e-12)
    Lmat = weights(reml, L)
    np.testing.assert_allclose(freq["SE"], np.sqrt(np.diag(Lmat @ reml.cov_beta @ Lmat.T)), rtol=1e-12)
    np.testing.assert_allclose(freq["upper"] - freq["estimate"], 1.959963984540054 * freq["SE"], rtol=1e-10)
    assert "Wald" in freq.attrs["method"] and not any(c.startswith("P(") for c in freq.columns)
    # 60 subjects, flat-ish priors: the posterior mean sits within a fraction of a posterior SD of REML's estimate
    # (Monte Carlo error: mcse_mean, about sd / 20 here) and the 95% intervals nearly coincide
    z = (post["mean"] - freq["estimate"]) / post["sd"]
    assert np.all(np.abs(z) < 0.5), z
    assert np.all((post["lower"] < freq["estimate"]) & (freq["estimate"] < post["upper"]))
    np.testing.assert_allclose(post["sd"], freq["SE"], rtol=0.25)


def test_every_form_of_L_gives_the_same_answer(fit):
    names = list(fit.design.fixef_names)
    by_dict = contrast(fit, L)
    frame = pd.DataFrame(weights(fit, L), index=list(L), columns=names)
    pd.testing.assert_frame_equal(contrast(fit, frame), by_dict, check_names=False)
    by_array = contrast(fit, weights(fit, L))
    assert list(by_array.index) == ["t", "t - x", "(Intercept) + 2 t"]
    np.testing.assert_allclose(by_array.to_numpy(), by_dict.to_numpy())
    assert list(contrast(fit, np.array([0, 0.5, 0])).index) == ["0.5 t"]
    assert len(pd.concat([by_dict, by_array])) == 6  # attrs hold nothing that stops pandas from combining tables
    only_t = contrast(fit, pd.DataFrame({"t": [1.0]}, index=["slope"]))  # absent columns weigh 0
    assert only_t.loc["slope", "mean"] == pytest.approx(by_dict.loc["t", "mean"])


def test_contrast_refuses_bad_hypotheses(fit):
    for bad, match in [({"h": {"time": 1}}, "No fixed effect 'time'"), (np.ones((1, 4)), "one column per"),
                       ({"h": {"t": 0}}, "all weights 0"), (np.array([[0, np.nan, 1]]), "infinite"),
                       ({"h": [1, 0, 0]}, "map fixed-effect names"), ({"h": {"t": "one"}}, "not a number"),
                       (np.array([[0, 1, 0], [0, 1, 0]]), "same name"), ({}, "no hypotheses")]:
        with pytest.raises(SpecError, match=match):
            contrast(fit, bad)
    with pytest.raises(SpecError, match="ci_prob"):
        contrast(fit, L, ci_prob=95)
    with pytest.raises(DataError):
        contrast(fit.tree, L)


def test_variance_component_prior_is_the_fits_half_t(fit):
    n = 4000
    table = variance_components(fit, prior_draws=n)
    assert list(table.index) == ["sd[id:(Intercept)]", "sd[id:t]"]
    Z = fit.design.blocks[0].Z
    sigma = fit.tree["posterior"]["sigma"].values.mean()
    t3 = scipy.stats.t(3)
    for j, label in enumerate(table.index):
        row = table.loc[label]
        scale = fit.bayes_model.priors.sd_scale["id"][j]  # sd ~ HalfStudentT(3, scale)
        assert row["threshold"] == pytest.approx(0.1 * sigma / np.sqrt(np.mean(Z[:, j] ** 2)))
        for column, p in (("prior median", 0.5), ("prior lower", 0.025), ("prior upper", 0.975)):
            q = scale * t3.ppf((1 + p) / 2)  # quantile p of |T| scale
            density = 2 * t3.pdf(q / scale) / scale
            mc_se = np.sqrt(p * (1 - p) / n) / density  # standard error of a sample quantile
            assert abs(row[column] - q) < 4 * mc_se, (label, column, row[column], q)
        p0 = 2 * t3.cdf(row["threshold"] / scale) - 1
        assert abs(row["prior P(near zero)"] - p0) < 4 * np.sqrt(p0 * (1 - p0) / n) + 1e-3, (label, p0)
        # the posterior side is the fit's own table; the data moved both SDs away from zero
        own = fit.varcorr().loc[label]
        for column in ("mean", "sd", "lower", "upper", "r_hat", "ess_bulk"):
            assert row[column] == pytest.approx(own[column], rel=1e-10)
        assert row["P(near zero)"] == 0.0 < row["prior P(near zero)"] and row["P(< 0)"] == 0.0


def test_marginal_model_variance_may_be_negative(negative_icc):
    n = 4000
    table = variance_components(negative_icc, prior_draws=n)
    row = table.loc["D[id:(Intercept),(Intercept)]"]
    assert row["quantity"] == "variance"
    assert row["P(< 0)"] > 0.99 and row["P(near zero)"] < 0.01  # clearly negative, not near zero
    # prior: D = (lambda^2 - kappa) sigma^2 with lambda ~ HalfStudentT(3, 2.5 / rms(Z)) (here rms = 1), so
    # P(D < 0) = P(|T3| 2.5 < sqrt(kappa))
    p0 = 2 * scipy.stats.t(3).cdf(np.sqrt(negative_icc.bayes_model.kappa) / 2.5) - 1
    assert abs(row["prior P(< 0)"] - p0) < 4 * np.sqrt(p0 * (1 - p0) / n), (row["prior P(< 0)"], p0)
    assert row["threshold"] == pytest.approx((0.1 * negative_icc.tree["posterior"]["sigma"].values.mean()) ** 2)
    # contrasts read the same beta draws
    assert contrast(negative_icc, {"t": {"t": 1}}).loc["t", "mean"] == pytest.approx(negative_icc.beta[1])


def test_variance_components_options_and_refusals(fit, reml):
    custom = variance_components(fit, near_zero={"sd[id:t]": 0.4}, prior_draws=500)
    assert custom.loc["sd[id:t]", "threshold"] == 0.4
    draws = fit.tree["posterior"]["sd_id"].values[..., 1]
    assert custom.loc["sd[id:t]", "P(near zero)"] == pytest.approx(np.mean(draws < 0.4))
    looser = variance_components(fit, near_zero=0.5, prior_draws=500)
    assert np.all(looser["threshold"] > variance_components(fit, prior_draws=500)["threshold"])
    with pytest.raises(NotSupportedError, match="lrt"):
        variance_components(reml)
    for bad in (0, -1, "small", {"sd[id:z]": 0.1}, {"sd[id:t]": -0.1}):
        with pytest.raises(SpecError):
            variance_components(fit, near_zero=bad)
    with pytest.raises(SpecError, match="prior_draws"):
        variance_components(fit, prior_draws=10)


def test_errors_with_a_variance_function():
    """varIdent errors (a CorrelatedBayesFit): the prior comes from that fit's own model, the threshold from
    sigma_centred (the error SD at the geometric mean of the strata's ratios)."""
    data = simulate(7, n_subjects=60)
    design = hierlmm.build_design(hierlmm.model_spec(FORMULA), data)
    fit = hierlmm.fit_bayes(design, weights="varIdent(form = ~ 1 | g)", data=data, seed=3, chains=2, draws=200,
                            tune=200, progressbar=False)
    table = variance_components(fit, prior_draws=2000)
    sigma_centred = fit.tree["posterior"]["sigma_centred"].values.mean()
    assert table.loc["sd[id:(Intercept)]", "threshold"] == pytest.approx(0.1 * sigma_centred)
    scale = fit.bayes_model.priors.sd_scale["id"][0]
    q = scale * scipy.stats.t(3).ppf(0.75)  # prior median of HalfStudentT(3, scale)
    mc_se = 0.5 / np.sqrt(2000) / (2 * scipy.stats.t(3).pdf(q / scale) / scale)
    assert abs(table.loc["sd[id:(Intercept)]", "prior median"] - q) < 4 * mc_se
    assert contrast(fit, L).loc["t", "mean"] == pytest.approx(fit.beta[1])
