"""Predictions with intervals for every fit kind, and dynamic predictions from a history.

The R reference (``tests/fixtures/make_dynamic_prediction_reference.R``) fits nlme models without some subjects and
computes, by hand, ``b = D Z' V^-1 (y - X beta)``, ``Var(b | y) = D - D Z' V^-1 Z D`` and the plug-in predictions
and their standard errors at the subjects' later visits and on a time grid.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from paths import FIXTURES

import hierlmm
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference import prediction as prediction_module
from hierlmm.inference.implied_covariance import implied_covariance
from hierlmm.inference.prediction import predict
from hierlmm.structures.error_parameters import ErrorParameters

REFERENCE = json.loads((FIXTURES / "dynamic_prediction_reference.json").read_text())
FORMULAS = {
    "aids_ri_rs": ("CD4 ~ obstime + obstime:drug + (obstime | patient)", {}),
    "aids_ri_corexp": ("CD4 ~ obstime + obstime:drug + (1 | patient)",
                       {"correlation": "corExp(form = ~ obstime | patient)"}),
    "pbc2_ns": ("log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex + (ns(year, 2) | id)", {}),
    "aids_ri_rs_varident": ("CD4 ~ obstime + obstime:drug + (obstime | patient)",
                            {"weights": "varIdent(form = ~ 1 | drug)"}),
}
GROUP = {"aids": "patient", "pbc2": "id"}


def _frame(columns: dict, group: str, subject: str, skip: tuple[str, ...] = ("kind", "row1", "row0", "y")
           ) -> pd.DataFrame:
    frame = pd.DataFrame({k: v for k, v in columns.items() if k not in skip and k != "y_observed"})
    frame[group] = subject
    return frame


@pytest.fixture(scope="module")
def data(chapter_data):
    pbc2 = chapter_data("pbc2")
    pbc2 = hierlmm.datasets.add_baseline(pbc2, "prothrombin", "id", name="basePro")
    return {"aids": chapter_data("aids"), "pbc2": pbc2}


@pytest.fixture(scope="module")
def reference_fits(data):
    fits = {}
    for name, case in REFERENCE["cases"].items():
        dataset = "pbc2" if name.startswith("pbc2") else "aids"
        frame = data[dataset]
        group = GROUP[dataset]
        train = frame[~frame[group].astype(str).isin(case["held_out"])].reset_index(drop=True)
        formula, options = FORMULAS[name]
        fits[name] = (hierlmm.fit(formula, train, **options), dataset)
    return fits


@pytest.mark.parametrize("name", list(REFERENCE["cases"]))
def test_dynamic_predictions_equal_the_plug_in_computation_in_r(name, reference_fits):
    fit, dataset = reference_fits[name]
    case = REFERENCE["cases"][name]
    group = GROUP[dataset]
    beta = pd.Series(fit.beta, index=fit.design.fixef_names)[case["fixef"]["names"]]
    np.testing.assert_allclose(beta, case["fixef"]["value"], rtol=1e-4, atol=1e-6)
    for entry in case["predictions"]:
        subject = f"{entry['id']}"
        future = _frame(entry["future"], group, subject)
        history = _frame(entry["history"], group, subject) if entry["k"] else None
        if history is not None and dataset == "pbc2":
            history["serBilir"] = entry["history"]["serBilir"]
        out = predict(fit, future, level=1, interval="prediction", history=history)
        label = f"{name}, subject {subject}, k={entry['k']}"
        np.testing.assert_allclose(out["fit"], entry["fit"], rtol=1e-4, atol=1e-4, err_msg=label)
        np.testing.assert_allclose(out["se"] ** 2, entry["var_conf"], rtol=1e-4, atol=1e-4, err_msg=label)
        np.testing.assert_allclose(out["y_fit"], entry["y_fit"], rtol=1e-4, atol=1e-4, err_msg=label)
        np.testing.assert_allclose(out["y_se"] ** 2, np.clip(entry["var_pred"], 0, None), rtol=1e-4, atol=1e-4,
                                   err_msg=label)
        block = fit.design.blocks[0]
        b = out.b.loc[(block.factor, subject)].to_numpy(dtype=float)
        np.testing.assert_allclose(b, entry["b"], rtol=1e-4, atol=1e-4, err_msg=label)
        np.testing.assert_allclose(out.b_cov[(block.factor, subject)], np.atleast_2d(entry["var_b"]), rtol=1e-4,
                                   atol=1e-4, err_msg=label)
        z = scipy.stats.norm.ppf(0.975)
        np.testing.assert_allclose(out["upper"] - out["y_fit"], z * out["y_se"], atol=1e-12)


# ---- consistency on the training data (any data set) -------------------------------------------------------------
@pytest.fixture(scope="module")
def pbc2():
    return hierlmm.datasets.add_baseline(hierlmm.datasets.load("pbc2"), "prothrombin", "id", name="basePro")


@pytest.fixture(scope="module")
def fits(pbc2):
    small = pbc2[pbc2["id"].isin(pbc2["id"].unique()[:80])].reset_index(drop=True)
    formula = "log(serBilir) ~ year * sex + (year | id)"
    return small, {
        "plain": hierlmm.fit(formula, small),
        "ml": hierlmm.fit(formula, small, method="ML"),
        "correlated": hierlmm.fit("log(serBilir) ~ year * sex + (1 | id)", small,
                                  correlation="corExp(form = ~ year | id)"),
        "heteroscedastic": hierlmm.fit(formula, small, weights="varIdent(form = ~ 1 | sex)"),
        "pddiag": hierlmm.fit("log(serBilir) ~ year * sex + (year || id)", small),
    }


@pytest.mark.parametrize("kind", ["plain", "ml", "correlated", "heteroscedastic", "pddiag"])
def test_level_one_on_the_training_rows_is_the_fitted_trajectory(fits, kind):
    small, models = fits
    fit = models[kind]
    out = predict(fit, small, level=1, interval="confidence")
    np.testing.assert_allclose(out["fit"], fit.fitted(level=1), atol=1e-8)
    assert (out["se"] > 0).all() and (out["lower"] < out["fit"]).all()


@pytest.mark.parametrize("kind", ["plain", "correlated", "heteroscedastic"])
def test_a_history_of_the_training_rows_is_the_fit_itself(fits, kind):
    small, models = fits
    fit = models[kind]
    grid = small.groupby("id").head(1).assign(year=15.0)
    interval = "confidence" if kind == "correlated" else "prediction"
    own = predict(fit, grid, level=1, interval=interval)
    given = predict(fit, grid, level=1, interval=interval, history=small)
    pd.testing.assert_frame_equal(own.table, given.table, atol=1e-8)


def test_a_fitted_subjects_new_outcomes_condition_on_its_past_errors(fits):
    """With serially correlated errors, a fitted subject's training rows (their times are kept in the design) condition
    the new outcome, as its rows given as history do; when the correlation's time is not a column of the model the
    times are not kept, and the prediction asks for history=."""
    small, models = fits
    grid = small.groupby("id").head(1).assign(year=15.0)
    fit = models["correlated"]
    own = predict(fit, grid, level=1, interval="prediction")
    given = predict(fit, grid, level=1, interval="prediction", history=small)
    pd.testing.assert_frame_equal(own.table, given.table, atol=1e-8)
    subject = grid["id"].iloc[3]
    mean, var = _dense_conditional(fit, small[small["id"] == subject], grid[grid["id"] == subject])
    np.testing.assert_allclose(own["y_fit"].iloc[3], mean[0], atol=1e-8)
    np.testing.assert_allclose(own["y_se"].iloc[3] ** 2, var[0], atol=1e-8)
    hidden_time = hierlmm.fit("log(serBilir) ~ sex + (1 | id)", small, correlation="corExp(form = ~ year | id)")
    with pytest.raises(DataError, match="history=data"):
        predict(hidden_time, grid, level=1, interval="prediction")
    predict(hidden_time, grid, level=1, interval="confidence")  # the mean needs only the training rows' own errors
    out = predict(hidden_time, grid, level=1, interval="prediction", history=small)
    assert (out["y_se"] > 0).all()


def _dense_conditional(fit, history: pd.DataFrame, future: pd.DataFrame):
    """Brute force: the joint normal of (y_h, y_f) from implied_covariance, conditioned with numpy."""
    both = pd.concat([history, future], ignore_index=True)
    V = implied_covariance(fit, rows=both).V[0]
    X, _ = hierlmm.design.design.new_model_matrices(fit.design, both)
    mu = X @ fit.beta
    n_h = len(history)
    y_h = np.log(history["serBilir"].to_numpy())
    K = V[n_h:, :n_h] @ np.linalg.inv(V[:n_h, :n_h])
    mean = mu[n_h:] + K @ (y_h - mu[:n_h])
    A = X[n_h:] - K @ X[:n_h]
    var = V[n_h:, n_h:] - K @ V[:n_h, n_h:] + A @ fit.cov_beta @ A.T
    return mean, np.diag(var)


@pytest.mark.parametrize("kind", ["plain", "correlated", "heteroscedastic"])
def test_a_new_subject_is_the_conditional_normal_of_its_future_given_its_past(fits, pbc2, kind):
    small, models = fits
    fit = models[kind]
    other = pbc2[~pbc2["id"].isin(small["id"])]
    subject = other[other.groupby("id")["year"].transform("size") >= 5]["id"].iloc[0]
    rows = other[other["id"] == subject].reset_index(drop=True)
    history, future = rows.iloc[:3], rows.iloc[3:]
    out = predict(fit, future, level=1, interval="prediction", history=history)
    mean, var = _dense_conditional(fit, history, future)
    np.testing.assert_allclose(out["y_fit"], mean, atol=1e-8)
    np.testing.assert_allclose(out["y_se"] ** 2, var, atol=1e-8)


def test_a_new_subject_without_history_has_the_population_mean_and_wider_bands(fits):
    small, models = fits
    fit = models["plain"]
    grid = pd.DataFrame({"id": "new", "year": [0.0, 5.0, 10.0], "sex": "female"})
    subject = predict(fit, grid, level=1, interval="confidence")
    population = predict(fit, grid, level=0, interval="confidence")
    np.testing.assert_allclose(subject["fit"], population["fit"])
    assert (subject["se"] > population["se"]).all()
    new_outcome = predict(fit, grid, level=0, interval="prediction")
    V = implied_covariance(fit, rows=grid).V[0]
    np.testing.assert_allclose(new_outcome["y_se"] ** 2, population["se"] ** 2 + np.diag(V), atol=1e-10)
    np.testing.assert_allclose(predict(fit, grid, level=1, interval="prediction")["y_se"], new_outcome["y_se"])


def test_level_zero_reproduces_the_chapter_effect_plot(reference, chapter_data):
    ref = reference("pbc2_effect_plot")
    pbc2 = hierlmm.datasets.add_baseline(chapter_data("pbc2"), "prothrombin", "id", name="basePro")
    fit = hierlmm.fit("log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex + (ns(year, 2) | id)", pbc2)
    grid = pd.DataFrame(ref["grid"])
    out = predict(fit, grid.assign(age=49.0, basePro=10.6), level=0)
    np.testing.assert_allclose(out["fit"], grid["pred"], atol=1e-4)
    np.testing.assert_allclose(out["lower"], grid["low"], atol=1e-4)
    np.testing.assert_allclose(out["upper"], grid["upp"], atol=1e-4)


def test_crossed_factors_condition_on_all_rows():
    rng = np.random.default_rng(3)
    n_s, n_i = 12, 8
    frame = pd.DataFrame([(s, i) for s in range(n_s) for i in range(n_i)], columns=["subject", "item"])
    frame["y"] = (rng.normal(size=n_s)[frame["subject"]] + rng.normal(size=n_i)[frame["item"]]
                  + rng.normal(scale=0.5, size=len(frame)))
    frame["subject"], frame["item"] = "s" + frame["subject"].astype(str), "i" + frame["item"].astype(str)
    fit = hierlmm.fit("y ~ 1 + (1 | subject) + (1 | item)", frame)
    out = predict(fit, frame, level=1, interval="confidence")
    np.testing.assert_allclose(out["fit"], fit.fitted(level=1), atol=1e-6)
    new = pd.DataFrame({"subject": ["s0", "new"], "item": ["new", "i0"]})
    got = predict(fit, new, level=1, interval="confidence")
    assert np.isfinite(got["se"]).all()
    with pytest.raises(NotSupportedError, match="crossed"):
        predict(fit, new, level=1, history=frame)


# ---- Bayes ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bayes(fits):
    small, models = fits
    return hierlmm.fit_bayes(models["plain"].design, chains=2, draws=400, tune=400, seed=5, progressbar=False)


def test_bayesian_draws_at_fixed_parameters_are_the_plug_in_distribution(fits, pbc2, bayes, monkeypatch):
    """With every posterior draw at the REML estimates, the conditional draws of b and of new outcomes have the
    plug-in means and variances (minus beta's uncertainty), within Monte Carlo error."""
    small, models = fits
    for kind in ("plain", "correlated", "heteroscedastic"):
        fit = models[kind]
        S = 4000
        reml = prediction_module._parameters(fit)
        fixed = prediction_module._Parameters(np.repeat(reml.beta, S, axis=0), None,
                                              [np.repeat(D, S, axis=0) for D in reml.D],
                                              replace(reml.errors, sigma=np.repeat(reml.errors.sigma, S)))
        if reml.errors.unconstrained is None and reml.errors.omega is not None:
            fixed = replace(fixed, errors=replace(fixed.errors, omega=np.repeat(reml.errors.omega, S, axis=0)))
        monkeypatch.setattr(prediction_module, "_parameters", lambda _fit, p=fixed: p)
        monkeypatch.setattr(prediction_module, "_engine", lambda _fit: "NUTS")
        other = pbc2[~pbc2["id"].isin(small["id"])]
        ids = other["id"].unique()[:6]
        rows = other[other["id"].isin(ids)].reset_index(drop=True)
        history = rows.groupby("id").head(2)
        future = rows.drop(history.index)
        draws = _fake_bayes_predict(fit, future, history, S, monkeypatch)
        monkeypatch.undo()
        plug = predict(fit, future, level=1, interval="prediction", history=history)
        no_beta = replace(reml, cov_beta=np.zeros_like(reml.cov_beta))
        monkeypatch.setattr(prediction_module, "_parameters", lambda _fit, p=no_beta: p)
        exact = predict(fit, future, level=1, interval="prediction", history=history)
        monkeypatch.undo()
        np.testing.assert_allclose(exact["fit"], plug["fit"])
        sd = exact["se"].to_numpy()
        assert np.all(np.abs(draws["fit"] - exact["fit"]) < 4.5 * sd / np.sqrt(S)), kind
        assert np.all(np.abs(draws["sd"] / sd - 1) < 4.5 * np.sqrt(0.5 / S) * 1.5), kind
        y_sd = exact["y_se"].to_numpy()
        assert np.all(np.abs(draws["y_fit"] - exact["y_fit"]) < 4.5 * y_sd / np.sqrt(S)), kind
        assert np.all(np.abs(draws["y_sd"] / y_sd - 1) < 4.5 * np.sqrt(0.5 / S) * 1.5), kind


def _fake_bayes_predict(fit, future, history, S, monkeypatch):
    """The Bayesian path of predict on a REML fit whose 'posterior' is S copies of its estimates."""
    tree_shape = {"chain": 1, "draw": S}

    class _Posterior:
        sizes = tree_shape

        def __getitem__(self, name):
            return type("C", (), {"values": np.arange(tree_shape[name])})()

    class _Fake:
        design, kind = fit.design, "hierarchical"
        tree = {"posterior": _Posterior()}

    params = prediction_module._parameters(_Fake)
    future_rows = prediction_module._rows(fit, future, params.errors, with_y=False, source="new")
    past_rows = prediction_module._rows(fit, history, params.errors, with_y=True, source="history")
    return prediction_module._subject_draws(_Fake, future, future_rows, past_rows, params, "prediction", 0.95,
                                            seed=11).table


def test_bayesian_dynamic_predictions_are_near_reml(fits, pbc2, bayes):
    small, models = fits
    other = pbc2[~pbc2["id"].isin(small["id"])]
    rows = other[other["id"].isin(other["id"].unique()[:4])].reset_index(drop=True)
    history = rows.groupby("id").head(2)
    future = rows.drop(history.index)
    got = predict(bayes, future, level=1, interval="prediction", history=history)
    reml = predict(models["plain"], future, level=1, interval="prediction", history=history)
    assert np.all(np.abs(got["fit"] - reml["fit"]) < 0.5 * reml["se"])
    assert np.all(np.abs(got["sd"] / reml["se"] - 1) < 0.35)
    assert got.draws["predictions"]["mu"].shape == (2, 400, len(future))
    assert got.draws["predictions"]["y"].shape == (2, 400, len(future))
    assert set(got.b.index.get_level_values("level")) == set(history["id"].astype(str))


def test_bayesian_level_one_uses_the_posterior_draws_of_b(fits, bayes):
    small, _ = fits
    from hierlmm.engines.bayes.posterior_result import mean_draws

    out = predict(bayes, small.head(10), level=1, interval="confidence")
    np.testing.assert_allclose(out["fit"], mean_draws(bayes, small.head(10), 1).mean(axis=0))
    np.testing.assert_allclose(out["fit"], bayes.fitted(level=1)[:10], atol=1e-8)


# ---- what is refused -----------------------------------------------------------------------------------------------
def test_arguments_are_checked(fits):
    small, models = fits
    fit = models["plain"]
    with pytest.raises(SpecError, match="ci_prob=0.95"):
        predict(fit, small, interval=0.95)
    with pytest.raises(SpecError):
        predict(fit, small, interval="credible")
    with pytest.raises(NotSupportedError, match="level=1"):
        predict(fit, small, level=0, history=small)
    with pytest.raises(DataError, match="response"):
        predict(fit, small, level=1, history=small.drop(columns="serBilir"))
    with pytest.raises(DataError, match="year"):
        predict(models["correlated"], small, level=1, history=small.drop(columns="year"))
    with pytest.raises(SpecError):
        predict("not a fit", small)
    missing = small.copy()
    missing.loc[0, "serBilir"] = np.nan
    with pytest.raises(DataError, match="missing"):
        predict(fit, small, level=1, history=missing)


def test_the_marginal_model_has_no_subject_level(fits):
    small, _ = fits
    marginal = hierlmm.fit("log(serBilir) ~ year * sex + (year | id)", small, kind="marginal")
    with pytest.raises(NotSupportedError, match="marginal"):
        predict(marginal, small, level=1)
    out = predict(marginal, small.head(5), level=0, interval="prediction")
    assert (out["y_se"] > out["se"]).all()


def test_the_api_front_door_is_this_function(fits):
    small, models = fits
    a = hierlmm.predict(models["plain"], small.head(5), level=1, interval="prediction")
    b = predict(models["plain"], small.head(5), level=1, interval="prediction")
    pd.testing.assert_frame_equal(a.table, b.table)
    assert "Prediction" in repr(a) and "<table" in a._repr_html_()


def test_error_parameters_of_a_reml_fit_are_one_draw(fits):
    _, models = fits
    params = prediction_module._parameters(models["heteroscedastic"])
    assert isinstance(params.errors, ErrorParameters) and params.n_draws == 1


def test_nested_factors_stack_a_new_subjects_random_effects():
    """(1 | id/eye): a new patient's two eyes share its patient effect; the dynamic prediction is the conditional
    normal of the joint V (built by implied_covariance), eye by eye."""
    rng = np.random.default_rng(8)
    rows = []
    for i in range(40):
        u = rng.normal(0, 1.0)
        for eye in ("L", "R"):
            v = rng.normal(0, 0.6)
            for t in range(4):
                rows.append((f"p{i}", eye, float(t), 2 + 0.3 * t + u + v + rng.normal(0, 0.4)))
    frame = pd.DataFrame(rows, columns=["id", "eye", "t", "y"])
    fit = hierlmm.fit("y ~ t + (1 | id/eye)", frame.iloc[8:].reset_index(drop=True))  # p0 held out
    p0 = frame.iloc[:8]
    history, future = p0[p0["t"] < 2], p0[p0["t"] >= 2]
    out = predict(fit, future, level=1, interval="prediction", history=history)
    both = pd.concat([history, future], ignore_index=True)
    V = implied_covariance(fit, rows=both).V[0]
    X, _ = hierlmm.design.design.new_model_matrices(fit.design, both)
    n_h = len(history)
    K = V[n_h:, :n_h] @ np.linalg.inv(V[:n_h, :n_h])
    mean = X[n_h:] @ fit.beta + K @ (history["y"].to_numpy() - X[:n_h] @ fit.beta)
    A = X[n_h:] - K @ X[:n_h]
    var = np.diag(V[n_h:, n_h:] - K @ V[:n_h, n_h:] + A @ fit.cov_beta @ A.T)
    np.testing.assert_allclose(out["y_fit"], mean, atol=1e-8)
    np.testing.assert_allclose(out["y_se"] ** 2, var, atol=1e-8)
    assert {("id", "p0"), ("id:eye", "p0:L"), ("id:eye", "p0:R")} <= set(out.b.index)


def test_subject_panel_draws_reml_and_bayesian_trajectories(fits, bayes):
    import matplotlib

    matplotlib.use("Agg")
    from hierlmm.report.plots import subject_panel

    small, models = fits
    subjects = [str(s) for s in small["id"].unique()[:4]]
    for fit in (models["plain"], bayes):
        figure = subject_panel(fit, small, "year", subjects=subjects, grid_points=10, transform=np.exp)
        lines = [line for ax in figure.axes if ax.get_visible() for line in ax.get_lines()]
        assert len(lines) == 2 * len(subjects)  # the trajectory and the observed points, per subject
    figure = subject_panel(models["correlated"], small, "year", subjects=subjects[:1], grid_points=5,
                           predictive=True)
    assert figure.axes[0].collections  # the band, conditioned on the subject's own rows


def test_outcomes_that_cannot_be_used_are_pointed_out(fits, pbc2):
    small, models = fits
    fit = models["plain"]
    other = pbc2[~pbc2["id"].isin(small["id"])]
    rows = other[other["id"] == other["id"].iloc[0]]
    with pytest.warns(hierlmm.UnusedOutcomesWarning, match="history="):
        predict(fit, rows, level=1)  # a new subject's outcomes in newdata: the dynamic prediction needs history=
    relabelled = rows.assign(id=rows["id"].astype(str) + "x")
    with pytest.warns(hierlmm.UnusedOutcomesWarning, match="spelled"):
        predict(fit, relabelled.drop(columns="serBilir"), level=1, history=rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict(fit, small.head(5), level=1)  # outcomes of fitted subjects: nothing to say
        predict(fit, rows.drop(columns="serBilir"), level=1, history=rows)


def test_large_crossed_designs_give_point_predictions_without_intervals(monkeypatch):
    rng = np.random.default_rng(4)
    frame = pd.DataFrame([(f"s{s}", f"i{i}") for s in range(10) for i in range(6)], columns=["subject", "item"])
    frame["y"] = rng.normal(size=len(frame))
    fit = hierlmm.fit("y ~ 1 + (1 | subject) + (1 | item)", frame)
    dense = predict(fit, frame, level=1, interval=None)
    monkeypatch.setattr(prediction_module, "MAX_DENSE_ROWS", 20)
    with pytest.raises(NotSupportedError, match="interval=None"):
        predict(fit, frame, level=1)
    points = predict(fit, frame, level=1, interval=None)
    np.testing.assert_allclose(points["fit"], dense["fit"], atol=1e-8)
    np.testing.assert_allclose(points["fit"], fit.fitted(1), atol=1e-8)


def test_empty_history_is_no_history_and_draws_keep_the_index(fits, bayes):
    small, models = fits
    rows = small.head(3).assign(id="new")
    pd.testing.assert_frame_equal(predict(models["plain"], rows, level=1, history=rows.iloc[:0]).table,
                                  predict(models["plain"], rows, level=1).table)
    labelled = small.iloc[[5, 2, 9]]
    out = predict(bayes, labelled, level=1)
    assert list(out.draws["predictions"]["row"].values) == [5, 2, 9]
    np.testing.assert_allclose(out.draws["predictions"]["mu"].sel(row=2).mean().item(), out["fit"].loc[2])


def test_subject_panel_refuses_data_that_are_not_the_fits(fits):
    small, models = fits
    from hierlmm.report.plots import subject_panel

    with pytest.raises(DataError, match="not the data"):
        subject_panel(models["plain"], small.sample(frac=1.0, random_state=0), "year", subjects=["1"])


def test_new_data_are_read_as_the_fitted_data_were(fits):
    small, models = fits
    fit = models["plain"]
    as_labels = predict(fit, pd.DataFrame({"year": [1.0, 2.0], "sex": ["male", "female"]}))
    as_text = predict(fit, pd.DataFrame({"year": ["1", "2"], "sex": ["male", "female"]}))
    pd.testing.assert_frame_equal(as_labels.table, as_text.table)
    with pytest.raises(DataError, match="numeric in the fitted data"):
        predict(fit, pd.DataFrame({"year": ["1", "two"], "sex": ["male", "female"]}))
    with pytest.raises(DataError, match="not fitted on"):  # numbers for a factor are its labels, not codes
        predict(fit, pd.DataFrame({"year": [1.0, 2.0], "sex": [1, 2]}))
    numeric_factor = small.assign(arm=np.where(small["sex"] == "male", 1, 2).astype(str))
    coded = hierlmm.fit("log(serBilir) ~ year * arm + (1 | id)", numeric_factor)
    pd.testing.assert_frame_equal(predict(coded, pd.DataFrame({"year": [5.0, 5.0], "arm": [1, 2]})).table,
                                  predict(coded, pd.DataFrame({"year": [5.0, 5.0], "arm": ["1", "2"]})).table)


def test_rows_without_a_subject_or_with_repeated_times_are_refused(fits, pbc2):
    small, models = fits
    rows = small.head(4).copy()
    rows.loc[rows.index[1], "id"] = np.nan
    with pytest.raises(DataError, match="no subject"):
        predict(models["plain"], rows, level=1)
    with pytest.raises(DataError, match="no subject"):
        predict(models["plain"], small.head(2).assign(id="x"), level=1, history=rows)
    twice = pd.DataFrame({"id": ["z", "z"], "year": [2.0, 2.0], "sex": ["male"] * 2, "serBilir": [1.0, 3.0]})
    with pytest.raises(DataError, match="same 'year'"):
        predict(models["correlated"], twice.head(1).assign(year=4.0), level=1, history=twice)
    predict(models["plain"], twice.head(1).assign(year=4.0), level=1, history=twice)  # independent errors: fine


def test_seed_and_columns_are_checked(fits, bayes):
    small, models = fits
    with pytest.raises(SpecError, match="computed, not drawn"):
        predict(models["plain"], small.head(2), seed=3)
    with pytest.raises(SpecError, match="non-negative integer"):
        predict(bayes, small.head(2), seed="x")
    a = predict(bayes, small.head(3).assign(id="new"), level=1, seed=7)
    b = predict(bayes, small.head(3).assign(id="new"), level=1, seed=7)
    pd.testing.assert_frame_equal(a.table, b.table)
    with pytest.raises(DataError, match="'sd'"):
        a["se"]
    with pytest.raises(DataError, match="'se'"):
        predict(models["plain"], small.head(2))["sd"]


def test_new_subjects_outcomes_are_pointed_out_beside_a_history(fits, pbc2):
    small, models = fits
    other = pbc2[~pbc2["id"].isin(small["id"])]
    a, b = (other[other["id"] == i] for i in other["id"].unique()[:2])
    with pytest.warns(hierlmm.UnusedOutcomesWarning, match=str(b["id"].iloc[0])):
        predict(models["plain"], pd.concat([a.tail(2), b]), level=1, history=a.head(2))


def test_subject_panel_checks_its_arguments(fits):
    small, models = fits
    from hierlmm.report.plots import subject_panel

    with pytest.raises(DataError, match="n_subjects"):
        subject_panel(models["plain"], small, "year", n_subjects=0)
    with pytest.raises(DataError, match="not numeric"):
        subject_panel(models["plain"], small, "sex")
