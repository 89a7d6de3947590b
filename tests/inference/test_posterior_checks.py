"""Model checks of fits (hierlmm.inference.posterior_checks) and their plots (hierlmm.report.check_plots).

Well-specified data are simulated from the fitted model; misspecified ones have AR(1) errors (fitted without a
serial correlation), heavy-tailed errors (t with 2 DF) or a random slope the fit omits. Seeds are fixed, so every
threshold below was met by margins stated beside it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from simulated import simulate

import hierlmm
from hierlmm.engines.bayes.posterior_result import flat_draws
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference.posterior_checks import loo_pit as subject_loo_pit
from hierlmm.inference.posterior_checks import (
    marginal_check,
    predictive_band,
    predictive_check,
    quantile_residuals,
    residual_summary,
    subject_coverage,
    uniform_qq,
    variogram_check,
)
from hierlmm.report.check_plots import (
    marginal_check_plot,
    predictive_check_plot,
    subject_band_plot,
    uniform_qq_plot,
    variogram_check_plot,
)

FAST = dict(chains=2, draws=200, tune=200, progressbar=False)
N_SUBJECTS = 60


def longitudinal(seed: int, *, n_subjects: int = 100, n_times: int = 8, rho: float = 0.0, slope_sd: float = 0.0,
                 t_df: float | None = None, intercept_sd: float = 1.0) -> pd.DataFrame:
    """Equally spaced times 0..n_times-1: random intercept (and slope), AR(1) errors of correlation rho, or t errors."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        b0, b1 = rng.normal(0, intercept_sd), rng.normal(0, slope_sd)
        if t_df is not None:
            e = rng.standard_t(t_df, n_times)
        else:
            e = np.empty(n_times)
            e[0] = rng.normal()
            for k in range(1, n_times):
                e[k] = rho * e[k - 1] + np.sqrt(1 - rho**2) * rng.normal()
        rows += [{"id": f"s{i}", "t": float(k), "y": 1 + 0.5 * k + b0 + b1 * k + 0.8 * e[k]} for k in range(n_times)]
    return pd.DataFrame(rows)


def design_of(formula: str, data: pd.DataFrame):
    return hierlmm.build_design(hierlmm.model_spec(formula), data)


@pytest.fixture(scope="module")
def data():
    return simulate(7, n_subjects=N_SUBJECTS)


@pytest.fixture(scope="module")
def fit(data):
    """The model the data were simulated from."""
    return hierlmm.fit_bayes(design_of("y ~ t + x + (t | id)", data), seed=3, **FAST)


@pytest.fixture(scope="module")
def serial_data():
    """AR(1) errors, correlation 0.8 between consecutive times."""
    return longitudinal(1, n_subjects=40, rho=0.8)


@pytest.fixture(scope="module")
def serial_fit(serial_data):
    """The AR(1) data fitted without a serial correlation."""
    return hierlmm.fit_bayes(design_of("y ~ t + (1 | id)", serial_data), seed=3, **FAST)


def test_residual_summary_is_the_posterior_of_y_minus_mu(fit):
    for level in (0, 1):
        table = residual_summary(fit, level=level, ci_prob=0.9)
        np.testing.assert_allclose(table["mean"], fit.design.y - fit.fitted(level), atol=1e-10)
        assert np.all(table["lower"] < table["mean"]) and np.all(table["mean"] < table["upper"])
    # level 0 by hand: y - X beta_s, equal-tailed 90% interval over the draws
    r = fit.design.y - flat_draws(fit, "beta") @ fit.design.X.T
    table = residual_summary(fit, level=0, ci_prob=0.9)
    np.testing.assert_allclose(table["upper"], np.quantile(r, 0.95, axis=0), atol=1e-12)
    assert list(table["row"]) == list(fit.design.rows) and list(table.columns[:3]) == ["row", "id", "y"]
    # the subject-level residuals are smaller: b_i absorbs the between-subject variation
    assert residual_summary(fit, level=1)["mean"].std() < 0.7 * table["mean"].std()


def test_subject_coverage_counts_the_rows_inside_the_band(fit):
    band = predictive_band(fit, ci_prob=0.8, seed=2)
    table = subject_coverage(fit, ci_prob=0.8, seed=2)
    assert list(table.index) == list(fit.design.blocks[0].levels)
    assert table["n_obs"].sum() == fit.design.n_obs
    s0 = band[band["id"] == "s0"]
    assert table.loc["s0", "coverage"] == pytest.approx(s0["inside"].mean())
    assert (table["all_inside"] == (table["coverage"] == 1)).all()
    # replicates of these subjects (their own b_i): at least the nominal coverage on average, not far above it
    # (measured 0.92 with ci_prob = 0.8)
    assert 0.8 <= band["inside"].mean() < 0.99
    assert subject_coverage(fit, ci_prob=0.99, seed=2)["coverage"].mean() > table["coverage"].mean()


