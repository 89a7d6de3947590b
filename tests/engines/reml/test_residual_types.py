"""Residual types of every fit kind (``fit.residuals(level, type)``, ``fit.fitted(level)``): nlme's ``resid(fit,
type = "r" | "p" | "n", level = 0 | 1)`` and ``fitted(fit, level)`` on the chapter's fits, the relations that hold on
every REML kind, the refusals, and the Bayesian posterior means of the pearson and normalized residuals draw by draw.

The references are written by ``tests/fixtures/make_residuals_reference.R`` (every row). The agreement is checked to
1e-5 relative with a floor at the residuals' root mean square (values near 0 are compared on the residuals' scale):
nlme's own convergence tolerance leaves the level-1 residuals of the serially correlated fit at 7e-6 of that scale.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from paths import FIXTURES
from simulated import every_kind

import hierlmm
from hierlmm.engines.bayes.hierarchical_model import var_name
from hierlmm.inference.error_covariance import error_covariance

REFERENCE = json.loads((FIXTURES / "residuals_reference.json").read_text())
MODEL_I = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
# reference name -> (data set, fixed, random, correlation, weights); the calls are in the fixture's R script
MODELS = {
    "aids_random": ("aids", "CD4 ~ obstime + obstime:drug", "~ obstime | patient", None, None),
    "aids_varident": ("aids", "CD4 ~ obstime + obstime:drug", "~ obstime | patient", None,
                      "varIdent(form = ~ 1 | drug)"),
    "aids_corexp": ("aids", MODEL_I, "~ 1 | patient", "corExp(form = ~ obstime | patient)", None),
    "prothro_random": ("prothro", "pro ~ time * treat", "~ time | id", None, None),
    "pbc2_varpower": ("pbc2", "log(prothrombin) ~ year + sex + age", "~ year | id", None,
                      "varPower(form = ~ serBilir)"),
}
TYPES = ("response", "pearson", "normalized")
RTOL = 1e-5


def _relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max(|theirs|, RMS(theirs)): relative, with a floor at the values' scale."""
    theirs = np.asarray(theirs, dtype=float)
    scale = np.sqrt(np.mean(theirs**2))
    return float(np.max(np.abs(ours - theirs) / np.maximum(np.abs(theirs), scale)))


@pytest.fixture(scope="module")
def chapter_fits():
    cache: dict[str, object] = {}

    def get(name: str, chapter_data):
        if name not in cache:
            data_name, fixed, random, correlation, weights = MODELS[name]
            cache[name] = hierlmm.fit(fixed, chapter_data(data_name), random=random,
                                      method=REFERENCE[name]["method"], correlation=correlation, weights=weights)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(MODELS))
def test_residuals_and_fitted_agree_with_nlme(name, chapter_fits, chapter_data):
    ref = REFERENCE[name]
    fit = chapter_fits(name, chapter_data)
    assert fit.design.n_obs == ref["n"]
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    for level in (0, 1):
        assert _relative_difference(fit.fitted(level), ref[f"fitted{level}"]) < RTOL, f"fitted({level})"
        for type in TYPES:
            difference = _relative_difference(fit.residuals(level, type), ref[f"{type}{level}"])
            assert difference < RTOL, f"residuals({level}, {type!r}): {difference:.2e}"


def test_normalized_residuals_remove_only_the_error_correlation(chapter_fits, chapter_data):
    """nlme whitens with R_i alone at both levels (the R script checks it on nlme's own numbers); here the same from
    every subject's error covariance sigma^2 S_i R_i S_i (hierlmm.inference.error_covariance), densely."""
    assert REFERENCE["aids_corexp"]["level0_normalized_uses_R_only"] < 1e-10
    fit = chapter_fits("aids_corexp", chapter_data)
    block = fit.design.blocks[0]
    for level in (0, 1):
        pearson, normalized = fit.residuals(level, "pearson"), fit.residuals(level, "normalized")
        assert np.max(np.abs(normalized - pearson)) > 1e-2  # the correlation is not negligible
        for subject in block.levels[:40]:
            rows = np.flatnonzero(block.group_index == block.levels.index(subject))
            E = error_covariance(fit, subject=subject)[0]
            sd = np.sqrt(np.diag(E))
            np.testing.assert_allclose(sd, fit.sigma, rtol=1e-12)
            L = np.linalg.cholesky(E / np.outer(sd, sd))
            np.testing.assert_allclose(normalized[rows], np.linalg.solve(L, pearson[rows]), rtol=1e-10, atol=1e-12)


