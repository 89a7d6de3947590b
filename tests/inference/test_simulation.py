"""hierlmm.simulate: draws from the hierarchical model and from its marginal model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hierlmm

FORMULA = "y ~ t + (t | id)"
PARAMS = {"beta": {"(Intercept)": 1.0, "t": 0.5}, "D": [[1.0, 0.2], [0.2, 0.3]], "sigma": 0.7}


def frame(n_subjects: int, times=(0.0, 1.0, 2.0, 3.0)) -> pd.DataFrame:
    return pd.DataFrame([{"id": f"s{i}", "t": t} for i in range(n_subjects) for t in times])


@pytest.mark.parametrize("kind", ["hierarchical", "marginal"])
def test_both_kinds_have_the_implied_mean_and_covariance(kind):
    # 4000 subjects with the same 4 visits: their y vectors are 4000 draws of N(X beta, V)
    data = frame(4000)
    y = hierlmm.simulate(FORMULA, PARAMS, data, kind=kind, seed=1)["y"].to_numpy().reshape(4000, 4)
    t = np.array([0.0, 1.0, 2.0, 3.0])
    Z = np.column_stack([np.ones(4), t])
    V = Z @ np.array(PARAMS["D"]) @ Z.T + PARAMS["sigma"] ** 2 * np.eye(4)
    assert np.all(np.abs(y.mean(axis=0) - (1.0 + 0.5 * t)) < 4 * np.sqrt(np.diag(V) / 4000))
    emp = np.cov(y, rowvar=False)
    se = np.sqrt((V**2 + np.outer(np.diag(V), np.diag(V))) / 4000)  # SE of a sample covariance
    assert np.all(np.abs(emp - V) < 5 * se)


def test_marginal_kind_accepts_an_indefinite_D_the_hierarchical_one_refuses():
    data = frame(300, times=(0.0, 1.0, 2.0, 3.0, 4.0))
    params = {"beta": [1.0, 0.3], "D": [[-0.1]], "sigma": 1.0}
    out = hierlmm.simulate("y ~ t + (1 | id)", params, data, kind="marginal", seed=3)
    fit = hierlmm.fit("y ~ t + (1 | id)", out, kind="marginal")
    assert fit.D[0][0, 0] < 0  # recovered: the data carry a negative intra-class correlation
    with pytest.raises(hierlmm.SpecError, match="kind='marginal'"):
        hierlmm.simulate("y ~ t + (1 | id)", params, data, kind="hierarchical")
    with pytest.raises(hierlmm.SpecError, match="not positive definite"):
        hierlmm.simulate("y ~ t + (1 | id)", {**params, "D": [[-0.5]]}, data, kind="marginal")


def test_simulation_is_reproducible_and_keeps_the_other_columns():
    data = frame(5).assign(extra="keep")
    a = hierlmm.simulate(FORMULA, PARAMS, data, seed=9)
    b = hierlmm.simulate(FORMULA, PARAMS, data, seed=9)
    pd.testing.assert_frame_equal(a, b)
    assert (a["extra"] == "keep").all() and list(a.columns[:2]) == ["id", "t"]


def test_bad_parameters_say_what_to_give():
    data = frame(3)
    with pytest.raises(hierlmm.SpecError, match="lacks"):
        hierlmm.simulate(FORMULA, {"beta": [1, 2]}, data)
    with pytest.raises(hierlmm.SpecError, match="beta needs 2"):
        hierlmm.simulate(FORMULA, {**PARAMS, "beta": [1.0]}, data)
    with pytest.raises(hierlmm.SpecError, match="symmetric 2 x 2"):
        hierlmm.simulate(FORMULA, {**PARAMS, "D": [[1.0]]}, data)
    with pytest.raises(hierlmm.NotSupportedError, match="plain column"):
        hierlmm.simulate("log(y) ~ t + (1 | id)", PARAMS, data)
    with pytest.raises(hierlmm.SpecError, match="kind"):
        hierlmm.simulate(FORMULA, PARAMS, data, kind="both")


def test_simulate_from_a_design_returns_a_design_with_new_y():
    data = hierlmm.simulate(FORMULA, PARAMS, frame(30), seed=1)
    design = hierlmm.build_design(hierlmm.model_spec(FORMULA), data)
    again = hierlmm.simulate(None, PARAMS, design, kind="marginal", seed=2)
    assert isinstance(again, hierlmm.Design) and again.y.shape == design.y.shape
    assert not np.allclose(again.y, design.y)
    np.testing.assert_array_equal(again.X, design.X)
