"""Tests of hierlmm.formula.transforms: agreement with R's splines::ns/bs and stats::poly, and basis properties.

The reference numbers live in tests/fixtures/transforms_reference.json, written by
tests/fixtures/make_transforms_reference.R. The fixture tests need no R; ``test_fixture_is_current``
re-runs the R script when ``Rscript`` is installed so that the fixture cannot silently rot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from paths import FIXTURES

from hierlmm.errors import FormulaError
from hierlmm.formula.transforms import (
    STATEFUL_TRANSFORMS,
    BSpline,
    NaturalSpline,
    OrthogonalPolynomial,
    StatefulTransform,
)

REFERENCE_JSON = FIXTURES / "transforms_reference.json"
R_SCRIPT = FIXTURES / "make_transforms_reference.R"
TOL = {"rtol": 1e-10, "atol": 1e-10}
REF: dict[str, Any] = json.loads(REFERENCE_JSON.read_text())
CASES = REF["cases"]


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _vec(values: Any) -> np.ndarray:
    """jsonlite writes length-1 vectors as scalars and empty vectors as []."""
    return np.atleast_1d(np.asarray(values, dtype=float))


def _python_kwargs(case: dict[str, Any]) -> dict[str, Any]:
    """R's arguments of a reference case as Python keywords (``Boundary.knots`` -> ``Boundary_knots``)."""
    args = case["args"] or {}  # R's empty list() is written as []
    return {key.replace(".", "_"): (_vec(v) if "knots" in key else v) for key, v in args.items()}


def _fit(case: dict[str, Any], ref: dict[str, Any]) -> StatefulTransform:
    x = np.asarray(ref["vectors"][case["x"]], dtype=float)
    return STATEFUL_TRANSFORMS[case["fun"]].fit(x, **_python_kwargs(case))


def _check_case_against_r(case: dict[str, Any], ref: dict[str, Any]) -> None:
    transform = _fit(case, ref)
    x = np.asarray(ref["vectors"][case["x"]], dtype=float)
    newx = np.asarray(ref["newx"][case["x"]], dtype=float)
    basis, predicted = np.asarray(case["basis"], dtype=float), np.asarray(case["predict"], dtype=float)
    np.testing.assert_allclose(transform.transform(x), basis, **TOL, err_msg=f"{case['id']}: basis")
    np.testing.assert_allclose(transform.transform(newx), predicted, **TOL, err_msg=f"{case['id']}: predict")
    assert transform.column_suffixes == tuple(str(i) for i in range(1, basis.shape[1] + 1))
    fitted = case["fitted"]
    if case["fun"] == "poly":
        assert transform.degree == fitted["degree"]
        assert transform.raw == ("alpha" not in fitted)
        if not transform.raw:
            np.testing.assert_allclose(transform.alpha, _vec(fitted["alpha"]), **TOL)
            np.testing.assert_allclose(transform.norm2, _vec(fitted["norm2"]), **TOL)
    else:
        np.testing.assert_allclose(transform.knots, _vec(fitted["knots"]), **TOL)
        np.testing.assert_allclose(transform.boundary_knots, _vec(fitted["boundary_knots"]), **TOL)
        assert transform.intercept == fitted["intercept"]
        if case["fun"] == "bs":
            assert transform.degree == fitted["degree"]


def _check_pbc2_against_r(pbc2: dict[str, Any]) -> None:
    ns = NaturalSpline(tuple(_vec(pbc2["knots"])), tuple(_vec(pbc2["boundary_knots"])))
    np.testing.assert_allclose(ns.transform(_vec(pbc2["year_head"])), pbc2["basis_head"], **TOL)
    np.testing.assert_allclose(ns.transform(_vec(pbc2["newx"])), pbc2["predict"], **TOL)


def _assert_same_numbers(fresh: Any, stored: Any, where: str = "") -> None:
    if isinstance(fresh, dict):
        assert isinstance(stored, dict) and fresh.keys() == stored.keys(), where
        for key in fresh:
            _assert_same_numbers(fresh[key], stored[key], f"{where}.{key}")
    elif isinstance(fresh, list) and fresh and isinstance(fresh[0], dict | str):
        assert isinstance(stored, list) and len(fresh) == len(stored), where
        for i, (a, b) in enumerate(zip(fresh, stored, strict=True)):
            _assert_same_numbers(a, b, f"{where}[{i}]")
    elif isinstance(fresh, str | bool):
        assert fresh == stored, where
    else:
        np.testing.assert_allclose(np.asarray(fresh, float), np.asarray(stored, float), **TOL, err_msg=where)


