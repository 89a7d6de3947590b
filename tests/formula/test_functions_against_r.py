"""Every function a formula may call, compared with R itself.

tests/fixtures/make_formula_functions_reference.R evaluates each whitelisted function
(``hierlmm.formula.evaluation.allowed_functions()``) in R 4.2 on a few vectors with edge cases -- negative values
(``log``/``sqrt`` give NaN), zeros, ties for ``round()``, missing values, far arguments for ``exp``/``sin`` -- and
writes tests/fixtures/formula_functions_reference.json. Here hierlmm's evaluator computes the same expressions (the
same R text) and must agree to 1e-12 (``round``, ``floor``, factor levels: exactly). ``ns``, ``bs`` and ``poly`` have
their own comparison in test_transforms.py. ``test_fixture_is_current`` re-runs the R script when ``Rscript`` is
installed.

Known, deliberate differences (not compared here):

- A comparison of a missing value is R's NA but hierlmm's FALSE inside the evaluator; the design drops every row
  with a missing value in a column the model uses, so no model matrix differs.
- A whole number held as an R *double* is written ``1e+05`` by R's ``as.character``; hierlmm cannot tell an integer
  column from a double one (all numeric columns are floats) and writes whole numbers in R's integer range as
  integers (``100000``), as R does for the integer columns ``read.csv`` gives.
- Where R returns NaN for a transformation of present data (``log(-1)``), building a design is a ``DataError``
  naming the row (tested at the end).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from paths import FIXTURES

import hierlmm
from hierlmm.formula.evaluation import Evaluator, Factor, Numeric, allowed_functions
from hierlmm.formula.expression import parse

REFERENCE_JSON = FIXTURES / "formula_functions_reference.json"
R_SCRIPT = FIXTURES / "make_formula_functions_reference.R"
REF: dict[str, Any] = json.loads(REFERENCE_JSON.read_text())
RTOL = 1e-12
EXACT = ("round(", "floor(", "ceiling(", "sign(", "abs(", "as.numeric(", "pmin(", "pmax(")


def _numbers(values: Any) -> np.ndarray:
    """R's numbers as written by the script ("NA" is a missing value, as hierlmm's NaN)."""
    return np.array([np.nan if v == "NA" else float(v) for v in np.atleast_1d(values)], dtype=float)


def _frame(vector: str, ref: dict[str, Any] = REF) -> pd.DataFrame:
    return pd.DataFrame({"x": _numbers(ref["vectors"][vector])})


def _evaluate(expr: str, data: pd.DataFrame, state: dict[str, Any] | None = None) -> Numeric | Factor:
    return Evaluator(data, state, source=expr).variable(parse(expr))


def _check_numeric(case: dict[str, Any], ref: dict[str, Any]) -> None:
    value = _evaluate(case["expr"], _frame(case["vector"], ref))
    assert isinstance(value, Numeric), case["expr"]
    ours, r = value.values[:, 0], _numbers(case["values"])
    if case["expr"].startswith(EXACT):
        np.testing.assert_array_equal(ours, r, err_msg=case["expr"])
    else:
        np.testing.assert_allclose(ours, r, rtol=RTOL, atol=0, equal_nan=True, err_msg=case["expr"])


def _check_factor(case: dict[str, Any], ref: dict[str, Any]) -> None:
    data = _frame(case["vector"], ref)
    value = _evaluate(case["expr"], data)
    assert isinstance(value, Factor), case["expr"]
    assert list(value.levels) == list(np.atleast_1d(case["levels"])), case["expr"]
    np.testing.assert_array_equal(value.codes + 1, np.atleast_1d(case["codes"]), err_msg=case["expr"])
    as_numeric = _evaluate(f"as.numeric({case['expr']})", data)
    np.testing.assert_array_equal(as_numeric.values[:, 0], _numbers(case["as_numeric"]), err_msg=case["expr"])


def _check_predict(case: dict[str, Any], ref: dict[str, Any]) -> None:
    training = _frame(ref["newdata"]["train"], ref)
    evaluator = Evaluator(training, source=case["expr"])
    evaluator.variable(parse(case["expr"]))  # fits scale() on the training data
    new = pd.DataFrame({"x": _numbers(ref["newdata"]["x"])})
    value = _evaluate(case["expr"], new, evaluator.state)
    np.testing.assert_allclose(value.values[:, 0], _numbers(case["values"]), rtol=RTOL, atol=1e-15,
                               err_msg=case["expr"])


@pytest.mark.parametrize("case", REF["cases"], ids=lambda c: f"{c['vector']}-{c['expr']}")
def test_function_matches_r(case: dict[str, Any]) -> None:
    _check_numeric(case, REF)


@pytest.mark.parametrize("case", REF["logical_cases"], ids=lambda c: c["expr"])
def test_comparison_matches_r(case: dict[str, Any]) -> None:
    value = _evaluate(case["expr"], _frame(case["vector"]))
    assert isinstance(value, Factor) and value.levels == ("FALSE", "TRUE")
    np.testing.assert_array_equal(value.codes == 1, np.atleast_1d(case["values"]))


@pytest.mark.parametrize("case", REF["factor_cases"], ids=lambda c: f"{c['vector']}-{c['expr']}")
def test_factor_matches_r(case: dict[str, Any]) -> None:
    _check_factor(case, REF)


@pytest.mark.parametrize("case", REF["predict_cases"], ids=lambda c: c["expr"])
def test_scale_on_new_data_matches_r_predict(case: dict[str, Any]) -> None:
    """R's predict() reuses scale()'s training centre and scale (makepredictcall); so does hierlmm's state."""
    _check_predict(case, REF)


