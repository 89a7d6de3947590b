"""The error covariance sigma^2 S R S of fits with serially correlated and/or heteroscedastic errors
(hierlmm.inference.error_covariance): implied_covariance, the posterior predictive and predictive bands, checked against
nlme's definitions written out here and against the fitted likelihood."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from simulated import simulate

import hierlmm
from hierlmm.errors import DataError

AIDS_FORMULA = "CD4 ~ obstime + (1 | patient)"
AIDS_CORRELATION = "corExp(form = ~ obstime | patient)"
AIDS_WEIGHTS = "varExp(form = ~ obstime)"


def _fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hierlmm.fit(*args, **kwargs)


def _aids_v(fit, obstime: np.ndarray, patients: np.ndarray) -> np.ndarray:
    """V of AIDS rows (random intercepts, corExp, varExp) from nlme's definitions: D 1 1' within a patient plus
    sigma^2 s_j s_k exp(-|t_j - t_k| / range), s_j = exp(expon t_j)."""
    t = np.asarray(obstime, dtype=float)
    same = np.asarray(patients)[:, None] == np.asarray(patients)[None, :]
    s = np.exp(fit.variance_parameters["expon"] * t)
    R = np.exp(-np.abs(t[:, None] - t[None, :]) / fit.correlation_parameters["range"])
    return same * (fit.D[0][0, 0] + fit.sigma**2 * s[:, None] * R * s[None, :])


@pytest.fixture(scope="module")
def aids_fits(chapter_data):
    aids = chapter_data("aids")
    return aids, {m: _fit(AIDS_FORMULA, aids, correlation=AIDS_CORRELATION, weights=AIDS_WEIGHTS, method=m)
                  for m in ("REML", "ML")}


def test_reml_implied_covariance_is_z_d_z_plus_sigma2_s_r_s(aids_fits):
    aids, fits = aids_fits
    fit = fits["REML"]
    assert fit.variance_parameters["expon"] != 0 and fit.correlation_parameters["range"] > 0
    for patient in ("12", "450", "1"):
        rows = aids[aids["patient"].astype(str) == patient]
        implied = hierlmm.implied_covariance(fit, subject=patient)
        assert implied.V.shape == (1, len(rows), len(rows))
        np.testing.assert_allclose(implied.V[0], _aids_v(fit, rows["obstime"].to_numpy(), rows["patient"].to_numpy()),
                                   rtol=1e-12)


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_the_likelihood_is_the_sum_of_normals_with_the_implied_covariance(aids_fits, method):
    """sum_i log N(y_i | X_i beta, V_i) is the ML log-likelihood; REML adds p/2 log(2 pi) - 1/2 log|X'V^-1X|."""
    _, fits = aids_fits
    fit = fits[method]
    design, block = fit.design, fit.design.blocks[0]
    total, XtVX = 0.0, np.zeros((design.p, design.p))
    for k, level in enumerate(block.levels):
        idx = np.flatnonzero(block.group_index == k)
        V = hierlmm.implied_covariance(fit, subject=level).V[0]
        X = design.X[idx]
        total += scipy.stats.multivariate_normal(X @ fit.beta, V).logpdf(design.y[idx])
        XtVX += X.T @ np.linalg.solve(V, X)
    if method == "REML":
        total += 0.5 * design.p * np.log(2 * np.pi) - 0.5 * np.linalg.slogdet(XtVX)[1]
    assert total == pytest.approx(fit.loglik, abs=1e-6)


