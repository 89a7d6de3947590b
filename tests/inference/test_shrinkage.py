"""Shrinkage (hierlmm.inference.shrinkage): least squares per subject by hand, empirical Bayes against fit.ranef(),
the random-intercept shrinkage factor n_i d / (n_i d + sigma^2), subjects with too few rows, Bayes, refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from simulated import simulate

import hierlmm
from hierlmm.engines.bayes.posterior_result import flat_draws
from hierlmm.errors import NotSupportedError, SpecError
from hierlmm.inference.shrinkage import Shrinkage, shrinkage


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate(5, n_subjects=80)  # 1 to 5 rows per subject: some too few for a line


@pytest.fixture(scope="module")
def slopes(data):
    return hierlmm.fit("y ~ t + x + (t | id)", data)


def test_least_squares_by_hand_and_empirical_bayes_from_ranef(slopes, data):
    result = shrinkage(slopes)
    assert isinstance(result, Shrinkage) and result.factor == "id" and result.engine == "REML"
    names = slopes.design.fixef_names
    population = slopes.beta[[names.index("(Intercept)"), names.index("t")]]
    np.testing.assert_allclose(result.population.to_numpy(), population)
    beta_x = slopes.beta[names.index("x")]  # x has no random effect: it is the offset
    for subject, rows in data.groupby("id"):
        Z = np.column_stack([np.ones(len(rows)), rows["t"]])
        if len(rows) < 2:
            assert subject in result.too_few and result.ols.loc[subject].isna().all()
            continue
        want = np.linalg.lstsq(Z, rows["y"] - beta_x * rows["x"], rcond=None)[0]
        np.testing.assert_allclose(result.ols.loc[subject].to_numpy(), want, rtol=1e-10)
    b = slopes.ranef()["id"].mean
    np.testing.assert_allclose((result.eb - result.population).to_numpy(), b.loc[result.eb.index].to_numpy(),
                               rtol=1e-12)
    assert (result.n_rows == data.groupby("id").size().loc[result.n_rows.index]).all()


def test_subjects_with_too_few_rows_are_reported(slopes, data):
    result = shrinkage(slopes)
    counts = data.groupby("id").size()
    assert set(result.too_few) == set(counts.index[counts < 2]) and result.n_too_few > 0
    assert f"{result.n_too_few} of {len(counts)} levels have too few rows" in result.caption
    assert result.eb.notna().all().all()  # the pooled estimate exists for everyone


def test_a_random_intercept_is_pulled_towards_the_population(data):
    fit = hierlmm.fit("y ~ t + x + (1 | id)", data)
    result = shrinkage(fit)
    assert not result.too_few
    ols, eb, pop = result.ols["(Intercept)"], result.eb["(Intercept)"], result.population["(Intercept)"]
    assert ((eb - pop).abs() < (ols - pop).abs()).all() and (np.sign(eb - pop) == np.sign(ols - pop)).all()
    factor = result.shrinkage_factor["(Intercept)"]
    assert ((factor > 0) & (factor < 1)).all()
    d, n = fit.D[0][0, 0], result.n_rows
    np.testing.assert_allclose(factor, n * d / (n * d + fit.sigma**2), rtol=1e-8)
    assert factor.loc[n.idxmax()] > factor.loc[n.idxmin()]  # more rows, less shrinkage


def test_a_bayesian_fit_uses_posterior_means(slopes, data):
    bayes = hierlmm.fit_bayes(slopes.design, chains=2, draws=150, tune=150, seed=4, progressbar=False)
    result = shrinkage(bayes)
    assert result.engine == "NUTS" and "posterior means" in result.caption
    beta = flat_draws(bayes, "beta").mean(axis=0)
    b = flat_draws(bayes, "b_id").mean(axis=0)
    np.testing.assert_allclose(result.population.to_numpy(), beta[:2], rtol=1e-10)
    np.testing.assert_allclose(result.eb.to_numpy(), b + beta[:2], rtol=1e-10)
    np.testing.assert_allclose(result.ols.dropna().to_numpy(), shrinkage(slopes).ols.dropna().to_numpy(), atol=0.2)


def test_refusals_and_the_choice_of_a_factor():
    nested = simulate(3, n_subjects=40, nested=True)
    fit = hierlmm.fit("y ~ t + (1 | id/eye)", nested)
    with pytest.raises(NotSupportedError, match="block="):
        shrinkage(fit)
    with pytest.raises(SpecError, match="grouping factor"):
        shrinkage(fit, block="patient")
    inner = shrinkage(fit, block="id:eye")
    assert inner.factor == "id:eye" and len(inner.eb) == fit.design.blocks[1].n_levels
    outer = shrinkage(fit, block=0)
    np.testing.assert_allclose((outer.eb - outer.population).to_numpy().ravel(),
                               fit.ranef()["id"].mean.to_numpy().ravel(), rtol=1e-12)
    marginal = hierlmm.fit("y ~ t + (1 | id)", nested, kind="marginal")
    with pytest.raises(NotSupportedError, match="marginal model"):
        shrinkage(marginal)
    with pytest.raises(NotSupportedError, match="hierlmm.fit"):
        shrinkage("not a fit")


def test_the_shrinkage_factor_is_undefined_without_a_departure(slopes):
    result = hierlmm.shrinkage(slopes)
    equal = result.ols.iloc[[0]] * 0 + result.population  # a level whose least squares equal the population
    moved = type(result)(**{**{f: getattr(result, f) for f in result.__dataclass_fields__},
                            "ols": pd.concat([equal, result.ols.iloc[1:]])})
    assert moved.shrinkage_factor.iloc[0].isna().all() and np.isfinite(moved.shrinkage_factor.iloc[1]).all()