def test_lag1_correlation_flags_serial_correlation_that_the_model_lacks(fit, serial_data, serial_fit):
    wrong = predictive_check(serial_fit, "lag1_correlation", seed=1)
    assert wrong.p_value < 0.01, wrong  # measured: 0 (observed 0.28, replicates about -0.15)
    assert wrong.observed > np.quantile(wrong.replicated, 0.99)
    right = predictive_check(fit, "lag1_correlation", seed=1)
    assert 0.05 < right.p_value < 0.95, right  # measured 0.18
    # the same AR(1) data fitted with corAR1: replicates with the fitted serial correlation reproduce it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few draws: ESS warnings
        ar1 = hierlmm.fit_bayes(design_of("y ~ t + (1 | id)", serial_data), seed=3, data=serial_data,
                                correlation="corAR1(form = ~ 1 | id)", **FAST)
    assert 0.05 < predictive_check(ar1, "lag1_correlation", seed=1).p_value < 0.95  # measured 0.57
    for name in ("within_variance", "mean", "sd"):  # features both models reproduce
        assert 0.05 < predictive_check(serial_fit, name, seed=1).p_value < 0.95


def test_predictive_check_named_and_callable_statistics_agree(fit):
    named = predictive_check(fit, "sd", seed=5, draws=100)
    assert named.replicated.shape == (100,)
    assert named.observed == pytest.approx(np.std(fit.design.y, ddof=1))

    def sd(y, design):
        return float(np.std(y, ddof=1))

    mine = predictive_check(fit, sd, seed=5, draws=100)
    assert mine.statistic == "sd"
    np.testing.assert_array_equal(mine.replicated, named.replicated)
    assert mine.p_value == named.p_value == np.mean(named.replicated >= named.observed)


def test_loo_pit_per_subject_is_psis_weighted_and_uniform(fit):
    u = subject_loo_pit(fit)
    levels = fit.design.blocks[0].levels
    assert len(u) == N_SUBJECTS and set(u.index) == set(levels)
    assert np.all((u >= 0) & (u <= 1))
    assert uniform_qq(u).ks_pvalue > 0.01
    # Rao-Blackwellised check: sum_s w_is Phi((mean(y_i) - m_is) / s_is) with ArviZ's PSIS weights
    ll = fit.tree["log_likelihood"]["y_subject"]
    S = ll.sizes["chain"] * ll.sizes["draw"]
    ess = fit.tree["posterior"].to_dataset().azstats.ess(method="mean")
    r_eff = np.hstack([ess[v].values.ravel() for v in ess.data_vars]).mean() / S
    log_w, _ = ll.azstats.psislw(r_eff=r_eff, dim=["chain", "draw"])
    w = np.exp(log_w.transpose(*ll.dims).values.reshape(S, -1))
    w /= w.sum(axis=0)
    block, beta = fit.design.blocks[0], flat_draws(fit, "beta")
    exact = []
    for k, label in enumerate(ll["subject"].values):
        idx = np.flatnonzero(block.group_index == block.levels.index(str(label)))
        V = hierlmm.implied_covariance(fit, subject=str(label)).V
        sd = np.sqrt(V.sum(axis=(1, 2))) / idx.size  # SD of a new subject's mean, per draw
        z = (fit.design.y[idx].mean() - beta @ fit.design.X[idx].mean(axis=0)) / sd
        exact.append(float(w[:, k] @ scipy.stats.norm.cdf(z)))
    diff = u.loc[ll["subject"].values.astype(str)].to_numpy() - np.array(exact)
    assert np.abs(diff).max() < 0.2 and np.abs(diff).mean() < 0.06  # one predictive draw per posterior draw


