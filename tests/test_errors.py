"""Bad input gets a hierlmm error that names the problem and says how to fix it, never a bare numpy, pandas or
KeyError. Every check below looks at the message: what is wrong, what was given, and a "Fix:" line.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from hierlmm.design.design import build_design
from hierlmm.errors import (
    DataError,
    FormulaError,
    HierlmmError,
    MissingDataWarning,
    SpecError,
)
from hierlmm.spec.model_spec import ModelSpec

RI = "CD4 ~ obstime + obstime:drug + (1 | patient)"


def aids_like() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    n_patients, visits = 8, [0.0, 2.0, 6.0]
    df = pd.DataFrame({
        "patient": np.repeat([str(i) for i in range(1, n_patients + 1)], len(visits)),
        "obstime": np.tile(visits, n_patients),
        "drug": pd.Categorical(np.repeat(["ddC", "ddI"] * (n_patients // 2), len(visits))),
        "gender": np.tile(["female", "male"], n_patients * len(visits) // 2),
    })  # fmt: skip
    df["CD4"] = 10 - 0.2 * df["obstime"] + rng.normal(size=len(df))
    return df


def error_of(formula: str, data: object, expected: type[HierlmmError]) -> HierlmmError:
    """Build the spec and the design; return the (expected) hierlmm error, checking its three parts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingDataWarning)
        with pytest.raises(HierlmmError) as info:
            build_design(ModelSpec.from_formula(formula), data)  # type: ignore[arg-type]
    exc = info.value
    assert isinstance(exc, expected), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert "Fix:" in text and exc.fix, text
    assert exc.problem and text.startswith(exc.problem)
    return exc


# ------------------------------------------------------------------------------------------ columns
def test_unknown_column_suggests_a_close_match() -> None:
    exc = error_of("CD4 ~ obstim + obstim:drug + (1 | patient)", aids_like(), DataError)
    assert "'obstim'" in str(exc) and "Did you mean 'obstime'" in str(exc)
    assert "obstime" in str(exc.fix)


def test_unknown_grouping_column_and_response() -> None:
    exc = error_of("CD4 ~ obstime + (1 | patiant)", aids_like(), DataError)
    assert "'patiant'" in str(exc) and "Did you mean 'patient'" in str(exc)
    exc = error_of("cd4 ~ obstime + (1 | patient)", aids_like(), DataError)
    assert "'cd4'" in str(exc) and "'CD4'" in str(exc)


def test_unknown_column_without_close_match_lists_columns() -> None:
    exc = error_of("CD4 ~ zzzzzz + (1 | patient)", aids_like(), DataError)
    assert "Did you mean" not in str(exc)
    for column in ("patient", "obstime", "drug", "CD4"):
        assert column in str(exc.fix)


def test_duplicate_column_names() -> None:
    data = aids_like()
    data = pd.concat([data, data[["obstime"]]], axis=1)
    exc = error_of(RI, data, DataError)
    assert "'obstime'" in str(exc)


# ------------------------------------------------------------------------------------------ formula typos
@pytest.mark.parametrize(
    ("formula", "words"),
    [
        ("CD4 ~ obstime +", "ends too early"),
        ("CD4 ~ (obstime | patient", "ends too early"),
        ("CD4 obstime", "'obstime'"),
        ("CD4 ~ obstime ++ (1 | patient)", None),
        ("CD4 ~ obstime + (1 | patient))", "')'"),
        ("CD4 ~ obstime + obstime:drug + (1 | patient", "ends too early"),
        ("CD4 ~ obstime + 1 | patient", "own"),
        ("CD4 ~ obstime, drug", "','"),
        ("CD4 ~ obstime + (1 | patient) + (obstime | patient)", "'patient'"),
        ("CD4 ~ obstime & drug", "'&'"),
        ("CD4 ~ 3", "3"),
        ("CD4 ~ ", "Nothing follows"),
        ("", "empty"),
        ("CD4", "'~'"),
        ("~ obstime + (1 | patient)", "response"),
        ("CD4 ~ foo(obstime)", "'foo'"),
        ("CD4 ~ log(obstime, bse = 2)", "bse"),
        ("CD4 ~ ns(obstime, dff = 2)", "dff"),
    ],
)  # fmt: skip
def test_formula_typos(formula: str, words: str | None) -> None:
    exc = error_of(formula, aids_like(), FormulaError)
    if words is not None:
        assert words in str(exc), str(exc)
    assert exc.given is not None


