"""hierlmm.anova and the t-table's ddf= against R: nlme's anova (sequential, marginal, Terms =, L =), lmerTest's
Satterthwaite tests and pbkrtest's Kenward-Roger tests, on the chapter's data (tests/fixtures/anova_reference.json,
written by tests/fixtures/make_anova_reference.R).

Tolerances (issue 14): nlme's F, numDF, denDF and p to 1e-4 relative; Satterthwaite and Kenward-Roger DF, F and
standard errors to 1e-3 relative against lmerTest/pbkrtest.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from paths import FIXTURES
from simulated import simulate

import hierlmm
from hierlmm.errors import DataError, NotSupportedError, SpecError

REFERENCE = json.loads((FIXTURES / "anova_reference.json").read_text())
NLME_MODELS = [k for k, v in REFERENCE.items() if isinstance(v, dict) and "nlme" in v and "fixDF" in v["nlme"]]
LME4_MODELS = [k for k, v in REFERENCE.items() if isinstance(v, dict) and "lmerTest" in v]
REML_LME4 = [k for k in LME4_MODELS if REFERENCE[k]["hierlmm"]["method"] == "REML"]


def _data(chapter_data, spec: dict) -> pd.DataFrame:
    name = spec["data"]["name"]
    data = chapter_data(name)
    if name == "pbc2":
        data = hierlmm.datasets.add_baseline(data, "prothrombin", "id", name="basePro")
    if name == "glaucoma":
        data = data[data["pos"].astype(float) == 1]
        if "id <= 50" in spec["data"]["subset"]:
            data = data[data["id"].astype(float) <= 50]
        data = data.reset_index(drop=True)
        data["fu"] = data.groupby("id")["years"].transform("max")
    return data


@pytest.fixture(scope="module")
def fits(chapter_data):
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            spec = REFERENCE[name]["hierlmm"]
            data = _data(chapter_data, spec)
            random = spec.get("random")
            if isinstance(random, dict):
                random = {f: getattr(hierlmm, r["structure"])(r["formula"]) for f, r in random.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if "fixed" in spec and (random is not None or "correlation" in spec or "weights" in spec):
                    cache[name] = hierlmm.fit(spec["fixed"], data, random=random, method=spec["method"],
                                              correlation=spec.get("correlation"), weights=spec.get("weights"))
                else:
                    cache[name] = hierlmm.fit(spec["formula"], data, method=spec["method"])
        return cache[name]

    return get


def _close(actual, expected, rel: float, atol: float = 0.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=rel, atol=atol)


def _close_p(actual, expected, rel: float) -> None:
    """p-values to ``rel`` relative, with two allowances. nlme's tables compute 1 - pf(F), exact to about 1e-16
    absolute only. And a very small p moves much faster than F (d log p / d log F is about -F/2 for large F): where
    nlme's own convergence tolerance moves F by 2e-5 (its estimates differ from lme4's by as much on the PBC model,
    and hierlmm's REML optimum is the higher of the three), p moves by 4e-4; there ``log p`` is compared to ``rel``
    relative. The F values themselves are compared to ``rel`` separately."""
    actual, expected = np.atleast_1d(np.asarray(actual, float)), np.atleast_1d(np.asarray(expected, float))
    direct = np.abs(actual - expected) <= rel * np.abs(expected) + 1e-15
    actual_log, expected_log = np.log(np.maximum(actual, 1e-300)), np.log(np.maximum(expected, 1e-300))
    logs = np.abs(actual_log - expected_log) <= rel * np.abs(expected_log)
    assert np.all(direct | ((expected < 1e-4) & logs)), (actual, expected)


def _L(entry: dict, fit) -> pd.DataFrame:
    return pd.DataFrame(entry["value"], columns=entry["colnames"]).reindex(columns=fit.design.fixef_names,
                                                                          fill_value=0.0)


@pytest.mark.parametrize("name", NLME_MODELS)
def test_nlme_tables(fits, name):
    """nlme's sequential and marginal tables, the Terms = and L = tests, and nlme's per-term DF."""
    fit, ref = fits(name), REFERENCE[name]["nlme"]
    assert fit.loglik == pytest.approx(REFERENCE[name]["logLik"]["nlme"], abs=1e-3)
    for kind in ("sequential", "marginal"):
        table, expected = hierlmm.anova(fit, type=kind), ref[kind]
        assert list(table.index) == expected["terms"]
        assert table["numDF"].tolist() == expected["numDF"]
        assert table["denDF"].tolist() == expected["denDF"]
        _close(table["F-value"], expected["F"], 1e-4)
        _close_p(table["p-value"], expected["p"], 1e-4)
        # the p-value of nlme's own F, numDF and denDF is nlme's p (the formula, to 1e-4 however small p is)
        _close_p(scipy.stats.f.sf(expected["F"], expected["numDF"], expected["denDF"]), expected["p"], 1e-4)
    terms = hierlmm.anova(fit, terms=ref["Terms"]["requested_terms"])
    assert terms["numDF"].iloc[0] == ref["Terms"]["numDF"][0]
    assert terms["denDF"].iloc[0] == ref["Terms"]["denDF"][0]
    _close(terms["F-value"], ref["Terms"]["F"], 1e-4)
    _close_p(terms["p-value"], ref["Terms"]["p"], 1e-4)
    L = hierlmm.anova(fit, L=_L(REFERENCE[name]["L"] | {"colnames": REFERENCE[name]["L"]["colnames"]}, fit))
    assert (L["numDF"].iloc[0], L["denDF"].iloc[0]) == (ref["L"]["numDF"][0], ref["L"]["denDF"][0])
    _close(L["F-value"], ref["L"]["F"], 1e-4)
    _close_p(L["p-value"], ref["L"]["p"], 1e-4)
    if "L_mixed_denDF" in ref:  # nlme refuses a test across grouping levels: so does hierlmm, saying what to do
        with pytest.raises(SpecError, match="satterthwaite"):
            hierlmm.anova(fit, L=_L(ref["L_mixed_denDF"]["L"], fit))
    np.testing.assert_array_equal(fit.fixef()["DF"].to_numpy(), [ref["fixDF"]["X"][n] for n in fit.design.fixef_names])


@pytest.mark.parametrize("name", LME4_MODELS)
def test_satterthwaite_against_lmertest(fits, name):
    """lmerTest's Satterthwaite t-table, its type III and type I tests (through their L matrices) and contest()."""
    fit, ref = fits(name), REFERENCE[name]["lmerTest"]
    table, expected = fit.fixef(ddf="satterthwaite"), ref["summary_S"]
    _close(table["DF"], expected["df"], 1e-3)
    _close(table["Std.Error"], expected["Std. Error"], 1e-3)
    _close(table["t-value"], expected["t value"], 1e-3)
    for kind in ("3", "1"):
        anova_table, hypotheses = ref[f"anova_type{kind}_S"], ref[f"L_type{kind}"]["terms"]
        for j, term in enumerate(anova_table["terms"]):
            row = hierlmm.anova(fit, L=_L(hypotheses[term], fit), ddf="satterthwaite").iloc[0]
            assert row["numDF"] == anova_table["NumDF"][j]
            _close(row["denDF"], anova_table["DenDF"][j], 1e-3)
            _close(row["F-value"], anova_table["F value"][j], 1e-3)
    joint = hierlmm.anova(fit, L=_L(REFERENCE[name]["L"], fit), ddf="satterthwaite").iloc[0]
    _close(joint["denDF"], ref["contest_joint_S"]["DenDF"], 1e-3)
    _close(joint["F-value"], ref["contest_joint_S"]["F value"], 1e-3)


