"""ML/REML fits against R's nlme (../shared/reference) at the stated tolerances.

Fixed effects and SEs to 1e-3 relative, variance components to 1e-3 relative, logLik to 1e-3 absolute,
b_i of patients 1-5 and V of patient 450 to 1e-3.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from paths import MODELS

import hierlmm
from hierlmm import pdDiag

AIDS_FIXED = "CD4 ~ obstime + obstime:drug"
AIDS_MODELS = {
    "aids_ri_rs_reml": (f"{AIDS_FIXED} + (obstime | patient)", "REML"),
    "aids_ri_rs_ml": (f"{AIDS_FIXED} + (obstime | patient)", "ML"),
    "aids_ri_reml": (f"{AIDS_FIXED} + (1 | patient)", "REML"),
    "aids_pddiag_reml": (f"{AIDS_FIXED} + (obstime || patient)", "REML"),
}


def check_against(fit: hierlmm.MLFit, ref: dict) -> None:
    table = fit.fixef()
    assert list(table.index) == ref["fixef"]["names"]
    np.testing.assert_allclose(table["Value"], ref["fixef"]["value"], rtol=1e-3)
    np.testing.assert_allclose(table["Std.Error"], ref["fixef"]["se"], rtol=1e-3)
    np.testing.assert_array_equal(table["DF"], ref["fixef"]["df"])
    np.testing.assert_allclose(table["t-value"], ref["fixef"]["t"], rtol=2e-3)
    np.testing.assert_allclose(table["p-value"], ref["fixef"]["p"], rtol=0.02, atol=1e-12)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.aic == pytest.approx(ref["AIC"], abs=2e-3)
    assert fit.bic == pytest.approx(ref["BIC"], abs=2e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
    if "D" in ref:
        D_ref = np.atleast_2d(np.array(ref["D"]["D"], dtype=float))
        np.testing.assert_allclose(fit.D[0], D_ref, rtol=1e-3, atol=1e-12)
    assert fit.optimizer.converged


@pytest.mark.parametrize("name", sorted(AIDS_MODELS))
def test_aids_models_agree_with_nlme(name, chapter_data, reference):
    formula, method = AIDS_MODELS[name]
    fit = hierlmm.fit(formula, chapter_data("aids"), method=method)
    assert fit.method == method
    check_against(fit, reference(name))


def test_nlme_syntax_gives_the_same_fit(chapter_data, reference):
    fit = hierlmm.fit(AIDS_FIXED, chapter_data("aids"), random={"patient": pdDiag("~ obstime")})
    check_against(fit, reference("aids_pddiag_reml"))


def test_ranef_and_marginal_covariance_of_the_chapter_model(chapter_data, reference):
    ref = reference("aids_ri_rs_reml")
    fit = hierlmm.fit(f"{AIDS_FIXED} + (obstime | patient)", chapter_data("aids"))
    b = fit.ranef()["patient"].mean.loc[ref["blup_first5"]["patient"]]
    np.testing.assert_allclose(b["(Intercept)"], ref["blup_first5"]["intercept"], rtol=1e-3)
    np.testing.assert_allclose(b["obstime"], ref["blup_first5"]["obstime"], rtol=1e-3)
    np.testing.assert_allclose(fit.marginal_cov("450").to_numpy(), ref["V_patient450"], rtol=1e-3)


def test_pbc2_effect_plot_model(pbc2_with_basepro, reference):
    ref = reference("pbc2_effect_plot")
    fit = hierlmm.fit(
        "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex", pbc2_with_basepro, random="~ ns(year, 2) | id"
    )
    check_against(fit, ref)
    np.testing.assert_allclose(fit.fitted(0)[:5], ref["fitted_first5"]["marginal"], atol=1e-4)
    np.testing.assert_allclose(fit.fitted(1)[:5], ref["fitted_first5"]["subject"], atol=1e-4)


def test_pbc2_effect_plot_grid(pbc2_with_basepro, reference):
    """Population predictions with pointwise 95% bands (x' beta +- 1.96 se) on the chapter's grid."""
    import pandas as pd

    ref = reference("pbc2_effect_plot")
    fit = hierlmm.fit(
        "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex", pbc2_with_basepro, random="~ ns(year, 2) | id"
    )
    grid = pd.DataFrame(ref["grid"])
    new = pd.DataFrame({"year": grid["year"], "sex": grid["sex"], "age": 49.0, "basePro": 10.6})
    pred = hierlmm.predict(fit, new, level=0)
    np.testing.assert_allclose(pred["fit"], grid["pred"], atol=1e-3)
    np.testing.assert_allclose(pred["lower"], grid["low"], atol=1e-3)
    np.testing.assert_allclose(pred["upper"], grid["upp"], atol=1e-3)
    # by hand from the pieces: x' beta and sqrt(x' Var(beta) x)
    X, _ = hierlmm.new_model_matrices(fit.design, new)
    np.testing.assert_allclose(pred["se"], np.sqrt(np.einsum("ij,jk,ik->i", X, fit.cov_beta, X)), rtol=1e-12)


def test_level1_predictions_on_the_training_rows_are_the_fitted_values(pbc2_with_basepro):
    fit = hierlmm.fit("log(serBilir) ~ ns(year, 2) * sex + (ns(year, 2) | id)", pbc2_with_basepro)
    rows = pbc2_with_basepro.iloc[:40]
    np.testing.assert_allclose(hierlmm.predict(fit, rows, level=1)["fit"], fit.fitted(1)[:40], atol=1e-10)
    unknown = rows.assign(id="not-a-patient")  # a new subject gets b = 0: its population mean
    np.testing.assert_allclose(hierlmm.predict(fit, unknown, level=1)["fit"], fit.fitted(0)[:40], atol=1e-10)


def test_pbc2_time_varying_covariate(reference):
    ref = reference("pbc2_tvc_current")
    with warnings.catch_warnings():
        warnings.simplefilter("error", hierlmm.MissingDataWarning)  # the reference fit drops no rows
        fit = hierlmm.fit(
            "log(serBilir) ~ ns(year, 2) + sex + age + prothrombin",
            hierlmm.datasets.load("pbc2"),
            random={"id": pdDiag("~ ns(year, 2)")},
        )
    check_against(fit, ref)


def test_model_files_reproduce_their_references(reference, chapter_data):

    models = sorted(MODELS.glob("*.toml"))
    assert len(models) >= 5
    for path in models:
        model_file = hierlmm.load_spec(path)
        assert model_file.reference is not None, path
        if model_file.correlation:  # serially correlated errors: hierlmm.engines.reml.correlated_fit
            ref = reference(model_file.reference.removesuffix(".json"))
            fit = hierlmm.fit(model_file.spec, model_file.load_data(), correlation=model_file.correlation)
            np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], atol=1e-3)
            assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
            continue
        fit = hierlmm.fit_ml(hierlmm.build_design(model_file.spec, model_file.load_data()))
        check_against(fit, reference(model_file.reference.removesuffix(".json")))
