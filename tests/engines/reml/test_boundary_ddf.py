"""Satterthwaite's and Kenward-Roger's tests at a boundary fit (a random-slope variance estimated as exactly 0)
against lmerTest 3.1-3 and pbkrtest 0.5-2 (tests/fixtures/boundary_reference.json, made by
tests/fixtures/make_boundary_reference.R from the simulated data it writes next to it).

Two cases, both fitted by REML to ``y ~ t + x + g`` with no random slope in the truth:

- ``diagonal``: ``(t || id)`` / ``pdDiag(~ t)``; lme4's ``theta = (0.737, 0)``, the slope variance exactly 0;
- ``symmetric``: the general ``(t | id)`` / ``pdSymm`` on mirrored data (invariant under ``t -> -t``), whose optimum
  is ``D = diag(d11, 0)``: slope variance and covariance 0 (lme4: ``theta = (1.133, -1.6e-7, 0)``, singular).

At the boundary the parametrisation of the covariance parameters matters for Satterthwaite's DF (and only there):
lmerTest differentiates in lme4's ``(theta, sigma)``, where ``dV/dtheta = 0`` at ``theta = 0`` and the zero variance
drops out of ``g'A g``; in the elements of ``D`` it does not. pbkrtest's Kenward-Roger uses the elements of ``D``
and ``sigma^2`` (a zero variance included) and so does hierlmm. The joint hypotheses mix ``t`` with ``x`` and the
intercept, so that in the symmetric case the covariance's ``theta`` (whose ``dV/dtheta`` is not 0) enters.

Tolerances (issue 14): DF, F, standard errors and Kenward-Roger's adjusted covariance to 1e-3 relative.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from paths import FIXTURES

import hierlmm

REFERENCE = json.loads((FIXTURES / "boundary_reference.json").read_text())["boundary"]
CASES = list(REFERENCE)
REL = 1e-3


def _random(spec: dict):
    random = spec["random"]
    if isinstance(random, dict):
        return {factor: getattr(hierlmm, r["structure"])(r["formula"]) for factor, r in random.items()}
    return random


@pytest.fixture(scope="module")
def fits():
    out = {}
    for case, ref in REFERENCE.items():
        data = pd.read_csv(FIXTURES / ref["data"]["file"])
        assert len(data) == ref["data"]["rows"]
        spec = ref["hierlmm"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the boundary warning
            out[case] = hierlmm.fit(spec["fixed"], data, random=_random(spec), method=spec["method"])
    return out


def _close(actual, expected, rel: float = REL) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=rel)


def _L(entry: dict, fit) -> pd.DataFrame:
    """A reference hypothesis matrix as a DataFrame over the fit's fixed effects (rows named as in R)."""
    rows = entry.get("rows")
    frame = pd.DataFrame(entry["value"], columns=entry["colnames"], index=rows if rows else None)
    return frame.reindex(columns=fit.design.fixef_names, fill_value=0.0)


@pytest.mark.parametrize("case", CASES)
def test_fit_is_on_the_boundary_and_is_lme4s_and_nlmes(fits, case):
    """The same optimum as lme4 and nlme, with the slope variance at 0 (so the tests below are at the boundary)."""
    fit, ref = fits[case], REFERENCE[case]
    assert list(fit.design.fixef_names) == ref["fixef_names"]
    assert ref["lme4"]["isSingular"] and ref["lme4"]["theta"][-1] == 0
    D = fit.D[0]
    assert D[1, 1] <= 1e-8 * D[0, 0] and abs(D[0, 1]) <= 1e-6 * D[0, 0]
    np.testing.assert_allclose(D, ref["lme4"]["D"], rtol=0, atol=1e-5 * D[0, 0])
    assert fit.sigma == pytest.approx(ref["lme4"]["sigma"], rel=1e-5)
    np.testing.assert_allclose(fit.beta, ref["lme4"]["fixef"], rtol=1e-5, atol=1e-6)
    assert fit.loglik == pytest.approx(ref["lme4"]["logLik"], abs=1e-5)
    assert fit.loglik == pytest.approx(ref["nlme"]["logLik"], abs=1e-5)
    assert fit.loglik >= max(ref["lme4"]["logLik"], ref["nlme"]["logLik"]) - 1e-6