def test_formula_must_be_a_string() -> None:
    with pytest.raises(FormulaError, match="string") as info:
        ModelSpec.from_formula(42)  # type: ignore[arg-type]
    assert "Fix:" in str(info.value)


@pytest.mark.parametrize(
    "random",
    [{3: "~ 1"}, {"": "~ 1"}, 3.5, ["~ 1 | patient"]],
)
def test_bad_random_argument(random: object) -> None:
    with pytest.raises(SpecError) as info:
        ModelSpec.from_nlme("CD4 ~ obstime", random)  # type: ignore[arg-type]
    assert "Fix:" in str(info.value)


# ------------------------------------------------------------------------------------------ the data
@pytest.mark.parametrize("response", ["gender", "drug"])
def test_non_numeric_response(response: str) -> None:
    exc = error_of(f"{response} ~ obstime + (1 | patient)", aids_like(), DataError)
    assert f"response {response}" in str(exc) and "numeric" in str(exc)


def test_numbers_stored_as_strings_in_the_response() -> None:
    data = aids_like().assign(CD4=lambda d: d["CD4"].round(3).astype(str))
    exc = error_of(RI, data, DataError)
    assert "pd.to_numeric" in str(exc.fix)


def test_factor_with_one_level() -> None:
    data = aids_like()
    only_ddc = data[data["drug"] == "ddC"]
    exc = error_of(RI, only_ddc, DataError)
    assert "drug" in str(exc) and "one level" in str(exc) and "ddC" in str(exc)
    exc = error_of("CD4 ~ obstime + gender + (1 | patient)", data[data["gender"] == "male"], DataError)
    assert "gender" in str(exc) and "male" in str(exc)


def test_factor_left_with_one_level_after_dropping_missing_rows() -> None:
    data = aids_like()
    data.loc[data["drug"] == "ddI", "CD4"] = np.nan
    exc = error_of(RI, data, DataError)
    assert "one level" in str(exc) and "dropped" in str(exc.fix)


def test_grouping_factor_with_one_level() -> None:
    data = aids_like()
    exc = error_of("CD4 ~ obstime + (1 | patient)", data[data["patient"] == "3"], DataError)
    assert "'patient'" in str(exc) and "1 level" in str(exc)


def test_all_rows_dropped() -> None:
    data = aids_like().assign(CD4=np.nan)
    with pytest.warns(MissingDataWarning):
        with pytest.raises(DataError, match="No rows") as info:
            build_design(ModelSpec.from_formula(RI), data)
    assert "CD4" in str(info.value) and "Fix:" in str(info.value)


def test_no_rows_at_all() -> None:
    exc = error_of(RI, aids_like().iloc[:0], DataError)
    assert exc.problem == "The data have no rows."


def test_nan_in_response_drops_rows_with_a_warning() -> None:
    data = aids_like()
    data.loc[[0, 4, 5], "CD4"] = np.nan
    with pytest.warns(MissingDataWarning, match=r"3 rows dropped .*CD4 \(3\)"):
        design = build_design(ModelSpec.from_formula(RI), data)
    assert design.n_obs == len(data) - 3
    assert design.missing.n_dropped == 3 and design.missing.by_column == {"CD4": 3}
    assert np.isfinite(design.y).all()


@pytest.mark.parametrize(
    ("formula", "name"),
    [("log(CD4) ~ obstime + (1 | patient)", "log(CD4)"),
     ("CD4 ~ log(obstime) + (1 | patient)", "log(obstime)"),
     ("CD4 ~ sqrt(obstime - 3) + (1 | patient)", "sqrt(obstime - 3)"),
     ("CD4 ~ I(1/obstime) + (1 | patient)", "I(1/obstime)")],
)  # fmt: skip
def test_transformation_outside_its_domain(formula: str, name: str) -> None:
    data = aids_like()
    data["CD4"] = data["CD4"] - 10  # some values <= 0
    exc = error_of(formula, data, DataError)
    assert name in str(exc) and "not finite" in str(exc) and "log()" in str(exc.fix)


