"""The fit interface of the kinds that gained it with the layout issue, against R: logLik, AIC, BIC, random effects,
their prediction-error variances and fitted values of a corExp fit and a varIdent fit (nlme 3.1-162) and of
glaucoma's nested and crossed fits (lme4 1.1-31). References: tests/fixtures/make_fit_interface_reference.R.

Tolerances (../shared/reference/README.md): logLik, AIC and BIC to 1e-3 absolute; random effects, fitted values and
variances to 1e-3 relative to their scale.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from paths import FIXTURES

import hierlmm
from hierlmm.cli import main

REFERENCE = json.loads((FIXTURES / "fit_interface_reference.json").read_text())

pytestmark = pytest.mark.needs_data


def _fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hierlmm.fit(*args, **kwargs)


def _close(actual, expected, rel: float = 1e-3) -> None:
    expected = np.asarray(expected, dtype=float)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * np.max(np.abs(expected)))


NLME_MODELS = {
    "aids_corexp_ri": (("CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug",),
                       {"random": "~ 1 | patient", "correlation": "corExp(form = ~ obstime | patient)"}),
    "aids_varident_rs": (("CD4 ~ obstime + obstime:drug",),
                         {"random": "~ obstime | patient", "weights": "varIdent(form = ~ 1 | drug)"}),
}


@pytest.mark.parametrize("name", list(NLME_MODELS))
def test_error_structure_fits_against_nlme(name, chapter_data):
    aids = chapter_data("aids")
    args, kwargs = NLME_MODELS[name]
    fit = _fit(*args, aids, **kwargs)
    ref = REFERENCE[name]
    assert isinstance(fit, hierlmm.CorrelatedFit)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.aic == pytest.approx(ref["AIC"], abs=1e-3)
    assert fit.bic == pytest.approx(ref["BIC"], abs=1e-3)
    effects = fit.ranef()["patient"]
    levels = ref["ranef"]["levels"]
    _close(effects.mean.loc[levels].to_numpy(), ref["ranef"]["value"])
    pev = effects.cov_prediction[[effects.mean.index.get_loc(level) for level in levels]]
    _close(pev, ref["ranef"]["pev"])
    _close(fit.fitted(0)[:6], ref["fitted0"])
    _close(fit.fitted(1)[:6], ref["fitted1"])
    text = hierlmm.summary(fit)
    assert f"{ref['AIC']:10.3f}" in text and f"{ref['BIC']:10.3f}" in text


LME4_MODELS = {
    "glaucoma_nested_ri": ("thres ~ years + (1 | id/eye)", {"id": "id", "eye:id": "id:eye"}),
    "glaucoma_crossed": ("thres ~ years + (1 | id) + (1 | field)", {"id": "id", "field": "field"}),
}


def _hierlmm_level(lme4_factor: str, level: str) -> str:
    """lme4 names the nested factor eye:id and its levels eye:id; hierlmm names both id:eye."""
    return ":".join(reversed(level.split(":"))) if lme4_factor == "eye:id" else level


@pytest.mark.parametrize("name", list(LME4_MODELS))
def test_grouping_factor_fits_against_lme4(name, chapter_data):
    glaucoma = chapter_data("glaucoma")
    formula, factors = LME4_MODELS[name]
    fit = _fit(formula, glaucoma)
    ref = REFERENCE[name]
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.aic == pytest.approx(ref["AIC"], abs=1e-3)
    assert fit.n_params == ref["npar"]
    # BIC: lme4 counts N observations, hierlmm (as nlme) N - p under REML
    n, p, k = ref["nobs"], fit.design.p, ref["npar"]
    assert fit.bic == pytest.approx(ref["BIC"] - k * np.log(n) + k * np.log(n - p), abs=1e-3)
    ranef = fit.ranef()
    for lme4_factor, block in ref["ranef"].items():
        effects = ranef[factors[lme4_factor]]
        levels = [_hierlmm_level(lme4_factor, level) for level in block["levels"]]
        _close(effects.mean.loc[levels].to_numpy()[:, 0], block["value"])
        pev = effects.cov_prediction[[effects.mean.index.get_loc(level) for level in levels], 0, 0]
        _close(pev, block["pev"])
        # lme4's postVar leaves out the uncertainty of beta: never larger than the prediction-error variance
        assert np.all(np.asarray(block["postVar"]) <= pev * (1 + 1e-6))
    _close(fit.fitted(0)[:6], ref["fitted0"])
    _close(fit.fitted(1)[:6], ref["fitted1"])


def test_json_of_corexp_crossed_and_nested_fits(tmp_path, data_folder):
    """`hierlmm fit ... --json` gives AIC, BIC and the random-effects tables for a corExp, a crossed and a nested
    fit, equal to R's."""
    cases = {
        "aids_corexp_ri": ["--data", str(data_folder / "aids.csv"), "--formula",
                           "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug", "--random", "~ 1 | patient",
                           "--correlation", "corExp(form = ~ obstime | patient)"],
        "glaucoma_crossed": ["--data", "glaucoma", "--formula", LME4_MODELS["glaucoma_crossed"][0]],
        "glaucoma_nested_ri": ["--data", "glaucoma", "--formula", LME4_MODELS["glaucoma_nested_ri"][0]],
    }
    for name, arguments in cases.items():
        out = tmp_path / f"{name}.json"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(["fit", *arguments, "--json", str(out)]) == 0
        result, ref = json.loads(out.read_text()), REFERENCE[name]
        assert result["aic"] == pytest.approx(ref["AIC"], abs=1e-3)
        assert result["loglik"] == pytest.approx(ref["logLik"], abs=1e-3)
        assert set(result["random"]) == set(result["ranef"]) and result["random"]
        for factor, table in result["ranef"].items():
            assert len(table["levels"]) == len(table["mean"]) == result["groups"][factor]
