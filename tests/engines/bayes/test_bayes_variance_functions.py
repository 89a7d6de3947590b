"""Variance functions by NUTS without a correlation structure (``fit_bayes(..., weights=...)``, R_i = I): the
posterior against nlme's REML fits (tests/fixtures/variance_function_reference.json) and against brms' distributional
models, the same likelihood with a log-linear sigma (tests/fixtures/variance_function_brms.json, made by
make_variance_function_brms.R)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from paths import FIXTURES

import hierlmm

NLME = json.loads((FIXTURES / "variance_function_reference.json").read_text())
BRMS = json.loads((FIXTURES / "variance_function_brms.json").read_text())
PROTHROMBIN = "log(prothrombin) ~ year + sex + age + (year | id)"
MODELS = {  # fixture name -> (data, formula, weights, the variance parameter's summary row)
    "aids_varident": ("aids", "CD4 ~ obstime * drug + (obstime | patient)", "varIdent(form = ~ 1 | drug)",
                      "sd_ratio[ddI]"),
    "pbc2_varpower": ("pbc2", PROTHROMBIN, "varPower(form = ~ serBilir)", "power"),
    "pbc2_varexp": ("pbc2", "log(serBilir) ~ year + sex + age + (year | id)", "varExp(form = ~ albumin)", "expon"),
}


def _fit(name: str, chapter_data, **nuts):
    data_name, formula, weights, _ = MODELS[name]
    data = chapter_data(data_name)
    design = hierlmm.build_design(hierlmm.model_spec(formula), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hierlmm.fit_bayes(design, data=data, weights=weights, progressbar=False, **nuts)


def test_varident_posterior_agrees_with_nlme_reml(chapter_data):
    """A short NUTS fit of AIDS with varIdent(~ 1 | drug): fixed effects within a fraction of a posterior SD of
    nlme's REML (1405 rows, weak priors), the SD ratio's posterior inside nlme's 95% interval and its 95% interval
    close to nlme's, sigma near nlme's."""
    ref = NLME["aids_varident"]
    fit = _fit("aids_varident", chapter_data, chains=2, draws=250, tune=250, seed=2)
    table = fit.summary()
    beta = table.loc[[f"beta[{n}]" for n in ref["fixef"]["names"]]]
    z = (beta["mean"].to_numpy() - np.array(ref["fixef"]["value"])) / beta["sd"].to_numpy()
    assert np.all(np.abs(z) < 0.4), z
    vf = ref["variance_function"]
    ratio = fit.parameter_draws()["sd_ratio[ddI]"].ravel()
    assert vf["lower"][0] < np.median(ratio) < vf["upper"][0]
    assert np.median(ratio) == pytest.approx(vf["est"][0], rel=0.02)
    np.testing.assert_allclose(np.quantile(ratio, [0.025, 0.975]), [vf["lower"][0], vf["upper"][0]], rtol=0.04)
    assert table.loc["sigma", "mean"] == pytest.approx(ref["sigma"], rel=0.03)
    assert fit.correlation().index.tolist() == ["sd_ratio[ddI]"] and fit.structure is None
    assert fit.diagnostics().divergences == 0


def test_sigma_is_nlmes_whatever_the_covariates_origin(chapter_data):
    """varExp of obstime and of obstime - 6 are the same model (sigma absorbs exp(6 t)); the prior sits on the SD at
    the mean of M, so the two posteriors agree: expon the same, sigma scaled by exp(6 t)."""
    aids = chapter_data("aids").copy()
    aids["month6"] = aids["obstime"] - 6.0
    design = hierlmm.build_design(hierlmm.model_spec("CD4 ~ obstime * drug + (1 | patient)"), aids)
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for column in ("obstime", "month6"):
            fits[column] = hierlmm.fit_bayes(design, data=aids, weights=f"varExp(form = ~ {column})", chains=2,
                                             draws=200, tune=200, seed=5, progressbar=False)
    a, b = (fits[c].parameter_draws() for c in ("obstime", "month6"))
    # the reported sigma is nlme's: the SD at obstime = 0, sigma_centred exp(-mean(obstime) t)
    np.testing.assert_allclose(a["sigma"], fits["obstime"].tree["posterior"]["sigma_centred"].values
                               * np.exp(-aids["obstime"].mean() * a["expon"]), rtol=1e-10)
    assert np.mean(a["expon"]) == pytest.approx(np.mean(b["expon"]), abs=0.25 * np.std(a["expon"]))
    shifted = a["sigma"] * np.exp(6.0 * a["expon"])  # a's sigma moved to obstime = 6, b's origin
    assert np.mean(b["sigma"]) == pytest.approx(np.mean(shifted), abs=0.25 * np.std(shifted))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_posterior_matches_brms_and_nlme(name, chapter_data):
    """4 chains x (1000 + 1000): every parameter's posterior mean within 0.2 posterior SD of brms' (the same
    likelihood, other default priors), the variance parameter's posterior median inside nlme's REML interval,
    R-hat <= 1.01 and no divergences."""
    fit = _fit(name, chapter_data)
    table, peer = fit.summary(), BRMS[name]["parameters"]
    assert set(peer) <= set(table.index), set(peer) - set(table.index)
    for key, ref in peer.items():
        gap = abs(table.loc[key, "mean"] - ref["mean"]) / ref["sd"]
        assert gap < 0.2, (key, table.loc[key, "mean"], ref["mean"], ref["sd"])
    label = MODELS[name][3]
    vf = NLME[name]["variance_function"]
    assert vf["lower"][0] < np.median(fit.parameter_draws()[label]) < vf["upper"][0]
    diag = fit.diagnostics()
    assert diag.divergences == 0 and diag.max_rhat <= 1.01, str(diag)