def test_marginal_model_fits_are_checked_without_random_effects(serial_data):
    marginal = hierlmm.fit_bayes(design_of("y ~ t + (1 | id)", serial_data), seed=3, kind="marginal", **FAST)
    with pytest.raises(NotSupportedError, match="no random effects"):
        residual_summary(marginal, level=1)
    table = residual_summary(marginal, level=0)
    np.testing.assert_allclose(table["mean"], marginal.design.y - marginal.fitted(0), atol=1e-10)
    assert predictive_check(marginal, "lag1_correlation").p_value < 0.01  # compound symmetry: measured 0
    with pytest.raises(NotSupportedError, match="no level-1 residuals"):
        variogram_check(marginal)
    u = subject_loo_pit(marginal)
    assert len(u) == 40 and np.all((u >= 0) & (u <= 1))


def test_the_fit_is_not_changed(fit):
    before = set(fit.tree.children)
    first = predictive_check(fit, "mean", seed=9)
    assert set(fit.tree.children) == before  # the replicates live on a copy
    np.testing.assert_array_equal(predictive_check(fit, "mean", seed=9).replicated, first.replicated)
    assert not np.array_equal(predictive_check(fit, "mean", seed=10).replicated, first.replicated)


def test_quantile_residuals_of_a_bayesian_fit_are_uniform(fit):
    q = quantile_residuals(fit, nsim=250, seed=1)
    assert q.shape == (fit.design.n_obs,) and abs(q.mean() - 0.5) < 0.05
    assert uniform_qq(q).ks_pvalue > 0.05


def test_quantile_residuals_are_dharmas_fraction_below():
    fit = hierlmm.fit("y ~ t + (1 | id)", longitudinal(0, n_subjects=30))
    Y = hierlmm.simulate(fit, 50, seed=4)
    q = quantile_residuals(fit, nsim=50, seed=4)
    np.testing.assert_array_equal(q, (Y < fit.design.y).mean(axis=0))  # continuous: no ties to randomise


