"""NUTS on the full glaucoma data (252,876 rows), nested and crossed, against lme4 (marked slow: `make bench` runs
them, CI does not). Targets from the issue: 4 chains x (1000 + 1000), R-hat <= 1.01, no divergences; the wall time
(under 2 minutes each) is measured by bench/bayes_speed.py --section glaucoma, not asserted here.

Reference: tests/fixtures/glaucoma_lme4_reference.json (lme4 1.1-31, REML). With 139 patients the posterior of the
fixed effects and sigma sits within a small fraction of a posterior SD of REML; the SD of a factor with few levels
(42 fields) has a skewed posterior whose mean lies above the REML estimate, so it gets one posterior SD.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from paths import FIXTURES

import hierlmm
from hierlmm.engines.bayes.hierarchical_model import sd_label

pytestmark = pytest.mark.slow

REFERENCE = json.loads((FIXTURES / "glaucoma_lme4_reference.json").read_text())
MODELS = {"nested_ri": ("thres ~ years + (1 | id/eye)", {"id": "id", "id:eye": "eye:id"}),
          "crossed": ("thres ~ years + (1 | id) + (1 | field)", {"id": "id", "field": "field"})}


@pytest.fixture(scope="module")
def glaucoma(chapter_data):
    return chapter_data("glaucoma")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_full_data_nuts_fit_passes_diagnostics_and_matches_lme4(glaucoma, name):
    formula, factors = MODELS[name]
    ref = REFERENCE[name]
    design = hierlmm.build_design(hierlmm.model_spec(formula), glaucoma)
    fit = hierlmm.fit_bayes(design, chains=4, draws=1000, tune=1000, cores=2, progressbar=False)
    diag = fit.diagnostics()
    assert diag.divergences == 0, str(diag)
    assert diag.max_rhat <= 1.01, str(diag)
    table = fit.summary()
    expected = {f"beta[{n}]": v for n, v in zip(ref["fixef"]["names"], ref["fixef"]["value"], strict=True)}
    expected["sigma"] = ref["sigma"]
    for name_, value in expected.items():
        assert abs(table.loc[name_, "mean"] - value) < 0.5 * table.loc[name_, "sd"], (name_, table.loc[name_])
    for block in design.blocks:
        label = sd_label(block.factor, "(Intercept)")
        sd_ref = np.sqrt(ref["D"][factors[block.factor]][0][0])
        assert abs(table.loc[label, "mean"] - sd_ref) < table.loc[label, "sd"], (label, table.loc[label], sd_ref)
    # every level's b is drawn; the per-observation log-likelihood (4000 x 252,876) is not stored
    post = fit.tree["posterior"]
    for block in design.blocks:
        assert np.isfinite(post[f"b_{block.factor}"].values).all()
    assert "y" not in fit.tree["log_likelihood"].data_vars
