"""The semi-variogram (hierlmm.inference.variogram) against nlme's Variogram (tests/fixtures/variogram_reference.json,
written by tests/fixtures/make_variogram_reference.R), and its plot (hierlmm.report.residual_plots).

Distances and pair counts must be nlme's exactly; the values to 1e-8 relative when computed from nlme's own
residuals (the binning alone), to 1e-5 relative from hierlmm's residuals (nlme's fits agree with hierlmm's to about
1e-6 relative, its convergence tolerance)."""

from __future__ import annotations

import json
import re
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from paths import FIXTURES
from simulated import simulate

import hierlmm
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference.variogram import (
    collapse_pairs,
    group_distances,
    model_variogram,
    pairs,
    r_quantile,
    variogram,
)
from hierlmm.report.residual_plots import local_linear, variogram_plot

REFERENCE = json.loads((FIXTURES / "variogram_reference.json").read_text())
CASES = sorted(REFERENCE["cases"])
FORMULAS = {
    "aids": ("aids", "CD4 ~ obstime + obstime:drug + (obstime | patient)", None),
    "prothro": ("prothro", "pro ~ time * treat + (time | id)", None),
    "aids_corexp": ("aids", "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (1 | patient)",
                    "corExp(form = ~ obstime | patient)"),
}


def _arguments(call: str) -> dict:
    """variogram()'s arguments for the nlme call of a case."""
    out: dict = {"type": "pearson"}
    if m := re.search(r"form = ~(\w+) \|", call):
        out["time"] = m.group(1)
    if m := re.search(r'resType = "(\w+)"', call):
        out["type"] = m.group(1)
    if "robust = TRUE" in call:
        out["robust"] = True
    if m := re.search(r"maxDist = ([\d.]+)", call):
        out["max_dist"] = float(m.group(1))
    if m := re.search(r"nint = (\d+)", call):
        out["n_bins"] = int(m.group(1))
    if m := re.search(r'collapse = "(\w+)"', call):
        out["collapse"] = m.group(1)
    return out


@pytest.fixture(scope="module")
def fits(chapter_data):
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (data_name, formula, correlation) in FORMULAS.items():
            data = chapter_data(data_name)
            out[name] = (hierlmm.fit(formula, data, correlation=correlation), data)
    return out


def _table(case: dict) -> pd.DataFrame:
    columns = {"variog": case["variog"], "dist": case["dist"]}
    if "n_pairs" in case:
        columns["n_pairs"] = case["n_pairs"]
    return pd.DataFrame(columns)


@pytest.mark.parametrize("name", CASES)
def test_binning_of_nlmes_residuals_is_nlmes(fits, name):
    """Pairs, maxDist, classes, means/robust means, medians and counts from nlme's own residuals: nlme's table."""
    case = REFERENCE["cases"][name]
    fit, data = fits[case["fit"]]
    kw = _arguments(case["call"])
    residuals = np.asarray(REFERENCE["fits"][case["fit"]][kw["type"]])
    v, d = pairs(residuals, group_distances(fit, kw.get("time"), data))
    if "max_dist" in kw:
        v, d = v[d <= kw["max_dist"]], d[d <= kw["max_dist"]]
    expected = _table(case)
    if kw.get("collapse") == "none":
        got = pd.DataFrame({"variog": v, "dist": d})
    else:
        got = collapse_pairs(v, d, robust=kw.get("robust", False), n_bins=kw.get("n_bins", 20),
                             collapse=kw.get("collapse", "quantiles"))
        assert got["n_pairs"].tolist() == expected["n_pairs"].tolist()
    assert len(got) == len(expected)
    np.testing.assert_allclose(got["dist"], expected["dist"], rtol=1e-12)
    np.testing.assert_allclose(got["variog"], expected["variog"], rtol=1e-8)