def test_new_rows_reproduce_a_training_subject_and_take_new_times(aids_fits):
    aids, fits = aids_fits
    fit = fits["REML"]
    training = hierlmm.implied_covariance(fit, subject="12")
    rows = aids.iloc[training.rows["row"].to_numpy()]
    new = hierlmm.implied_covariance(fit, rows=rows.drop(columns="CD4"))
    np.testing.assert_allclose(new.V, training.V, rtol=1e-12)
    flipped = hierlmm.implied_covariance(fit, rows=rows.iloc[::-1])
    np.testing.assert_allclose(flipped.V[0], training.V[0][::-1, ::-1], rtol=1e-12)
    # a time grid for a new patient and two visits of another: independent between patients
    grid = pd.DataFrame({"obstime": [0, 1, 5, 9, 18, 3, 7], "patient": ["new"] * 5 + ["other"] * 2})
    V = hierlmm.implied_covariance(fit, rows=grid).V[0]
    np.testing.assert_allclose(V, _aids_v(fit, grid["obstime"].to_numpy(), grid["patient"].to_numpy()), rtol=1e-12)
    assert np.all(V[:5, 5:] == 0)


@pytest.fixture(scope="module")
def simulated_reml():
    data = simulate(4, n_subjects=16)
    fit = _fit("y ~ x + (1 | id)", data, correlation="corExp(form = ~ t | id)", weights="varIdent(form = ~ 1 | g)")
    return data, fit


def test_new_rows_need_the_time_column_the_strata_and_known_strata(simulated_reml):
    data, fit = simulated_reml
    rows = data[data["id"] == "s3"]
    np.testing.assert_allclose(hierlmm.implied_covariance(fit, rows=rows).V,
                               hierlmm.implied_covariance(fit, subject="s3").V, rtol=1e-12)
    with pytest.raises(DataError, match="time column 't'") as missing_time:
        hierlmm.implied_covariance(fit, rows=rows.drop(columns="t"))
    assert "Add 't'" in str(missing_time.value)
    with pytest.raises(DataError, match="column 'g'"):
        hierlmm.implied_covariance(fit, rows=rows.drop(columns="g"))
    with pytest.raises(DataError, match=r"did not see: \['c'\]"):
        hierlmm.implied_covariance(fit, rows=rows.assign(g="c"))


def test_without_a_time_the_positions_within_the_subject_are_the_times():
    """corAR1(form = ~ 1 | id): the rows' positions within their subject, in row order, even when two subjects'
    rows interleave: phi^|k - l| within a subject, 0 between subjects."""
    data = simulate(6, n_subjects=16)
    fit = _fit("y ~ t + (1 | id)", data, correlation="corAR1(form = ~ 1 | id)")
    phi = fit.correlation_parameters["phi"]
    assert abs(phi) > 0.05  # positions matter: phi^1 and phi^2 differ
    a, b = data[data["id"] == "s0"], data[data["id"] == "s14"]
    assert len(a) >= 3 and len(b) >= 2
    training = hierlmm.implied_covariance(fit, subject="s0").V
    np.testing.assert_allclose(hierlmm.implied_covariance(fit, rows=a).V, training, rtol=1e-12)
    rows = pd.concat([a.iloc[:2], b.iloc[:1], a.iloc[2:], b.iloc[1:]])
    ids = rows["id"].to_numpy()
    pos = rows.groupby("id").cumcount().to_numpy()
    same = ids[:, None] == ids[None, :]
    expected = same * (fit.D[0][0, 0] + fit.sigma**2 * phi ** np.abs(pos[:, None] - pos[None, :]))
    np.testing.assert_allclose(hierlmm.implied_covariance(fit, rows=rows).V[0], expected, rtol=1e-12)


def test_new_rows_of_a_corar1_fit_need_integer_times():
    """As the training rows do: phi^lag with a fractional lag is no AR(1) correlation (NaN for phi < 0)."""
    data = simulate(6, n_subjects=16)
    data["visit"] = (data.groupby("id").cumcount() * 2).astype(float)
    fit = _fit("y ~ t + (1 | id)", data, correlation="corAR1(form = ~ visit | id)")
    rows = data[data["id"] == "s0"]
    assert np.all(np.isfinite(hierlmm.implied_covariance(fit, rows=rows).V[0]))
    with pytest.raises(DataError, match="(?s)non-integer values in new rows.*corCAR1"):
        hierlmm.implied_covariance(fit, rows=rows.assign(visit=rows["visit"] + 0.5 * (rows["visit"] > 0)))