@pytest.mark.parametrize(("case", "formula", "make"), [
    ("heavy-tailed errors", "y ~ t + (1 | id)", lambda s: longitudinal(s, t_df=2, intercept_sd=0.5)),
    ("random slope omitted", "y ~ t + (1 | id)", lambda s: longitudinal(s, slope_sd=1.0)),
])
def test_quantile_residuals_of_misspecified_reml_fits_are_not_uniform(case, formula, make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        right = hierlmm.fit(formula, longitudinal(2))
        wrong = hierlmm.fit(formula, make(2))
    q_right = quantile_residuals(right, seed=4)
    assert uniform_qq(q_right).ks_pvalue > 0.05 and abs(q_right.mean() - 0.5) < 0.03  # measured 0.21
    assert uniform_qq(quantile_residuals(wrong, seed=4)).ks_pvalue < 1e-3  # measured 3e-8, 1e-6


def test_uniform_qq_data():
    qq = uniform_qq([0.9, 0.1, 0.5, 0.3])
    np.testing.assert_allclose(qq.expected, [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(qq.observed, [0.1, 0.3, 0.5, 0.9])
    assert qq.ks_pvalue == pytest.approx(scipy.stats.kstest([0.9, 0.1, 0.5, 0.3], "uniform").pvalue)
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        uniform_qq([0.2, 1.5])


def test_errors_say_what_to_use():
    reml = hierlmm.fit("y ~ t + (1 | id)", longitudinal(0, n_subjects=20))
    for call in (lambda: residual_summary(reml), lambda: subject_coverage(reml),
                 lambda: predictive_check(reml, "mean"), lambda: subject_loo_pit(reml),
                 lambda: variogram_check(reml), lambda: marginal_check(reml)):
        with pytest.raises(NotSupportedError, match="no") as info:
            call()
        assert info.value.fix and "fit_bayes" in info.value.fix
    with pytest.raises(SpecError, match="nsim"):
        quantile_residuals(reml, nsim=1)
    with pytest.raises(DataError, match="fit"):
        quantile_residuals("not a fit")


def test_bad_arguments(fit):
    with pytest.raises(SpecError, match="Unknown statistic") as info:
        predictive_check(fit, "lag2")
    assert info.value.given == "lag2" and "lag1_correlation" in info.value.fix
    with pytest.raises(SpecError, match="draws"):
        predictive_check(fit, "mean", draws=0)
    with pytest.raises(SpecError, match="ci_prob"):
        residual_summary(fit, ci_prob=95)
    with pytest.raises(SpecError, match="level"):
        residual_summary(fit, level=2)
    with pytest.raises(SpecError, match="LOO level"):
        subject_loo_pit(fit, level="row")


def test_plots_return_figures_and_write_nothing(fit, data, tmp_path, monkeypatch):
    import matplotlib.figure

    monkeypatch.chdir(tmp_path)
    figures = [uniform_qq_plot(quantile_residuals(fit, nsim=100)),
               subject_band_plot(fit, ["s0", "s1", "s2"], data=data, time="t"),
               subject_band_plot(fit, ["s3"]),
               predictive_check_plot(predictive_check(fit, "within_variance", draws=100))]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figures)
    assert len(figures[1].axes[0].collections) == 1  # the band
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="levels of 'id'"):
        subject_band_plot(fit, ["nobody"])
    with pytest.raises(DataError, match="both"):
        subject_band_plot(fit, ["s0"], time="t")


def test_variogram_check_flags_serial_correlation_that_random_intercepts_leave(tmp_path, monkeypatch):
    """AR(1) errors (correlation 0.8, 12 times): random intercepts only against corAR1."""
    import matplotlib.figure

    data = longitudinal(1, n_subjects=40, n_times=12, rho=0.8)
    design = design_of("y ~ t + (1 | id)", data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # few draws: ESS warnings
        intercepts = hierlmm.fit_bayes(design, seed=3, **FAST)
        ar1 = hierlmm.fit_bayes(design, seed=3, data=data, correlation="corAR1(form = ~ 1 | id)", **FAST)
    wrong = variogram_check(intercepts, "t", data=data)
    assert list(wrong.columns) == ["dist", "n_pairs", "variog", "lower", "median", "upper", "inside", "p_value"]
    # the same pairs and classes as hierlmm.variogram (its helpers)
    plain = hierlmm.variogram(intercepts, "t", data=data, type="response")
    np.testing.assert_array_equal(wrong["dist"], plain["dist"])
    np.testing.assert_array_equal(wrong["n_pairs"], plain["n_pairs"])
    # measured: distances 1 and 2 below the band (0.12 and 0.20 against lower 0.23), 7 of the 8 classes at 5..11
    # above it (p-values 0.01 to 0.045): the flat band of independent errors against a rising curve
    assert (wrong["variog"] < wrong["lower"]).iloc[:2].all()
    assert (wrong["variog"] > wrong["upper"])[wrong["dist"] >= 5].sum() >= 5
    right = variogram_check(ar1, "t", data=data)
    assert right["inside"].mean() >= 0.9 and right["inside"].iloc[:3].all()  # measured: 11 of 11 inside
    assert (right["p_value"] > 0.05).all()  # measured 0.195 to 0.60
    pearson = variogram_check(ar1, "t", data=data, type="pearson", draws=100, seed=2)
    # scale 1 (divided by each draw's sigma): measured 11 of 11 classes inside, variog 0.30 to 1.25
    assert pearson["inside"].mean() >= 0.9 and pearson["variog"].iloc[-1] > 0.5
    monkeypatch.chdir(tmp_path)
    assert isinstance(variogram_check_plot(wrong), matplotlib.figure.Figure)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SpecError, match="response or pearson"):
        variogram_check(ar1, type="normalized")
    with pytest.raises(DataError, match="variogram_check"):
        variogram_check_plot(plain)


def test_marginal_check_gives_arviz_the_fits_y(fit, tmp_path, monkeypatch):
    import arviz_plots as azp

    before = set(fit.tree.children)
    tree = marginal_check(fit, seed=2, draws=100)
    np.testing.assert_array_equal(tree["observed_data"]["y"].values, fit.design.y)
    assert tree["posterior_predictive"]["y"].shape == (1, 100, fit.design.n_obs)
    seen = {}
    real = azp.plot_ppc_dist

    def spy(dt, **kwargs):
        seen["dt"] = dt
        seen["result"] = real(dt, **kwargs)
        return seen["result"]

    monkeypatch.setattr(azp, "plot_ppc_dist", spy)
    monkeypatch.chdir(tmp_path)
    collection = marginal_check_plot(fit, seed=2, draws=100, num_samples=30)
    assert collection is seen["result"] and type(collection).__name__ == "PlotCollection"
    np.testing.assert_array_equal(seen["dt"]["observed_data"]["y"].values, fit.design.y)
    assert collection.viz["predictive_dist"]["y"].sizes["sample"] == 30
    x = collection.viz["observed_dist"]["y"].item().get_xdata()  # the observed density spans the fit's y
    y = fit.design.y
    assert np.abs([x.min() - y.min(), x.max() - y.max()]).max() < 0.02 * np.ptp(y)  # ArviZ's KDE grid: the range
    assert list(tmp_path.iterdir()) == [] and set(fit.tree.children) == before