@pytest.mark.parametrize("name", CASES)
def test_variogram_of_hierlmm_fits_is_nlmes(fits, name):
    case = REFERENCE["cases"][name]
    fit, data = fits[case["fit"]]
    kw = _arguments(case["call"])
    got = variogram(fit, data=data, **kw)
    expected = _table(case)
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    np.testing.assert_allclose(got["dist"], expected["dist"], rtol=1e-12)
    if "n_pairs" in expected:
        assert got["n_pairs"].tolist() == expected["n_pairs"].tolist()
        np.testing.assert_allclose(got["variog"], expected["variog"], rtol=1e-5)
    else:  # single pairs: some squared differences are near 0, so also an absolute tolerance
        np.testing.assert_allclose(got["variog"], expected["variog"], rtol=1e-5, atol=1e-6 * expected["variog"].mean())


def test_the_prothro_cases_exercise_the_binning(fits):
    """Many distinct distances: 20 classes (10 with nint = 10), and R's cut leaves out the pairs at the smallest
    distance, as nlme does."""
    for name, classes in (("prothro_pearson", 20), ("prothro_fixed", 20), ("prothro_nint10", 10)):
        assert len(REFERENCE["cases"][name]["n_pairs"]) == classes
    fit, data = fits["prothro"]
    _, d = pairs(np.zeros(fit.design.n_obs), group_distances(fit, "time", data))
    assert np.unique(d).size > 1000
    for name in ("prothro_pearson", "prothro_fixed", "prothro_nint10"):
        assert sum(REFERENCE["cases"][name]["n_pairs"]) == d.size - np.sum(d == d.min())


def test_the_correlation_times_are_the_default_of_a_corexp_fit(fits):
    """nlme's Variogram(fit) of a corExp fit takes the corStruct's distances; hierlmm's needs no data then."""
    fit, _ = fits["aids_corexp"]
    case = REFERENCE["cases"]["corexp_default"]
    got = variogram(fit)
    np.testing.assert_array_equal(got["dist"], case["dist"])
    assert got["n_pairs"].tolist() == case["n_pairs"]
    pd.testing.assert_frame_equal(got, variogram(fit, "obstime"))


@pytest.mark.parametrize("name", ["corexp_pearson", "corexp_response"])
def test_model_variogram_is_nlmes(fits, name):
    fit, _ = fits["aids_corexp"]
    case = REFERENCE["cases"][name]
    got = model_variogram(fit, type=_arguments(case["call"])["type"])
    np.testing.assert_allclose(got["dist"], case["model"]["dist"], rtol=1e-12)
    np.testing.assert_allclose(got["variog"], case["model"]["variog"], rtol=1e-5)
    at = model_variogram(fit, np.array([0.0, 3.0]))
    range_ = fit.correlation_parameters["range"]
    np.testing.assert_allclose(at["variog"], [0.0, 1 - np.exp(-3 / range_)], rtol=1e-14)


def test_pairs_by_hand():
    """Two groups of 3 and 1 rows: 3 pairs, R's lower.tri order; the class of the smallest distance is dropped."""
    r = np.array([1.0, 2.0, 4.0, 7.0])
    t = np.array([0.0, 1.0, 3.0, 5.0])
    groups = [(np.array([0, 1, 2]), np.abs(t[:3, None] - t[None, :3])), (np.array([3]), np.zeros((1, 1)))]
    v, d = pairs(r, groups)
    np.testing.assert_array_equal(v, [0.5, 4.5, 2.0])  # (1,2), (1,3), (2,3)
    np.testing.assert_array_equal(d, [1.0, 3.0, 2.0])
    table = collapse_pairs(v, d, n_bins=2)  # 3 distinct distances > 2 classes: breaks 1, 2, 3
    assert table["n_pairs"].tolist() == [1, 1]
    np.testing.assert_array_equal(table["dist"], [2.0, 3.0])
    robust = collapse_pairs(v, d, robust=True)
    np.testing.assert_allclose(robust["variog"], v[np.argsort(d)] / (0.457 + 0.494))


def test_r_quantile_is_type_7():
    x = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    probs = np.linspace(0, 1, 21)
    np.testing.assert_allclose(r_quantile(x, probs), np.quantile(x, probs), rtol=1e-15)


