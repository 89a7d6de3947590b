"""Nested random effects on the glaucoma data (252,876 rows) against lme4 1.1-31 (issue 5).

References: tests/fixtures/glaucoma_lme4_reference.json, made by tests/fixtures/make_glaucoma_lme4_reference.R
(which also records lme4's wall time on this machine: 4.7 s and 19.2 s for the two nested models).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from paths import FIXTURES
from simulated import simulate

import hierlmm
from hierlmm.engines.reml.crossed_fit import CrossedFit, fit_crossed

REFERENCE = json.loads((FIXTURES / "glaucoma_lme4_reference.json").read_text())


@pytest.fixture(scope="module")
def glaucoma(chapter_data):
    return chapter_data("glaucoma")


@pytest.mark.parametrize(("name", "formula", "factors"), [
    ("nested_ri", "thres ~ years + (1 | id/eye)", {"id": "id", "id:eye": "eye:id"}),
    ("nested_rs", "thres ~ years + (years | id) + (1 | id:eye)", {"id": "id", "id:eye": "id:eye"}),
])
def test_nested_models_match_lme4(glaucoma, name, formula, factors):
    ref = REFERENCE[name]
    fit = hierlmm.fit(formula, glaucoma)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.cov_beta)), ref["fixef"]["se"], rtol=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
    for block, D in zip(fit.design.blocks, fit.D, strict=True):
        np.testing.assert_allclose(D, np.atleast_2d(ref["D"][factors[block.factor]]), rtol=1e-3, atol=1e-6)


def test_crossed_model_matches_lme4(glaucoma):
    ref = REFERENCE["crossed"]
    fit = hierlmm.fit("thres ~ years + (1 | id) + (1 | field)", glaucoma)  # routed to hierlmm.engines.reml.crossed_fit
    assert isinstance(fit, CrossedFit) and fit.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    np.testing.assert_allclose(fit.beta, ref["fixef"]["value"], rtol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.cov_beta)), ref["fixef"]["se"], rtol=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
    for block, D in zip(fit.design.blocks, fit.D, strict=True):
        np.testing.assert_allclose(D, np.atleast_2d(ref["D"][block.factor]), rtol=1e-3)


def test_the_dense_engine_agrees_with_the_nested_one_and_with_a_dense_likelihood():
    data = simulate(3, n_subjects=12, nested=True)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id) + (1 | id:eye)"), data)
    nested = hierlmm.fit_ml(design, "REML")
    dense = fit_crossed(design, "REML")
    assert dense.loglik == pytest.approx(nested.loglik, abs=1e-5)
    crossed = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id) + (1 | g)"), data)
    fit = fit_crossed(crossed, "ML")
    n = crossed.n_obs
    V = fit.sigma**2 * np.eye(n)
    for block, D in zip(crossed.blocks, fit.D, strict=True):
        same = block.group_index[:, None] == block.group_index[None, :]
        V += D[0, 0] * same * np.outer(block.Z[:, 0], block.Z[:, 0])
    dense_ml = scipy.stats.multivariate_normal(crossed.X @ fit.beta, V).logpdf(crossed.y)
    assert fit.loglik == pytest.approx(dense_ml, rel=1e-9)