# --------------------------------------------------------------------------------------------------------
# agreement with R (stored fixture: runs without R)
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_matches_r_fit_basis_and_predict(case: dict[str, Any]) -> None:
    _check_case_against_r(case, REF)


def test_fixture_covers_the_required_calls() -> None:
    ids = {c["id"] for c in CASES}
    assert {"ns_df2", "ns_df4", "ns_knots", "ns_df3_intercept", "bs_df5", "bs_deg2_knots", "poly3",
            "poly2_raw"} <= ids
    for name in ("x_ties", "x_int"):  # prediction covers both sides outside and both boundary knots
        x, newx = np.asarray(REF["vectors"][name]), np.asarray(REF["newx"][name])
        assert newx.min() < x.min() and newx.max() > x.max()
        assert x.min() in newx and x.max() in newx
    assert "pbc2" in REF, "regenerate the fixture with HIERLMM_DATA set so that the pbc2 case is included"


def test_pbc2_year_ns2_matches_r() -> None:
    pbc2 = REF["pbc2"]
    assert pbc2["call"] == "ns(year, 2)" and _vec(pbc2["knots"]).size == 1
    _check_pbc2_against_r(pbc2)


@pytest.mark.needs_data
def test_pbc2_year_ns2_fitted_on_the_data() -> None:
    data_dir = os.environ.get("HIERLMM_DATA")
    if not data_dir or not (Path(data_dir) / "pbc2.csv").is_file():
        pytest.skip("HIERLMM_DATA does not point to a directory with pbc2.csv")
    pd = pytest.importorskip("pandas")
    year = pd.read_csv(Path(data_dir) / "pbc2.csv")["year"]
    pbc2 = REF["pbc2"]
    assert len(year) == pbc2["n"]
    ns = NaturalSpline.fit(year, 2)
    np.testing.assert_allclose(ns.knots, _vec(pbc2["knots"]), **TOL)
    np.testing.assert_allclose(ns.boundary_knots, _vec(pbc2["boundary_knots"]), **TOL)
    np.testing.assert_allclose(ns.transform(year.to_numpy()[:20]), pbc2["basis_head"], **TOL)