def test_bad_arguments_get_hierlmm_errors(fits, chapter_data):
    fit, data = fits["aids"]
    with pytest.raises(SpecError, match="Unknown residual type") as err:
        variogram(fit, "obstime", data=data, type="studentized")
    assert err.value.fix and err.value.given == "studentized"
    with pytest.raises(DataError, match="not numeric") as err:
        variogram(fit, "drug", data=data)
    assert err.value.fix
    with pytest.raises(DataError, match="No column 'visit'"):
        variogram(fit, "visit", data=data)
    with pytest.raises(DataError, match="data=df"):
        variogram(fit, "obstime")
    with pytest.raises(SpecError, match="collapse"):
        variogram(fit, "obstime", data=data, collapse="median")
    with pytest.raises(SpecError, match="n_bins"):
        variogram(fit, "obstime", data=data, n_bins=0)
    with pytest.raises(DataError, match="No pair"):
        variogram(fit, "obstime", data=data, max_dist=1)
    with pytest.raises(DataError, match="level must be"):
        variogram(fit, level=2)
    with pytest.raises(NotSupportedError, match="no model semi-variogram|correlation structure"):
        model_variogram(fit)
    with pytest.raises(NotSupportedError, match="normalized"):
        model_variogram(fits["aids_corexp"][0], type="normalized")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        marginal = hierlmm.fit("CD4 ~ obstime + (obstime | patient)", chapter_data("aids"), kind="marginal")
    with pytest.raises(NotSupportedError, match="marginal-model fit") as err:
        variogram(marginal, "obstime", data=data, level=1)
    assert "level=0" in err.value.fix


def test_variogram_plot_draws_points_model_and_smooth(fits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fit, data = fits["aids_corexp"]
    table = variogram(fit, "obstime", data=data)
    model = model_variogram(fit)
    fig = variogram_plot(table, model)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["model"]  # nlme: no smooth beside a model
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), model["dist"])
    np.testing.assert_array_equal(ax.collections[0].get_offsets()[:, 0], table["dist"])
    fig2 = variogram_plot(table)
    assert [line.get_label() for line in fig2.axes[0].get_lines()] == ["smooth"]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="variog and dist"):
        variogram_plot(table.rename(columns={"variog": "gamma"}))
    plt.close("all")


def test_local_linear_reproduces_a_line():
    x = np.linspace(0, 10, 30)
    grid, fitted = local_linear(x, 2 + 0.5 * x, span=0.6)
    np.testing.assert_allclose(fitted, 2 + 0.5 * grid, rtol=1e-10)


def test_nested_fits_pair_rows_within_the_innermost_group_and_crossed_fits_are_refused():
    """nlme's Variogram.lme groups by getGroups(fit, level = Q): the innermost factor (id:eye), checked against the
    pairs written out; crossed factors have no innermost group."""
    data = simulate(21, n_subjects=40, nested=True)
    data["rater"] = [f"r{k % 5}" for k in range(len(data))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nested = hierlmm.fit("y ~ t + x + (1 | id/eye)", data)
        crossed = hierlmm.fit("y ~ t + x + (1 | id) + (1 | rater)", data)
    got = variogram(nested, "t", data=data, type="response", collapse="none")
    r = nested.residuals(level=1, type="response")
    expected = []
    for _, rows in data.assign(r=r).groupby(["id", "eye"], sort=False):
        rr, tt = rows["r"].to_numpy(), rows["t"].to_numpy()
        for k in range(len(rows)):
            for j in range(k):
                expected.append((abs(tt[k] - tt[j]), (rr[k] - rr[j]) ** 2 / 2))
    assert len(got) == len(expected) < len(data) * 2
    np.testing.assert_allclose(np.sort(got.to_numpy()[:, ::-1], axis=0), np.sort(np.array(expected), axis=0),
                               rtol=1e-12)
    with pytest.raises(NotSupportedError, match="crossed"):
        variogram(crossed, "t", data=data)