def test_every_allowed_function_is_compared() -> None:
    exprs = [c["expr"] for c in REF["cases"] + REF["factor_cases"] + REF["logical_cases"]]
    exprs += [c["expr"] for c in REF["predict_cases"]]
    compared = {name for name in allowed_functions() if any(re.search(rf"(^|[^\w.]){re.escape(name)}\(", e)
                                                         for e in exprs)}
    assert set(allowed_functions()) - compared == {"ns", "bs", "poly"}  # test_transforms.py


def test_scale_without_centring_divides_by_the_root_mean_square() -> None:
    """R: scale(x, center = FALSE) divides by sqrt(sum(x^2) / (n - 1)), not by the standard deviation."""
    data = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [0.5, 1, 2, 3], "g": list("aabb")})
    design = hierlmm.build_design(hierlmm.model_spec("y ~ scale(x, center = FALSE) + (1 | g)"), data)
    np.testing.assert_allclose(design.X[:, 1], [0.22941573387056174, 0.45883146774112349, 0.91766293548224698,
                                                1.3764944032233704], rtol=1e-14)  # R 4.2.2


@pytest.mark.parametrize("bad", ['"a"', "c(1, 2)", "x"])
def test_scale_arguments_are_logical_or_one_number(bad: str) -> None:
    data = pd.DataFrame({"x": [0.5, 1, 2, 3]})
    with pytest.raises(hierlmm.FormulaError, match="TRUE or FALSE, or a number"):
        _evaluate(f"scale(x, center = {bad})", data)


def test_scale_of_zeros_or_by_zero_is_refused() -> None:
    with pytest.raises(hierlmm.FormulaError, match="all zeros"):
        _evaluate("scale(x, center = FALSE)", pd.DataFrame({"x": [0.0, 0.0, 0.0]}))
    with pytest.raises(hierlmm.FormulaError, match="constant"):
        _evaluate("scale(x)", pd.DataFrame({"x": [2.0, 2.0, 2.0]}))
    with pytest.raises(hierlmm.FormulaError, match="divides by zero"):
        _evaluate("scale(x, scale = 0)", pd.DataFrame({"x": [1.0, 2.0, 3.0]}))


def test_nan_of_present_data_is_a_data_error() -> None:
    """Where R's log() gives NaN for a present value, the design refuses the row instead."""
    data = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [-0.5, 1, 2, 3], "g": list("aabb")})
    with pytest.raises(hierlmm.DataError, match="not finite"):
        hierlmm.build_design(hierlmm.model_spec("y ~ log(x) + (1 | g)"), data)


def test_fixture_is_current(tmp_path: Path) -> None:
    """Re-run the R script: its output must equal the stored fixture, and hierlmm must match it."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed")
    probe = "quit(status = !requireNamespace('jsonlite', quietly = TRUE))"
    if subprocess.run(["Rscript", "-e", probe], capture_output=True, timeout=120).returncode != 0:
        pytest.skip("the R package jsonlite is not installed")
    out = tmp_path / "fresh.json"
    run = subprocess.run(["Rscript", str(R_SCRIPT), str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    fresh = json.loads(out.read_text())
    assert {k: v for k, v in fresh.items() if k != "r_version"} == {k: v for k, v in REF.items() if k != "r_version"}
    for case in fresh["cases"]:
        _check_numeric(case, fresh)
    for case in fresh["factor_cases"]:
        _check_factor(case, fresh)
    for case in fresh["predict_cases"]:
        _check_predict(case, fresh)