def test_infinite_values_are_not_dropped_silently() -> None:
    data = aids_like()
    data.loc[2, "obstime"] = np.inf
    exc = error_of(RI, data, DataError)
    assert "obstime" in str(exc) and "row 2" in str(exc)


@pytest.mark.parametrize(
    ("formula", "aliased"),
    [("CD4 ~ obstime + I(2*obstime) + (1 | patient)", "I(2 * obstime)"),
     ("CD4 ~ obstime + I(obstime - obstime + 1) + (1 | patient)", "I(obstime - obstime + 1)"),
     ("CD4 ~ drug + gender + drug:gender + I(obstime*0) + (1 | patient)", "I(obstime * 0)")],
)  # fmt: skip
def test_rank_deficient_fixed_effects(formula: str, aliased: str) -> None:
    exc = error_of(formula, aids_like(), DataError)
    assert "rank deficient" in str(exc) and aliased in str(exc)


def test_more_columns_than_rows_names_the_aliased_columns() -> None:
    data = aids_like().iloc[:3]  # obstime 0, 2, 6: three rows for four columns
    exc = error_of("CD4 ~ obstime + I(obstime^2) + I(obstime^3)", data, DataError)
    assert "rank deficient (3 of 4 columns" in str(exc)
    assert "I(obstime^3) is a linear combination" in str(exc)


@pytest.mark.parametrize("data", [{"CD4": [1.0, 2.0]}, np.zeros((3, 3)), [[1, 2]], None, "aids.csv"])
def test_data_not_a_data_frame(data: object) -> None:
    exc = error_of(RI, data, DataError)
    assert "DataFrame" in str(exc)


# ------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "formula",
    ["CD4 ~ factor() + (1 | patient)", "CD4 ~ I(c(1, 2)) + (1 | patient)",
     "CD4 ~ exp(obstime, out = obstime)",
     "CD4 ~ round(obstime, digits = 1, decimals = 2)", "CD4 ~ poly(obstime, 2, raw = maybe) + (1 | patient)",
     "CD4 ~ ns(obstime, df = 0) + (1 | patient)", "CD4 ~ relevel(drug, 'ddX') + (1 | patient)",
     "CD4 ~ I(drug + 1) + (1 | patient)"],
)  # fmt: skip
def test_bad_function_arguments_are_hierlmm_errors(formula: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HierlmmError) as info:
            build_design(ModelSpec.from_formula(formula), aids_like())
    assert "Fix:" in str(info.value)


def test_date_columns_get_a_clear_error():
    import pandas as pd

    import hierlmm

    data = pd.DataFrame({"y": [1.0, 2, 3, 4], "when": pd.to_datetime(["2020-01-01"] * 4), "g": list("aabb")})
    with pytest.raises(hierlmm.DataError, match="dates"):
        hierlmm.build_design(hierlmm.model_spec("y ~ when + (1 | g)"), data)


def test_scale_arguments_must_be_logical_or_a_number():
    import numpy as np
    import pandas as pd

    import hierlmm

    data = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [0.5, 1, 2, 3], "g": list("aabb")})
    with pytest.raises(hierlmm.FormulaError, match="TRUE or FALSE, or a number"):
        hierlmm.build_design(hierlmm.model_spec('y ~ scale(x, center = "a") + (1 | g)'), data)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ scale(x, center = FALSE) + (1 | g)"), data)
    x = data["x"].to_numpy()
    # R's scale(x, center = FALSE) divides by the root mean square sqrt(sum(x^2) / (n - 1)), not by sd(x)
    assert design.X[:, 1] == pytest.approx(x / np.sqrt(np.sum(x**2) / (len(x) - 1)), rel=1e-14)