def test_the_icc_of_a_fit_with_an_error_structure_is_a_clear_error(simulated_reml):
    with pytest.raises(hierlmm.NotSupportedError, match="implied_covariance"):
        hierlmm.icc(simulated_reml[1])


@pytest.mark.parametrize("weights", ["varIdent(form = ~ 1 | g)", "varPower(form = ~ t | g)", "varExp(form = ~ x)"])
def test_a_variance_function_on_new_rows_rebuilds_its_training_design(weights):
    """new_rows on the training rows, in any order, gives the rows of the bound M (strata by label, not order)."""
    data = simulate(5, n_subjects=14)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    bound = hierlmm.parse_weights(weights).bind(design, data)
    perm = np.random.default_rng(0).permutation(design.n_obs)
    training = data.iloc[design.rows[perm]]
    np.testing.assert_array_equal(bound.new_rows(training), bound.M[perm])
    if "varPower" in weights:
        with pytest.raises(DataError, match="zero or negative in 1 new rows"):
            bound.new_rows(training.head(3).assign(t=[1.0, 0.0, 2.0]))


# --- Bayesian fits -------------------------------------------------------------------------------------------------

RANGE, RATIO, SIGMA = 1.5, 2.0, 0.6


def _serially_correlated(seed: int, n_subjects: int) -> pd.DataFrame:
    """simulate()'s rows with new responses: random intercepts and errors N(0, SIGMA^2 S R S), corExp of range
    RANGE in t and SD ratio RATIO in stratum b."""
    data = simulate(seed, n_subjects)
    rng = np.random.default_rng(seed + 100)
    y = np.empty(len(data))
    for _, rows in data.groupby("id", sort=False).indices.items():
        t = data["t"].to_numpy()[rows]
        s = np.where(data["g"].to_numpy()[rows] == "b", RATIO, 1.0)
        E = SIGMA**2 * s[:, None] * np.exp(-np.abs(t[:, None] - t[None, :]) / RANGE) * s[None, :]
        mean = 1 + 0.5 * t - 0.3 * data["x"].to_numpy()[rows] + rng.normal(0, 1.0)
        y[rows] = rng.multivariate_normal(mean, E)
    return data.assign(y=y)


@pytest.fixture(scope="module")
def bayes_fit():
    data = _serially_correlated(7, 40)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (1 | id)"), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit_bayes(design, data=data, correlation="corExp(form = ~ t | id)",
                                weights="varIdent(form = ~ 1 | g)", chains=2, draws=100, tune=150, progressbar=False)
    return data, fit


def _draws(fit) -> dict[str, np.ndarray]:
    post = fit.tree["posterior"]
    flat = {k: post[k].values.reshape(-1, *post[k].values.shape[2:]) for k in ("beta", "sigma", "range", "sd_id")}
    flat["ratio_b"] = np.exp(post["omega"].sel(log_sd="b").values.reshape(-1))
    flat["b"] = post["b_id"].values.reshape(-1, *post["b_id"].values.shape[2:])[..., 0]
    return flat


def _error_cov(p: dict, s: int, t: np.ndarray, g: np.ndarray) -> np.ndarray:
    """sigma^2 S R S of one subject at draw s, from nlme's definitions (corExp, varIdent with reference a)."""
    ratio = np.where(g == "b", p["ratio_b"][s], 1.0)
    R = np.exp(-np.abs(t[:, None] - t[None, :]) / p["range"][s])
    return p["sigma"][s] ** 2 * ratio[:, None] * R * ratio[None, :]


