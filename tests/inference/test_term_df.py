"""nlme's per-term denominator DF (``fit$fixDF$terms``) in hierlmm.anova with ddf="nlme", against nlme 3.1-162 on a
design where they differ from the per-coefficient DF (``fit$fixDF$X``) (tests/fixtures/boundary_reference.json,
``term_df``, made by tests/fixtures/make_boundary_reference.R, data tests/fixtures/term_df.csv).

``y ~ t + h + w + arm`` with a random intercept per subject: the factor ``h`` has one column that varies within
subjects (``hB``) and one that does not (``hC``: some subjects are all C); ``w`` and ``arm`` are subject-level. nlme
gives every coefficient the DF of its level (``hC``, ``w``, ``armtrt``: 26; the rest 118), but a *term* the DF of the
innermost level any of its columns varies at, counted by terms (``h``: 117; ``w``, ``arm``: 27; ``(Intercept)``,
``t``: 117). Its tables and its ``Terms =`` test use the term DF; a ``Terms =`` test of terms with different DF is
refused.

Tolerances (issue 14): numDF and denDF exactly, F and p to 1e-4 relative.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from paths import FIXTURES

import hierlmm
from hierlmm.errors import SpecError

REFERENCE = json.loads((FIXTURES / "boundary_reference.json").read_text())["term_df"]
REL = 1e-4


@pytest.fixture(scope="module")
def fit():
    data = pd.read_csv(FIXTURES / REFERENCE["data"]["file"])
    assert len(data) == REFERENCE["data"]["rows"]
    spec = REFERENCE["hierlmm"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hierlmm.fit(spec["fixed"], data, random=spec["random"], method=spec["method"])


def _close_p(actual, expected, rel: float = REL) -> None:
    """p-values to ``rel`` relative; nlme's tables compute 1 - pf(F), exact to about 1e-16 absolute only."""
    actual, expected = np.atleast_1d(np.asarray(actual, float)), np.atleast_1d(np.asarray(expected, float))
    assert np.all(np.abs(actual - expected) <= rel * np.abs(expected) + 1e-15), (actual, expected)


def _check_row(row: pd.Series, expected: dict, j: int = 0) -> None:
    assert row["numDF"] == expected["numDF"][j]
    assert row["denDF"] == expected["denDF"][j]
    np.testing.assert_allclose(row["F-value"], expected["F"][j], rtol=REL)
    _close_p(row["p-value"], expected["p"][j])


def test_same_fit_and_per_coefficient_df(fit):
    assert list(fit.design.fixef_names) == REFERENCE["fixef_names"]
    np.testing.assert_allclose(fit.beta, REFERENCE["fixef"], rtol=1e-5, atol=1e-7)
    assert fit.loglik == pytest.approx(REFERENCE["logLik"], abs=1e-5)
    table = fit.fixef()  # the t-table: nlme's per-coefficient DF, fixDF$X
    assert table["DF"].tolist() == [REFERENCE["fixDF"]["X"][name] for name in fit.design.fixef_names]
    # the design does what it is for: a term's DF differs from its columns' DF
    assert REFERENCE["fixDF"]["terms"]["w"] != REFERENCE["fixDF"]["X"]["w"]
    assert REFERENCE["fixDF"]["X"]["hB"] != REFERENCE["fixDF"]["X"]["hC"]


@pytest.mark.parametrize("kind", ["sequential", "marginal"])
def test_tables_use_nlmes_term_df(fit, kind):
    table, expected = hierlmm.anova(fit, type=kind), REFERENCE[kind]
    assert list(table.index) == expected["terms"]
    assert table["numDF"].tolist() == expected["numDF"]
    assert table["denDF"].tolist() == expected["denDF"]
    assert table["denDF"].tolist() == [REFERENCE["fixDF"]["terms"][term] for term in expected["terms"]]
    np.testing.assert_allclose(table["F-value"], expected["F"], rtol=REL)
    _close_p(table["p-value"], expected["p"])


@pytest.mark.parametrize("term", list(REFERENCE["Terms"]))
def test_terms_test_of_each_term(fit, term):
    """anova(fit, Terms = term): one F test with the term's DF (fixDF$terms), not its columns'."""
    expected = REFERENCE["Terms"][term]
    table = hierlmm.anova(fit, terms=[term])
    assert len(table) == 1
    _check_row(table.iloc[0], expected)
    assert expected["denDF"][0] == REFERENCE["fixDF"]["terms"][term]


@pytest.mark.parametrize("which", range(len(REFERENCE["Terms_joint"])))
def test_joint_terms_test(fit, which):
    """anova(fit, Terms = c(a, b)) of two terms with the same term DF (t and h within subjects; w and arm between,
    whose coefficients' DF, 26, is not the terms' 27)."""
    expected = REFERENCE["Terms_joint"][which]
    table = hierlmm.anova(fit, terms=list(expected["requested_terms"]))
    assert len(table) == 1
    _check_row(table.iloc[0], expected)


def test_terms_with_different_df_are_refused_as_by_nlme(fit):
    refused = REFERENCE["Terms_refused"]
    assert "same denominator DF" in refused["error"]
    with pytest.raises(SpecError, match="satterthwaite"):
        hierlmm.anova(fit, terms=list(refused["requested_terms"]))
