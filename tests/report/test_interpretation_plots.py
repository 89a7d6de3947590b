"""Effect and shrinkage plots (hierlmm.report.interpretation_plots): what is drawn, the captions, and refusals."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from simulated import simulate

import hierlmm
from hierlmm.errors import NotSupportedError, SpecError

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data():
    return simulate(8, n_subjects=50)


@pytest.fixture(scope="module")
def fit(data):
    return hierlmm.fit("y ~ ns(t, 2) * g + x + (t | id)", data)


def test_effect_plot_draws_one_line_and_band_per_by_level(fit, data):
    effects = hierlmm.effects(fit, "t", by="g", data=data, n=20)
    fig = hierlmm.effect_plot(effects)
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # two curves, two bands
    np.testing.assert_allclose(ax.lines[0].get_ydata(), effects.table["estimate"][:20])
    title = ax.get_title(loc="left").replace("\n", " ")
    assert "x = " in title and "(mean)" in title and "confidence band" in title
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["g = a", "g = b"]
    plt.close(fig)


def test_effect_plot_of_a_factor_draws_into_a_given_axes(fit, data):
    fig, axes = plt.subplots(1, 2)
    out = hierlmm.effect_plot(hierlmm.effects(fit, "g", by="x", at={"t": 2.0}, data=data), ax=axes[1])
    assert out is fig and not axes[0].has_data() and axes[1].has_data()
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["a", "b"]
    assert len(axes[1].get_legend().get_texts()) == 3  # the quartiles of x
    plt.close(fig)
    with pytest.raises(SpecError, match="hierlmm.effects"):
        hierlmm.effect_plot(fit)


def test_shrinkage_plot_segments_and_caption(fit):
    result = hierlmm.shrinkage(fit)
    fig = hierlmm.shrinkage_plot(fit)
    ax = fig.axes[0]
    n_ols = int(result.ols.notna().all(axis=1).sum())
    assert len(ax.lines) == n_ols  # one segment from each least-squares estimate to its pooled one
    assert ax.get_xlabel() == "(Intercept)" and ax.get_ylabel() == "t"
    title = ax.get_title(loc="left").replace("\n", " ")
    if result.too_few:
        assert f"{result.n_too_few} of {len(result.eb)} levels have too few rows" in title
    plt.close(fig)
    one = hierlmm.shrinkage_plot(result, effects="t")  # a ready result; one effect: two rows
    assert [t.get_text() for t in one.axes[0].get_yticklabels()] == ["pooled", "own fit"]
    plt.close(one)


def test_shrinkage_plot_refusals(fit, data):
    with pytest.raises(SpecError, match="one or two"):
        hierlmm.shrinkage_plot(fit, effects=["slope"])
    with pytest.raises(SpecError, match="already"):
        hierlmm.shrinkage_plot(hierlmm.shrinkage(fit), block="id")
    marginal = hierlmm.fit("y ~ t + (1 | id)", data, kind="marginal")
    with pytest.raises(NotSupportedError, match="marginal model"):
        hierlmm.shrinkage_plot(marginal)