def test_bayes_implied_covariance_per_draw(bayes_fit):
    data, fit = bayes_fit
    p = _draws(fit)
    assert fit.bayes_model.variance.levels == ("a", "b")  # s0 (stratum a) comes first: the reference stratum
    for subject in ("s1", "s2"):  # strata b and a
        rows = data[data["id"] == subject]
        t, g = rows["t"].to_numpy(), rows["g"].to_numpy()
        implied = hierlmm.implied_covariance(fit, subject=subject)
        assert implied.V.shape == (p["sigma"].size, len(rows), len(rows))
        new = hierlmm.implied_covariance(fit, rows=rows)
        np.testing.assert_allclose(new.V, implied.V, rtol=1e-12)
        for s in (0, 77, p["sigma"].size - 1):
            expected = p["sd_id"][s, 0] ** 2 + _error_cov(p, s, t, g)
            np.testing.assert_allclose(implied.V[s], expected, rtol=1e-10)


def test_posterior_predictive_errors_have_the_error_covariance(bayes_fit, monkeypatch):
    """At every draw, chol(sigma^2 S_i R_i S_i)^-1 (y_rep_i - X_i beta - Z_i b_i) is N(0, I): mean 0, variance 1,
    adjacent rows uncorrelated. Errors drawn iid with the right SDs would fail (corExp's range is well away
    from 0). Chunks of 64 draws: 200 draws in four chunks, the last one partial."""
    data, fit = bayes_fit
    p = _draws(fit)
    assert np.median(p["range"]) > 0.5
    monkeypatch.setattr("hierlmm.inference.error_covariance.CHUNK", 64)
    hierlmm.add_posterior_predictive(fit, seed=3)
    y_rep = fit.tree["posterior_predictive"]["y"].values.reshape(p["sigma"].size, -1)
    design = fit.design
    used = data.iloc[design.rows]
    block = design.blocks[0]
    mu = p["beta"] @ design.X.T + p["b"][:, block.group_index]
    white, lag = [], []
    for k in range(block.n_levels):
        idx = np.flatnonzero(block.group_index == k)
        t, g = used["t"].to_numpy()[idx], used["g"].to_numpy()[idx]
        for s in range(p["sigma"].size):
            w = np.linalg.solve(np.linalg.cholesky(_error_cov(p, s, t, g)), y_rep[s, idx] - mu[s, idx])
            white.append(w)
            lag.append(w[1:] * w[:-1])
    white, lag = np.concatenate(white), np.concatenate(lag)
    assert abs(white.mean()) < 4 / np.sqrt(white.size)
    assert white.var() == pytest.approx(1.0, abs=0.05)
    assert abs(lag.mean()) < 0.05


def test_predictive_bands_scale_with_the_sd_ratio(bayes_fit):
    _, fit = bayes_fit
    p = _draws(fit)
    n = 300
    grid = pd.DataFrame({"t": 2.0, "x": 0.0, "g": ["a"] * n + ["b"] * n})
    band = hierlmm.trajectories(fit, grid, predictive=True, ci_prob=0.8, seed=5)
    width = (band["upper"] - band["lower"]).to_numpy()
    ratio = width[n:].mean() / width[:n].mean()
    # expected band widths, by Monte Carlo over the same posterior draws: a new outcome of a new subject at level 0,
    # x'beta + sqrt(D + sigma^2 s^2) e
    assert fit.design.fixef_names == ("(Intercept)", "t", "x")
    mean = p["beta"] @ np.array([1.0, 2.0, 0.0])
    e = np.random.default_rng(11).standard_normal((mean.size, 400))
    expected = {}
    for stratum, s in (("a", 1.0), ("b", p["ratio_b"])):
        sd = np.sqrt(p["sd_id"][:, 0] ** 2 + (p["sigma"] * s) ** 2)
        lo, hi = np.quantile(mean[:, None] + sd[:, None] * e, [0.1, 0.9])
        expected[stratum] = hi - lo
    assert ratio > 1.1  # the data's stratum b is twice as noisy
    assert ratio == pytest.approx(expected["b"] / expected["a"], rel=0.05)
    assert width[:n].mean() == pytest.approx(expected["a"], rel=0.05)
