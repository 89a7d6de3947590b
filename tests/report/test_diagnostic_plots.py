"""nlme's diagnostic plots and `hierlmm residuals`: figures returned, nothing written outside the folder given,
the binned mean and the QQ envelope computed as documented, bad arguments refused."""

from __future__ import annotations

import os
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from simulated import simulate

import hierlmm
from hierlmm.cli import main
from hierlmm.report import diagnostic_plots as dp

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate(11, n_subjects=40)


@pytest.fixture(scope="module")
def fits(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"plain": hierlmm.fit("y ~ t + x + (t | id)", data),
                "correlated": hierlmm.fit("y ~ t + x + (1 | id)", data, correlation="corExp(form = ~ t | id)"),
                "marginal": hierlmm.fit("y ~ t + x + (t | id)", data, kind="marginal")}


def test_binned_mean_and_envelope():
    x = np.arange(100.0)
    centres, means = dp.binned_mean(x, 2 * x, n_bins=4)
    np.testing.assert_allclose(centres, [12, 37, 62, 87])
    np.testing.assert_allclose(means, 2 * centres)
    values = np.random.default_rng(3).standard_normal(400)
    qq = dp.qq_envelope(values, n_envelope=400, seed=2)
    inside = (qq["sample"] >= qq["lower"]) & (qq["sample"] <= qq["upper"])
    assert inside.mean() > 0.9  # normal data sit inside their pointwise 95% envelope
    heavy = dp.qq_envelope(np.random.default_rng(3).standard_t(1.5, 400), n_envelope=400, seed=2)
    assert ((heavy["sample"] < heavy["lower"]) | (heavy["sample"] > heavy["upper"])).mean() > 0.2
    with pytest.raises(hierlmm.DataError, match="three"):
        dp.qq_envelope(np.ones(2))


def test_figures_for_every_level_and_type(fits, data):
    fit = fits["correlated"]
    for level in (0, 1):
        for kind in ("response", "pearson", "normalized"):
            figure = dp.residuals_vs_fitted(fit, level=level, type=kind)
            points = figure.axes[0].collections[0].get_offsets()
            np.testing.assert_allclose(points[:, 1], fit.residuals(level, type=kind))
            np.testing.assert_allclose(points[:, 0], fit.fitted(level))
    assert len(dp.qq_random_effects(fits["plain"]).axes) == 2  # (Intercept) and t
    figure = dp.residuals_vs_time(fit, data, "t")
    np.testing.assert_allclose(figure.axes[0].collections[0].get_offsets()[:, 0], data["t"].to_numpy())
    by_group = dp.residuals_vs_fitted(fit, by="g", data=data)  # one colour and one binned mean per level
    assert len(by_group.axes[0].collections) == 2 and len(by_group.axes[0].lines) == 3  # + the zero line
    first = by_group.axes[0].collections[0].get_offsets()
    np.testing.assert_allclose(first[:, 1], fit.residuals(1, type="pearson")[data["g"].to_numpy() == data["g"][0]])
    with pytest.raises(hierlmm.SpecError, match="data="):
        dp.residuals_vs_fitted(fit, by="g")


def test_refusals(fits, data, tmp_path):
    with pytest.raises(hierlmm.DataError, match="not numeric"):
        dp.residuals_vs_time(fits["plain"], data.assign(t=["a"] * len(data)), "t")
    with pytest.raises(hierlmm.DataError, match="No column"):
        dp.residuals_vs_time(fits["plain"], data, "time")
    with pytest.raises(hierlmm.NotSupportedError):
        dp.residuals_vs_fitted(fits["marginal"], level=1)
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(hierlmm.DataError, match="folder"):
        dp.write_diagnostics(fits["plain"], afile)


def test_write_diagnostics_writes_only_into_its_folder(fits, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    written = dp.write_diagnostics(fits["correlated"], tmp_path / "out", data=data, time="t")
    assert set(os.listdir(tmp_path)) - before == {"out"}
    assert sorted(p.name for p in written) == sorted(os.listdir(tmp_path / "out"))
    table = pd.read_csv(tmp_path / "out" / "residuals.csv")
    np.testing.assert_allclose(table["normalized_1"], fits["correlated"].residuals(1, type="normalized"), rtol=1e-9)
    marginal = dp.write_diagnostics(fits["marginal"], tmp_path / "marginal")
    assert "qq_random_effects.png" not in {p.name for p in marginal}  # no random effects: level 0 only


def test_residuals_command(tmp_path, capsys, chapter_data):
    out = tmp_path / "checks"
    code = main(["residuals", "--data", "aids", "--formula", "CD4 ~ obstime + obstime:drug",
                 "--random", "~ 1 | patient", "--correlation", "corExp(form = ~ obstime | patient)",
                 "--time", "obstime", "--by", "drug", "--out", str(out)])
    assert code == 0
    names = set(os.listdir(out))
    assert {"residuals.csv", "variogram.csv", "variogram.png", "qq_random_effects.png"} <= names
    assert str(out / "variogram.csv") in capsys.readouterr().out
    assert main(["residuals", "--data", "aids", "--formula", "CD4 ~ obstime + (1 | patient)", "--time", "drug",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "not numeric" in capsys.readouterr().err


def test_wrong_data_and_bad_options_are_refused_before_anything_is_written(fits, data, tmp_path):
    fit = fits["plain"]
    shuffled = data.sample(frac=1.0, random_state=1).reset_index(drop=True)
    with pytest.raises(hierlmm.DataError, match="not the data the fit was built from"):
        dp.residuals_vs_time(fit, shuffled, "t")
    with pytest.raises(hierlmm.DataError, match="not the data the fit was built from"):
        hierlmm.variogram(fit, "t", data=shuffled)
    for call in (lambda: dp.residuals_vs_fitted(fit, n_bins="5"), lambda: dp.qq_residuals(fit, n_envelope=0),
                 lambda: hierlmm.variogram(fit, "t", data=data, max_dist="2"),
                 lambda: hierlmm.variogram(fit, "t", data=data, robust="no")):
        with pytest.raises(hierlmm.SpecError):
            call()
    with pytest.raises(hierlmm.DataError, match="level"):
        fit.residuals(True)
    np.testing.assert_allclose(hierlmm.variogram(fit, "t", data=data, type="p")["variog"],
                               hierlmm.variogram(fit, "t", data=data, type="pearson")["variog"])
    with pytest.raises(hierlmm.SpecError):
        dp.write_diagnostics(fit, tmp_path / "bogus", type="bogus")
    assert not (tmp_path / "bogus").exists()
    odd = data.assign(**{"a/b": data["t"]})
    written = dp.write_diagnostics(fit, tmp_path / "odd", data=odd, time="a/b")
    assert all(path.parent == tmp_path / "odd" for path in written)


def test_residuals_command_marginal_model_and_a_bad_time(tmp_path, capsys, chapter_data):
    out = tmp_path / "marginal"
    assert main(["residuals", "--data", "aids", "--formula", "CD4 ~ obstime", "--random", "~ obstime | patient",
                 "--kind", "marginal", "--time", "obstime", "--out", str(out)]) == 0
    assert "variogram.csv" in os.listdir(out) and "qq_random_effects.png" not in os.listdir(out)
    bad = tmp_path / "bad"
    assert main(["residuals", "--data", "aids", "--formula", "CD4 ~ obstime + (1 | patient)", "--time", "drug",
                 "--out", str(bad)]) == 2
    assert not bad.exists()  # refused before anything was written