@pytest.mark.parametrize("name", REML_LME4)
def test_kenward_roger_against_pbkrtest(fits, name):
    """pbkrtest's adjusted covariance and KRmodcomp (scaled F, DF, lambda), and lmerTest's Kenward-Roger t-table."""
    fit, ref = fits(name), REFERENCE[name]
    info = fit.parameter_information
    np.testing.assert_allclose(info.Phi_adjusted, np.asarray(ref["pbkrtest"]["vcovAdj"]["value"]), rtol=1e-3,
                               atol=1e-6 * np.max(np.abs(info.Phi_adjusted)))
    kr = hierlmm.anova(fit, L=_L(ref["L"], fit), ddf="kenward-roger").iloc[0]
    expected = ref["pbkrtest"]["KRmodcomp"]
    _close(kr["F-value"], expected["stat"][0], 1e-3)
    _close(kr["denDF"], expected["ddf"][0], 1e-3)
    _close(kr["F-scaling"], expected["F.scaling"][0], 1e-3)
    _close_p(kr["p-value"], expected["p.value"][0], 1e-3)
    table, summary = fit.fixef(ddf="kenward-roger"), ref["lmerTest"]["summary_KR"]
    _close(table["DF"], summary["df"], 1e-3)
    _close(table["Std.Error"], summary["Std. Error"], 1e-3)