def test_pearson_residuals_divide_by_the_variance_function(chapter_fits, chapter_data):
    fit = chapter_fits("aids_varident", chapter_data)
    block = fit.design.blocks[0]
    response, pearson = fit.residuals(1), fit.residuals(1, "pearson")
    np.testing.assert_allclose(fit.residuals(1, "normalized"), pearson)
    ratio = fit.variance_parameters  # ddI's SD relative to ddC's
    assert len(ratio) == 1 and abs(next(iter(ratio.values())) - 1) > 0.05
    for subject in block.levels[:40]:
        rows = np.flatnonzero(block.group_index == block.levels.index(subject))
        sd = np.sqrt(np.diag(error_covariance(fit, subject=subject)[0]))
        np.testing.assert_allclose(pearson[rows], response[rows] / sd, rtol=1e-10)


# ---- every REML kind ----------------------------------------------------------------------------------------------
FIXED = "y ~ t + x"
REML_KINDS = {  # the kinds of tests/test_fit_interface.py
    "plain": lambda d: hierlmm.fit(f"{FIXED} + (t | id)", d),
    "ml": lambda d: hierlmm.fit(f"{FIXED} + (t | id)", d, method="ML"),
    "nested": lambda d: hierlmm.fit(f"{FIXED} + (1 | id/eye)", d),
    "crossed": lambda d: hierlmm.fit(f"{FIXED} + (1 | id) + (1 | rater)", d),
    "correlated": lambda d: hierlmm.fit(f"{FIXED} + (1 | id)", d, correlation="corExp(form = ~ t | id)"),
    "heteroscedastic": lambda d: hierlmm.fit(f"{FIXED} + (t | id)", d, weights="varIdent(form = ~ 1 | g)"),
    "marginal": lambda d: hierlmm.fit(f"{FIXED} + (t | id)", d, kind="marginal"),
}


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return every_kind()