@pytest.mark.needs_r
def test_fixture_is_current(tmp_path: Path) -> None:
    """Re-run the R script: its output must equal the stored fixture, and hierlmm must match it."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed")
    probe = "quit(status = !requireNamespace('jsonlite', quietly = TRUE))"
    has_jsonlite = subprocess.run(["Rscript", "-e", probe], capture_output=True, timeout=120)
    if has_jsonlite.returncode != 0:
        pytest.skip("the R package jsonlite is not installed")
    out = tmp_path / "fresh.json"
    command = ["Rscript", str(R_SCRIPT), str(out)]
    data_dir = os.environ.get("HIERLMM_DATA")
    if data_dir and (Path(data_dir) / "pbc2.csv").is_file():
        command.append(str(Path(data_dir) / "pbc2.csv"))
    env = {k: v for k, v in os.environ.items() if k != "HIERLMM_DATA"}  # only the explicit path above
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    fresh = json.loads(out.read_text())
    stored = {k: v for k, v in REF.items() if k != "r_version" and (k != "pbc2" or "pbc2" in fresh)}
    _assert_same_numbers({k: v for k, v in fresh.items() if k != "r_version"}, stored)
    for case in fresh["cases"]:
        _check_case_against_r(case, fresh)
    if "pbc2" in fresh:
        _check_pbc2_against_r(fresh["pbc2"])


# --------------------------------------------------------------------------------------------------------
# R argument conventions
# --------------------------------------------------------------------------------------------------------
X = np.array(REF["vectors"]["x_ties"])


def test_positional_arguments_follow_r_order() -> None:
    assert NaturalSpline.fit(X, 2) == NaturalSpline.fit(X, df=2)
    assert NaturalSpline.fit(X, None, [2.0, 5.0], True) == NaturalSpline.fit(X, knots=[2, 5], intercept=True)
    assert BSpline.fit(X, 5, None, 2) == BSpline.fit(X, df=5, degree=2)
    assert OrthogonalPolynomial.fit(X, 3) == OrthogonalPolynomial.fit(X, degree=3)
    assert NaturalSpline.fit(X, df=6, knots=[3.0]).knots == (3.0,)  # as R: knots win over df


@pytest.mark.parametrize("knots", [[2, 5, 7], (2.0, 5.0, 7.0), np.array([7.0, 2.0, 5.0])])
@pytest.mark.parametrize("boundary_key", ["Boundary_knots", "boundary_knots", "Boundary.knots"])
def test_knot_containers_and_boundary_aliases(knots: Any, boundary_key: str) -> None:
    for cls in (NaturalSpline, BSpline):
        fitted = cls.fit(X, knots=knots, **{boundary_key: np.array([0.0, 10.0])})
        assert fitted.knots == (2.0, 5.0, 7.0) and fitted.boundary_knots == (0.0, 10.0)


def test_explicit_boundary_knots_leave_training_values_outside() -> None:
    ns = NaturalSpline.fit(X, df=3, Boundary_knots=(8, 1))  # R sorts them; knots from x inside only
    assert ns.boundary_knots == (1.0, 8.0)
    np.testing.assert_allclose(ns.knots, np.quantile(X[(X >= 1) & (X <= 8)], [1 / 3, 2 / 3]))


def test_registry_and_protocol() -> None:
    assert STATEFUL_TRANSFORMS == {"ns": NaturalSpline, "bs": BSpline, "poly": OrthogonalPolynomial}
    for name, cls in STATEFUL_TRANSFORMS.items():
        assert cls.name == name
        assert isinstance(cls.fit(X, 3), StatefulTransform)


def test_column_suffixes() -> None:
    assert NaturalSpline.fit(X, df=4).column_suffixes == ("1", "2", "3", "4")
    assert NaturalSpline.fit(X, df=3, intercept=True).column_suffixes == ("1", "2", "3")
    assert BSpline.fit(X).column_suffixes == ("1", "2", "3")
    assert BSpline.fit(X, df=6, degree=2, intercept=True).column_suffixes == tuple("123456")
    assert OrthogonalPolynomial.fit(X, 2, raw=True).column_suffixes == ("1", "2")


def test_new_data_keeps_training_parameters() -> None:
    """Predicting on a subset must not re-place the knots (the whole point of a stateful transform)."""
    for cls in STATEFUL_TRANSFORMS.values():
        fitted = cls.fit(X, 3)
        np.testing.assert_allclose(fitted.transform(X[:3]), fitted.transform(X)[:3], rtol=1e-13, atol=1e-14)
        assert not np.allclose(cls.fit(X[:5], 3).transform(X[:3]), fitted.transform(X[:3]))


def test_missing_values_in_new_data_give_missing_rows() -> None:
    for cls in STATEFUL_TRANSFORMS.values():
        fitted = cls.fit(X, 3)
        out = fitted.transform(np.array([1.0, np.nan, 20.0]))
        assert out.shape == (3, len(fitted.column_suffixes))
        assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2]]).all()
        np.testing.assert_allclose(out[[0, 2]], fitted.transform(np.array([1.0, 20.0])), rtol=1e-14)


def test_pandas_input() -> None:
    pd = pytest.importorskip("pandas")
    series = pd.Series(X, index=np.arange(100, 100 + X.size))
    assert NaturalSpline.fit(series, 2) == NaturalSpline.fit(X, 2)
    ns = NaturalSpline.fit(X, 2)
    np.testing.assert_allclose(ns.transform(series), ns.transform(X))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: NaturalSpline.fit(np.array([1.0, np.nan, 3.0]), 2), "missing or infinite"),
        (lambda: BSpline.fit(np.array([1.0, np.inf, 3.0, 4.0])), "missing or infinite"),
        (lambda: OrthogonalPolynomial.fit([1.0, 2.0, np.nan], 1), "missing or infinite"),
        (lambda: NaturalSpline.fit(np.array(["a", "b", "c"]), 2), "numeric"),
        (lambda: OrthogonalPolynomial.fit(["a", "b"], 1), "numeric"),
        (lambda: NaturalSpline.fit(X, 0), "'df' must be a whole number >= 1"),
        (lambda: NaturalSpline.fit(X, 1, intercept=True), "'df' must be a whole number >= 2"),
        (lambda: NaturalSpline.fit(X, 2.5), "'df' must be a whole number"),
        (lambda: BSpline.fit(X, df=2), "'df' must be a whole number >= 3"),
        (lambda: BSpline.fit(X, degree=0), "'degree' must be a whole number >= 1"),
        (lambda: OrthogonalPolynomial.fit(X, 0), "'degree' must be a whole number >= 1"),
        (lambda: OrthogonalPolynomial.fit([1.0, 2.0, 2.0, 3.0], 3), "less than the number of distinct"),
        (lambda: NaturalSpline.fit(np.full(5, 2.0), 2), "at least 2 distinct values"),
        (lambda: NaturalSpline.fit(np.array([0, 0, 0, 0, 1, 2.0]), 4), "strictly inside"),
        (lambda: BSpline.fit(X, knots=[0.5, 3.0]), "strictly inside"),
        (lambda: NaturalSpline.fit(X, Boundary_knots=[1.0, 2.0, 3.0]), "exactly 2 values"),
        (lambda: NaturalSpline.fit(X, 2, df=3), "twice"),
        (lambda: NaturalSpline.fit(X, spam=3), "no argument 'spam'"),
        (lambda: OrthogonalPolynomial.fit(X, 2, True), "at most 1 positional"),
        (lambda: NaturalSpline.fit(X, 2, intercept="yes"), "TRUE/FALSE"),
        (lambda: NaturalSpline.fit(X, 2).transform(np.array([1.0, np.inf])), "missing or infinite"),
        (lambda: NaturalSpline.fit(X, 2).transform(np.ones((3, 2))), "single numeric column"),
    ],
)
def test_bad_arguments_raise_formula_error(call: Any, message: str) -> None:
    with pytest.raises(FormulaError, match=message) as info:
        call()
    assert info.value.given is not None and info.value.fix


# --------------------------------------------------------------------------------------------------------
# properties (hypothesis)
# --------------------------------------------------------------------------------------------------------
@st.composite
def training_x(draw: st.DrawFn, min_unique: int = 8) -> np.ndarray:
    """Unsorted values with 2 decimals in [-100, 100], with ties among the interior values."""
    unique = draw(st.lists(st.integers(-10_000, 10_000), min_size=min_unique, max_size=40, unique=True))
    values = np.array(unique, dtype=float) / 100
    inner = np.sort(values)[1:-1]
    ties = draw(st.lists(st.sampled_from(list(inner)), max_size=15))
    x = np.concatenate([values, ties])
    return x[draw(st.permutations(range(x.size)))]


SPLINE_CALLS = st.sampled_from([
    (NaturalSpline, {"df": 1}), (NaturalSpline, {"df": 2}), (NaturalSpline, {"df": 4}),
    (NaturalSpline, {"df": 3, "intercept": True}), (BSpline, {"df": 5}), (BSpline, {"degree": 2, "df": 4}),
    (BSpline, {"degree": 1, "df": 3, "intercept": True}),
])
PROPS = settings(max_examples=60, deadline=None)


@PROPS
@given(x=training_x(), call=SPLINE_CALLS)
def test_fit_is_idempotent(x: np.ndarray, call: tuple[type, dict[str, Any]]) -> None:
    """Re-fitting with the stored parameters (R's makepredictcall) reproduces the fit and its basis."""
    cls, kwargs = call
    fitted = cls.fit(x, **kwargs)
    assert cls.fit(x, **kwargs) == fitted
    params = {"knots": fitted.knots, "Boundary_knots": fitted.boundary_knots, "intercept": fitted.intercept}
    if cls is BSpline:
        params["degree"] = fitted.degree
    refitted = cls.fit(x, **params)
    assert refitted == fitted
    np.testing.assert_array_equal(refitted.transform(x), fitted.transform(x))
    assert fitted.transform(x).shape == (x.size, len(fitted.column_suffixes))


@PROPS
@given(x=training_x(), degree=st.integers(1, 4), raw=st.booleans())
def test_poly_fit_is_idempotent(x: np.ndarray, degree: int, raw: bool) -> None:
    fitted = OrthogonalPolynomial.fit(x, degree, raw=raw)
    again = OrthogonalPolynomial(fitted.degree, fitted.alpha, fitted.norm2, fitted.raw)
    assert again == fitted
    np.testing.assert_array_equal(again.transform(x), fitted.transform(x))


@PROPS
@given(x=training_x(), df=st.integers(1, 5), intercept=st.booleans(), steps=st.floats(0.01, 3.0))
def test_ns_is_linear_beyond_the_boundary(x: np.ndarray, df: int, intercept: bool, steps: float) -> None:
    ns = NaturalSpline.fit(x, df=max(df, 1 + intercept), intercept=intercept)
    lo, hi = ns.boundary_knots
    width = hi - lo
    for side, edge in ((-1, lo), (1, hi)):
        grid = edge + side * width * steps * np.arange(0.0, 6.0)  # starts at the boundary knot itself
        values = ns.transform(grid)
        second_differences = values[2:] - 2 * values[1:-1] + values[:-2]
        np.testing.assert_allclose(second_differences, 0.0, atol=1e-9 * max(1.0, np.abs(values).max()))


@PROPS
@given(x=training_x(), df=st.integers(1, 5), intercept=st.booleans())
def test_ns_second_derivative_is_zero_at_the_boundary(x: np.ndarray, df: int, intercept: bool) -> None:
    """Inside the outer knot intervals the basis is one cubic: interpolate it, its f'' at the knot is 0."""
    ns = NaturalSpline.fit(x, df=max(df, 1 + intercept), intercept=intercept)
    lo, hi = ns.boundary_knots
    inner = (lo, *ns.knots, hi)
    for edge, neighbour in ((lo, inner[1]), (hi, inner[-2])):
        t = np.linspace(0.0, 1.0, 4)  # local coordinate: x = edge + t * (neighbour - edge)
        values = ns.transform(edge + t * (neighbour - edge))
        for column in values.T:
            cubic = np.polynomial.Polynomial.fit(t, column, 3, domain=[0, 1], window=[0, 1])
            assert abs(cubic.deriv(2)(0.0)) < 1e-8 * max(1.0, np.abs(column).max())


def test_bsplines_are_not_natural() -> None:
    """Control for the test above: a cubic B-spline basis does have f'' != 0 at the boundary."""
    bs = BSpline.fit(X, df=4)
    lo, knot = bs.boundary_knots[0], bs.knots[0]
    t = np.linspace(0.0, 1.0, 4)
    column = bs.transform(lo + t * (knot - lo))[:, 0]
    cubic = np.polynomial.Polynomial.fit(t, column, 3, domain=[0, 1], window=[0, 1])
    assert abs(cubic.deriv(2)(0.0)) > 0.1


@PROPS
@given(x=training_x(), degree=st.integers(1, 5))
def test_poly_columns_are_orthonormal_and_centred(x: np.ndarray, degree: int) -> None:
    z = OrthogonalPolynomial.fit(x, degree).transform(x)
    np.testing.assert_allclose(z.T @ z, np.eye(degree), atol=1e-8)
    np.testing.assert_allclose(np.ones(x.size) @ z, 0.0, atol=1e-8)


@PROPS
@given(x=training_x(), degree=st.integers(1, 4))
def test_raw_poly_is_plain_powers(x: np.ndarray, degree: int) -> None:
    np.testing.assert_allclose(OrthogonalPolynomial.fit(x, degree, raw=True).transform(x),
                               x[:, None] ** np.arange(1, degree + 1), rtol=1e-14)


@PROPS
@given(x=training_x(), call=SPLINE_CALLS, order=st.randoms(use_true_random=False))
def test_splines_do_not_depend_on_the_order_of_training_data(x: np.ndarray, call: Any, order: Any) -> None:
    cls, kwargs = call
    shuffled = x.copy()
    order.shuffle(shuffled)
    assert cls.fit(shuffled, **kwargs) == cls.fit(x, **kwargs)


@PROPS
@given(x=training_x(), degree=st.integers(1, 4), order=st.randoms(use_true_random=False))
def test_poly_does_not_depend_on_the_order_of_training_data(x: np.ndarray, degree: int, order: Any) -> None:
    shuffled = x.copy()
    order.shuffle(shuffled)
    a, b = OrthogonalPolynomial.fit(x, degree), OrthogonalPolynomial.fit(shuffled, degree)
    np.testing.assert_allclose(a.alpha, b.alpha, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.norm2, b.norm2, rtol=1e-10)
    newx = np.linspace(x.min() - 5, x.max() + 5, 7)
    np.testing.assert_allclose(a.transform(newx), b.transform(newx), rtol=1e-8, atol=1e-8)


@PROPS
@given(x=training_x(), df=st.integers(3, 7), degree=st.integers(1, 3))
def test_bs_with_intercept_is_a_partition_of_unity(x: np.ndarray, df: int, degree: int) -> None:
    try:
        bs = BSpline.fit(x, df=max(df, degree + 1), degree=degree, intercept=True)
    except FormulaError as error:  # many ties: a knot more than degree + 1 times (R: a zero column)
        assert "repeated more than" in str(error)
        reject()
    lo, hi = bs.boundary_knots
    grid = np.r_[np.linspace(lo, hi, 25), x]  # includes both boundary knots exactly
    np.testing.assert_allclose(bs.transform(grid).sum(axis=1), 1.0, rtol=1e-12)
    assert (bs.transform(grid) >= -1e-15).all()