def test_ml_fit_satterthwaite_uses_the_ml_covariance(fits):
    """On an ML fit lmerTest's Satterthwaite tests use the unadjusted ML vcov: nlme's adjustSigma = FALSE table has
    the same F values; nlme's default (adjusted) table is what ddf='nlme' gives."""
    fit, ref = fits("aids_rs_ml"), REFERENCE["aids_rs_ml"]["nlme"]
    marginal = hierlmm.anova(fit, type="marginal", ddf="satterthwaite")
    _close(marginal["F-value"], ref["marginal_adjustSigma_FALSE"]["F"], 1e-4)
    with pytest.raises(NotSupportedError, match="REML"):
        hierlmm.anova(fit, ddf="kenward-roger")


def test_every_fit_kind_and_every_refusal():
    data = simulate(21, n_subjects=40, nested=True)
    data["rater"] = [f"r{k % 5}" for k in range(len(data))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {
            "nested": hierlmm.fit("y ~ t * g + x + (1 | id/eye)", data),
            "crossed": hierlmm.fit("y ~ t * g + x + (1 | id) + (1 | rater)", data),
            "correlated": hierlmm.fit("y ~ t * g + x + (1 | id)", data, correlation="corExp(form = ~ t | id)"),
            "heteroscedastic": hierlmm.fit("y ~ t * g + x + (t | id)", data, weights="varIdent(form = ~ 1 | g)"),
            "marginal": hierlmm.fit("y ~ t * g + x + (t | id)", data, kind="marginal"),
        }
    for kind, fit in fits.items():
        for ddf in ("nlme", "satterthwaite", "kenward-roger"):
            for type_ in ("sequential", "marginal"):
                table = hierlmm.anova(fit, type=type_, ddf=ddf)
                assert list(table.index) == ["(Intercept)", "t", "g", "x", "t:g"], kind
                assert np.all((table["p-value"] >= 0) & (table["p-value"] <= 1))
        # the marginal test of a one-column term is the square of its t statistic
        marginal = hierlmm.anova(fit, type="marginal", ddf="satterthwaite")
        t = fit.fixef(ddf="satterthwaite")
        assert marginal.loc["x", "F-value"] == pytest.approx(t.loc["x", "t-value"] ** 2, rel=1e-10)
        assert marginal.loc["x", "denDF"] == pytest.approx(t.loc["x", "DF"], rel=1e-10)
    fit = fits["nested"]
    with pytest.raises(SpecError, match="type"):
        hierlmm.anova(fit, type="III")
    with pytest.raises(SpecError, match="not both"):
        hierlmm.anova(fit, terms=["t"], L={"a": {"t": 1}})
    with pytest.raises(SpecError, match="Unknown term"):
        hierlmm.anova(fit, terms=["time"])
    with pytest.raises(SpecError, match="No fixed effect 'time'"):
        hierlmm.anova(fit, L={"a": {"time": 1}})
    with pytest.raises(SpecError, match="one column per fixed effect"):
        hierlmm.anova(fit, L=np.ones((1, 2)))
    with pytest.raises(SpecError, match="all weights 0"):  # nlme drops such a row silently; hierlmm says so
        hierlmm.anova(fit, L={"a": {"t": 0}, "b": {"t": 1}})
    with pytest.raises(SpecError, match="type="):
        hierlmm.anova(fit, type="marginal", terms=["t"])
    with pytest.raises(SpecError, match="twice"):
        hierlmm.anova(fit, terms=["t", "t"])
    with pytest.raises(DataError):
        hierlmm.anova("not a fit")


def test_sequential_table_depends_on_term_order_and_marginal_does_not():
    data = simulate(8, n_subjects=40)
    data["z"] = data["t"] + 0.5 * data["x"] + np.random.default_rng(0).normal(0, 0.3, len(data))
    a = hierlmm.fit("y ~ x + z + (1 | id)", data)
    b = hierlmm.fit("y ~ z + x + (1 | id)", data)
    assert hierlmm.anova(a).loc["x", "F-value"] != pytest.approx(hierlmm.anova(b).loc["x", "F-value"], rel=1e-3)
    assert hierlmm.anova(a, type="marginal").loc["x", "F-value"] == pytest.approx(
        hierlmm.anova(b, type="marginal").loc["x", "F-value"], rel=1e-8)
    # the last term of a sequential table is its marginal test
    assert hierlmm.anova(a).loc["z", "F-value"] == pytest.approx(hierlmm.anova(a, type="marginal").loc["z", "F-value"],
                                                                 rel=1e-8)
