"""Effect plots' data (hierlmm.inference.effects): the chapter's PBC grid against nlme, factor and numeric focal/by,
splines with interactions, Bayesian, correlated-error and marginal-model fits, held covariates, and every refusal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from paths import MODELS
from simulated import simulate

import hierlmm
from hierlmm.engines.bayes.posterior_result import flat_draws
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference.effects import Effects, effects

SPLINES = "y ~ ns(t, 3) * g + I(x^2) + (t | id)"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate(11, n_subjects=60)


@pytest.fixture(scope="module")
def spline_fit(data):
    return hierlmm.fit(SPLINES, data)


@pytest.fixture(scope="module")
def pbc_fit(pbc2_with_basepro):
    return hierlmm.fit(hierlmm.load_spec(MODELS / "pbc2_effect_plot.toml").spec, pbc2_with_basepro)


def by_hand(fit, table: pd.DataFrame, ci_prob: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """x' beta and the half-width z sqrt(x' Var(beta) x) of the REML band."""
    X, _ = hierlmm.new_model_matrices(fit.design, table)
    se = np.sqrt(np.einsum("ij,jk,ik->i", X, fit.cov_beta, X))
    return X @ fit.beta, scipy.stats.norm.ppf(0.5 + ci_prob / 2) * se


def test_the_chapters_pbc_effect_plot_matches_nlme(pbc_fit, reference):
    ref = pd.DataFrame(reference("pbc2_effect_plot")["grid"])
    result = hierlmm.effects(pbc_fit, focal="year", by="sex", at={"age": 49, "basePro": 10.6},
                             grid=sorted(set(ref["year"])))
    assert isinstance(result, Effects) and result.engine == "REML"
    both = ref.merge(result.table, on=["year", "sex"], validate="one_to_one")
    assert len(both) == len(ref) == len(result.table)
    np.testing.assert_allclose(both["estimate"], both["pred"], atol=1e-4)
    np.testing.assert_allclose(both["lower"], both["low"], atol=1e-4)
    np.testing.assert_allclose(both["upper"], both["upp"], atol=1e-4)
    assert dict(result.held) == {"age": 49.0, "basePro": 10.6} and set(result.held_how.values()) == {"at"}
    assert "age = 49 (at)" in result.caption and "95% confidence band" in result.caption
    assert list(result.table.columns) == ["year", "sex", "estimate", "lower", "upper", "age", "basePro"]


def test_held_covariates_default_to_means_and_reference_levels(pbc_fit, pbc2_with_basepro):
    result = effects(pbc_fit, "year", data=pbc2_with_basepro, n=7)
    used = pbc2_with_basepro.iloc[pbc_fit.design.rows]
    assert result.held["age"] == pytest.approx(used["age"].mean())
    assert result.held["basePro"] == pytest.approx(used["basePro"].mean())
    assert result.held["sex"] == pbc_fit.design.levels["sex"][0]
    assert result.held_how == {"sex": "reference level", "age": "mean", "basePro": "mean"}
    np.testing.assert_allclose(result.table["year"], np.linspace(used["year"].min(), used["year"].max(), 7))
    estimate, half = by_hand(pbc_fit, result.table)
    np.testing.assert_allclose(result.table["estimate"], estimate, rtol=1e-12)
    np.testing.assert_allclose(result.table["upper"] - result.table["estimate"], half, rtol=1e-10)
    assert "(mean)" in result.caption and "(reference level)" in result.caption


def test_factor_focal_and_numeric_by(pbc_fit, pbc2_with_basepro):
    result = effects(pbc_fit, "sex", by="age", at={"year": 2.0}, data=pbc2_with_basepro, ci_prob=0.9)
    quartiles = np.quantile(pbc2_with_basepro["age"].iloc[pbc_fit.design.rows], [0.25, 0.5, 0.75])
    assert result.focal_kind == "factor" and result.by_kind == "numeric"
    assert sorted(set(result.table["sex"])) == sorted(pbc_fit.design.levels["sex"])
    np.testing.assert_allclose(sorted(set(result.table["age"])), quartiles)
    assert len(result.table) == 6
    estimate, half = by_hand(pbc_fit, result.table, 0.9)
    np.testing.assert_allclose(result.table["estimate"], estimate, rtol=1e-12)
    np.testing.assert_allclose(result.table["estimate"] - result.table["lower"], half, rtol=1e-10)
    chosen = effects(pbc_fit, "sex", by="age", by_values=[40, 60], grid=["female"], data=pbc2_with_basepro)
    assert list(chosen.table["sex"]) == ["female", "female"] and list(chosen.table["age"]) == [40.0, 60.0]


def test_splines_with_an_interaction(spline_fit, data):
    grid = np.linspace(0, 5, 11)
    result = effects(spline_fit, "t", by="g", grid=grid, data=data)
    assert set(result.table["g"]) == {"a", "b"} and result.held_how == {"x": "mean"}
    assert result.held["x"] == pytest.approx(data["x"].mean())
    estimate, half = by_hand(spline_fit, result.table)
    np.testing.assert_allclose(result.table["estimate"], estimate, rtol=1e-12)
    np.testing.assert_allclose(result.table["upper"] - result.table["estimate"], half, rtol=1e-10)
    # the two curves differ by the ns(t, 3):g interaction: not parallel
    a, b = (result.table.loc[result.table["g"] == lv, "estimate"].to_numpy() for lv in ("a", "b"))
    assert np.ptp(a - b) > 1e-3
    # x enters through I(x^2): held at x = 1 the curves move by beta[I(x^2)] * (1 - mean^2)
    moved = effects(spline_fit, "t", by="g", grid=grid, at={"x": 1.0})
    term = spline_fit.design.fixef_names.index("I(x^2)")
    np.testing.assert_allclose(moved.table["estimate"] - result.table["estimate"],
                               spline_fit.beta[term] * (1 - data["x"].mean() ** 2), atol=1e-10)


@pytest.fixture(scope="module")
def bayes_fit(data):
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t * g + x + (t | id)"), data)
    return hierlmm.fit_bayes(design, chains=2, draws=150, tune=150, seed=2, progressbar=False)


def test_a_bayesian_fit_gives_the_posterior_of_the_mean(bayes_fit, data):
    result = effects(bayes_fit, "t", by="g", grid=[0.0, 2.5, 5.0], data=data, ci_prob=0.8)
    assert result.engine == "NUTS" and "credible band" in result.caption
    X, _ = hierlmm.new_model_matrices(bayes_fit.design, result.table)
    mu = flat_draws(bayes_fit, "beta") @ X.T
    np.testing.assert_allclose(result.table["estimate"], mu.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(result.table["lower"], np.quantile(mu, 0.1, axis=0), rtol=1e-10)
    np.testing.assert_allclose(result.table["upper"], np.quantile(mu, 0.9, axis=0), rtol=1e-10)


@pytest.mark.parametrize("options", [{"correlation": "corExp(form = ~ t | id)"}, {"kind": "marginal"}],
                         ids=["corExp", "marginal"])
def test_correlated_and_marginal_fits(data, options):
    fit = hierlmm.fit("y ~ t * g + (1 | id)", data, **options)
    result = effects(fit, "t", by="g", grid=[0.0, 1.0, 4.0])
    estimate, half = by_hand(fit, result.table)
    np.testing.assert_allclose(result.table["estimate"], estimate, rtol=1e-12)
    np.testing.assert_allclose(result.table["upper"] - result.table["estimate"], half, rtol=1e-10)
    assert not result.held  # every covariate is focal or by


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"focal": "time"}, SpecError, "focal must name"),
        ({"focal": "y"}, SpecError, "focal must name"),  # the response
        ({"focal": "t", "by": "sex"}, SpecError, "by must name"),
        ({"focal": "t", "by": "t"}, SpecError, "different"),
        ({"focal": "t", "at": {"eye": "L"}}, SpecError, "does not use"),  # a column of the data, not of the model
        ({"focal": "t", "at": {"id": "s1"}}, SpecError, "does not use"),  # the grouping factor
        ({"focal": "t", "at": {"agee": 3}}, SpecError, "does not use"),
        ({"focal": "t", "at": {"t": 3}}, SpecError, "focal or by"),
        ({"focal": "t", "by": "g", "at": {"x": [1, 2]}}, SpecError, "one value"),
        ({"focal": "t", "by": "g", "at": {"x": "high"}}, SpecError, "numbers"),
        ({"focal": "t", "at": {"x": 0, "g": "c"}}, DataError, "not a level"),
        ({"focal": "g", "grid": ["a", "z"], "at": {"x": 0, "t": 1}}, DataError, "not a level"),
        ({"focal": "t", "by_values": [1]}, SpecError, "without by"),
        ({"focal": "t", "grid": [0, np.nan], "at": {"x": 0}}, SpecError, "finite"),
        ({"focal": "t", "at": {"x": 0}, "ci_prob": 1.5}, SpecError, "ci_prob"),
        ({"focal": "t", "at": {"x": 0}, "n": 1}, SpecError, "n must be"),
    ],
)
def test_mistakes_are_refused(spline_fit, data, kwargs, error, message):
    with pytest.raises(error, match=message):
        effects(spline_fit, **{"data": data, **kwargs})


def test_data_is_optional_and_checked(spline_fit, data):
    """The design keeps the fitted rows' raw covariates: data= changes nothing (and is checked to be the fit's)."""
    own = effects(spline_fit, "t", by="g")
    given = effects(spline_fit, "t", by="g", data=data)
    pd.testing.assert_frame_equal(own.table, given.table)
    assert own.held == given.held and own.caption == given.caption
    quartiles = effects(spline_fit, "g", by="x", at={"t": 1.0})
    np.testing.assert_allclose(sorted(set(quartiles.table["x"])), np.quantile(data["x"], [0.25, 0.5, 0.75]))
    bare = dataclasses.replace(spline_fit, design=dataclasses.replace(spline_fit.design, covariates={}))
    with pytest.raises(SpecError, match="data=") as caught:  # a design without them (built before they were kept)
        effects(bare, "t", by="g", grid=[0, 1])  # x held at its mean
    assert "'x'" in str(caught.value)
    with pytest.raises(SpecError, match="range"):
        effects(bare, "t", at={"x": 0.0})  # the range of t
    with pytest.raises(SpecError, match="quartiles"):
        effects(bare, "g", by="x", at={"t": 1.0})  # the quartiles of x
    effects(bare, "t", by="g", grid=[0, 1], at={"x": 0.0})  # nothing needs the data
    with pytest.raises(DataError, match="not the data"):
        effects(spline_fit, "t", data=data.sample(frac=1.0, random_state=1))
    with pytest.raises(DataError, match="lack columns"):
        effects(spline_fit, "t", data=data.drop(columns="x"))
    with pytest.raises(NotSupportedError, match="hierlmm.fit"):
        effects(object(), "t")


def test_a_numeric_covariate_inside_a_logical_term_stays_numeric():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"g": np.repeat([f"s{i}" for i in range(30)], 5), "t": np.tile(np.arange(5.0), 30)})
    frame["y"] = 1 + 0.3 * frame["t"] + 0.5 * (frame["t"] > 2) + rng.normal(size=len(frame))
    fit = hierlmm.fit("y ~ t + I(t > 2) + (1 | g)", frame)
    result = effects(fit, "t", n=5)
    np.testing.assert_allclose(result.table["t"], np.linspace(0, 4, 5))
    assert result.table["estimate"].diff().iloc[3] > result.table["estimate"].diff().iloc[1]  # the step at t > 2