@pytest.fixture(scope="module", params=list(REML_KINDS))
def reml_fit(request, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return request.param, REML_KINDS[request.param](data)


def test_residual_types_of_every_reml_kind(reml_fit):
    name, fit = reml_fit
    design = fit.design
    assert isinstance(fit, hierlmm.FitResult)
    levels = (0,) if name == "marginal" else (0, 1)
    for level in levels:
        response = fit.residuals(level, "response")
        np.testing.assert_allclose(response, design.y - fit.fitted(level))
        np.testing.assert_array_equal(fit.residuals(level), response)  # the positional call of before
        np.testing.assert_array_equal(fit.residuals(level=level, type="r"), response)  # nlme's prefixes
        pearson, normalized = fit.residuals(level, "pearson"), fit.residuals(level, type="n")
        assert pearson.shape == normalized.shape == (design.n_obs,)
        assert np.all(np.isfinite(pearson)) and np.all(np.isfinite(normalized))
        if name != "heteroscedastic":  # no variance function: the error SD is sigma
            np.testing.assert_allclose(pearson, response / fit.sigma, rtol=1e-12)
        else:
            assert np.max(np.abs(pearson - response / fit.sigma)) > 1e-3
        if name != "correlated":  # no correlation structure: nothing to remove
            np.testing.assert_allclose(normalized, pearson, rtol=1e-12)
        else:
            assert np.max(np.abs(normalized - pearson)) > 1e-3
    if name == "marginal":
        for type in TYPES:
            with pytest.raises(hierlmm.NotSupportedError, match="no random effects"):
                fit.residuals(1, type)
    with pytest.raises(hierlmm.SpecError, match="Unknown residual type") as error:
        fit.residuals(0, "studentized")
    assert error.value.given == "studentized" and "pearson" in error.value.fix
    for bad in ("", "x", 1):
        with pytest.raises(hierlmm.SpecError, match="Unknown residual type"):
            fit.residuals(0, bad)
    with pytest.raises(hierlmm.DataError, match="level") as error:
        fit.residuals(2, "pearson")
    assert error.value.given == 2


def test_pearson_residuals_have_unit_scale_on_simulated_data(reml_fit):
    """The level-1 pearson residuals' mean square is near 1 (sigma is estimated from them); the level-0 ones (the
    marginal model's only level) also carry Z b, so theirs is larger."""
    name, fit = reml_fit
    if name != "marginal":
        assert 0.5 < np.mean(fit.residuals(1, "pearson") ** 2) < 1.5
    assert np.mean(fit.residuals(0, "pearson") ** 2) > 1.5


# ---- Bayesian fits: posterior means, draw by draw -----------------------------------------------------------------
FAST = {"chains": 2, "draws": 100, "tune": 150, "progressbar": False, "seed": 3}


@pytest.fixture(scope="module")
def bayes_correlated(data):
    design = hierlmm.build_design(hierlmm.model_spec(f"{FIXED} + (1 | id)"), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hierlmm.fit_bayes(design, data=data, correlation="corExp(form = ~ t | id)",
                                 weights="varIdent(form = ~ 1 | g)", **FAST)


def _draws(fit, name: str) -> np.ndarray:
    values = fit.tree["posterior"][name].values
    return values.reshape(-1, *values.shape[2:])


def test_bayes_residual_types_are_posterior_means_of_each_draws(bayes_correlated):
    fit = bayes_correlated
    design, block = fit.design, fit.design.blocks[0]
    beta, b = _draws(fit, "beta"), _draws(fit, var_name("b", block.factor))
    for level in (0, 1):
        mu = beta @ design.X.T
        if level:
            mu = mu + np.einsum("nq,snq->sn", block.Z, b[:, block.group_index])
        np.testing.assert_allclose(fit.residuals(level), design.y - mu.mean(axis=0), atol=1e-10)
        pearson, normalized = fit.residuals(level, "pearson"), fit.residuals(level, "normalized")
        for subject in block.levels[:12]:
            rows = np.flatnonzero(block.group_index == block.levels.index(subject))
            E = error_covariance(fit, subject=subject)  # (S, n, n), sigma^2 S R S per draw
            sd = np.sqrt(np.diagonal(E, axis1=1, axis2=2))
            p = (design.y[rows] - mu[:, rows]) / sd
            L = np.linalg.cholesky(E / (sd[:, :, None] * sd[:, None, :]))
            n = np.linalg.solve(L, p[..., None])[..., 0]
            np.testing.assert_allclose(pearson[rows], p.mean(axis=0), rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(normalized[rows], n.mean(axis=0), rtol=1e-8, atol=1e-10)
        assert np.max(np.abs(normalized - pearson)) > 1e-3
    with pytest.raises(hierlmm.SpecError, match="Unknown residual type"):
        fit.residuals(1, "deviance")


def test_bayes_iid_and_marginal_residual_types(data):
    design = hierlmm.build_design(hierlmm.model_spec(f"{FIXED} + (t | id)"), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {kind: hierlmm.fit_bayes(design, kind=kind, **FAST) for kind in ("hierarchical", "marginal")}
    for kind, fit in fits.items():
        sigma = _draws(fit, "sigma").reshape(-1)
        mu = _draws(fit, "beta") @ design.X.T
        expected = ((design.y - mu) / sigma[:, None]).mean(axis=0)  # per draw, then averaged
        np.testing.assert_allclose(fit.residuals(0, "pearson"), expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(fit.residuals(0, "normalized"), expected, rtol=1e-8, atol=1e-10)
        if kind == "marginal":
            for type in TYPES:
                with pytest.raises(hierlmm.NotSupportedError, match="no random effects"):
                    fit.residuals(1, type)
        else:
            np.testing.assert_allclose(fit.residuals(1, "normalized"), fit.residuals(1, "pearson"))
            assert 0.5 < np.mean(fit.residuals(1, "pearson") ** 2) < 1.5