@pytest.mark.parametrize("case", CASES)
def test_satterthwaite_t_table_against_lmertest(fits, case):
    """summary(m, ddf = "Satterthwaite"): the boundary variance must drop out of the DF as in lme4's theta."""
    fit, expected = fits[case], REFERENCE[case]["lmerTest"]["summary_S"]
    table = fit.fixef(ddf="satterthwaite")
    assert list(table.index) == expected["names"]
    _close(table["Std.Error"], expected["Std. Error"])
    _close(table["t-value"], expected["t value"])
    _close(table["DF"], expected["df"])
    _close(table["p-value"], expected["Pr(>|t|)"])


@pytest.mark.parametrize("case", CASES)
def test_satterthwaite_f_tests_against_lmertest(fits, case):
    """anova(..., ddf="satterthwaite"): lmerTest's marginal (type 3) table, its type 1 hypotheses (as L) and
    contest() of a joint 2-row L and of every single coefficient."""
    fit, ref = fits[case], REFERENCE[case]["lmerTest"]
    marginal = hierlmm.anova(fit, type="marginal", ddf="satterthwaite")
    expected = ref["anova_type3_S"]
    assert ref["anova_marginal_S"]["DenDF"] == expected["DenDF"]  # lmerTest reads "marginal" as type 3
    rows = marginal.loc[expected["terms"]]
    assert rows["numDF"].tolist() == expected["NumDF"]
    _close(rows["denDF"], expected["DenDF"])
    _close(rows["F-value"], expected["F value"])
    _close(rows["p-value"], expected["Pr(>F)"])
    sequential = ref["anova_type1_S"]
    for j, term in enumerate(sequential["terms"]):
        row = hierlmm.anova(fit, L=_L(ref["L_type1"]["terms"][term], fit), ddf="satterthwaite").iloc[0]
        assert row["numDF"] == sequential["NumDF"][j]
        _close(row["denDF"], sequential["DenDF"][j])
        _close(row["F-value"], sequential["F value"][j])
    single = ref["contest_single_S"]
    for j, name in enumerate(single["names"]):
        row = hierlmm.anova(fit, L={name: {name: 1}}, ddf="satterthwaite").iloc[0]
        _close(row["denDF"], single["df"][j])
        _close(row["F-value"], single["t value"][j] ** 2)
    joint, expected = hierlmm.anova(fit, L=_L(REFERENCE[case]["L"], fit), ddf="satterthwaite"), ref["contest_joint_S"]
    assert len(joint) == 1 and joint["numDF"].iloc[0] == expected["NumDF"][0] == 2
    _close(joint["denDF"], expected["DenDF"])
    _close(joint["F-value"], expected["F value"])
    _close(joint["p-value"], expected["Pr(>F)"])


@pytest.mark.parametrize("case", CASES)
def test_kenward_roger_against_pbkrtest(fits, case):
    """vcovAdj(m), KRmodcomp(m, L) (scaled F, DF, scaling), and the Kenward-Roger t-table and joint contest()."""
    fit, ref = fits[case], REFERENCE[case]
    info = fit.parameter_information
    np.testing.assert_allclose(info.Phi, ref["pbkrtest"]["vcov"]["value"], rtol=1e-4,
                               atol=1e-6 * np.max(np.abs(info.Phi)))
    np.testing.assert_allclose(info.Phi_adjusted, ref["pbkrtest"]["vcovAdj"]["value"], rtol=REL,
                               atol=1e-6 * np.max(np.abs(info.Phi_adjusted)))
    kr, expected = hierlmm.anova(fit, L=_L(ref["L"], fit), ddf="kenward-roger").iloc[0], ref["pbkrtest"]["KRmodcomp"]
    assert kr["numDF"] == expected["ndf"][0] == 2
    _close(kr["F-value"], expected["stat"][0])
    _close(kr["denDF"], expected["ddf"][0])
    _close(kr["F-scaling"], expected["F.scaling"][0])
    _close(kr["p-value"], expected["p.value"][0])
    contest = ref["lmerTest"]["contest_joint_KR"]
    _close([kr["denDF"], kr["F-value"]], [contest["DenDF"][0], contest["F value"][0]])
    table, summary = fit.fixef(ddf="kenward-roger"), ref["lmerTest"]["summary_KR"]
    _close(table["DF"], summary["df"])
    _close(table["Std.Error"], summary["Std. Error"])
    _close(table["t-value"], summary["t value"])
