"""Deeply nested or absurdly long formulas are refused by a FormulaError before the parser (or any later walk of the
syntax tree) can exhaust Python's recursion limit: no RecursionError escapes any entry point taking a formula."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pandas as pd
import pytest

import hierlmm
from hierlmm.cli import main
from hierlmm.errors import FormulaError, HierlmmError
from hierlmm.formula.expression import MAX_DEPTH, MAX_NESTING, parse


def nested(n: int, inner: str = "t", open_: str = "(", close: str = ")") -> str:
    return open_ * n + inner + close * n


DEEP = {  # right-hand sides nested 3000 levels deep, each in another way
    "parentheses": nested(3000),
    "calls": nested(3000, open_="log(", close=")"),
    "I() calls": nested(3000, open_="I(", close=")"),
    "unary minus": "-" * 3000 + "t",
    "power chain": "I(" + "^".join(["t"] * 3000) + ")",
    "nested random term": "t + (" + nested(3000, "1") + " | g)",
}


def small_data() -> pd.DataFrame:
    rng = np.random.default_rng(2)
    return pd.DataFrame({"y": rng.normal(size=30), "t": np.tile([0.0, 1.0, 2.0], 10),
                         "g": pd.Categorical(np.repeat([f"s{i}" for i in range(10)], 3))})


@pytest.mark.parametrize("rhs", DEEP.values(), ids=DEEP.keys())
def test_deep_nesting_is_a_formula_error(rhs: str) -> None:
    with pytest.raises(FormulaError, match=f"more than {MAX_NESTING} levels deep") as info:
        parse("y ~ " + rhs)
    assert len(str(info.value)) < 1000  # the formula is quoted back shortened
    with pytest.raises(FormulaError, match="levels deep"):
        hierlmm.model_spec(f"y ~ {rhs} + (1 | g)")
    with pytest.raises(FormulaError, match="levels deep"):
        hierlmm.fit(f"y ~ {rhs} + (1 | g)", small_data())


def test_nesting_up_to_the_limit_is_accepted() -> None:
    parse("y ~ " + nested(MAX_NESTING - 3))
    spec = hierlmm.model_spec("y ~ " + nested(50) + " + (1 | g)")
    assert spec.fixed_formula == "y ~ t"  # redundant parentheses around a term drop, as in R's terms()


def test_long_sums_are_refused_beyond_max_depth() -> None:
    ok = "y ~ " + " + ".join(f"x{i}" for i in range(500)) + " + (1 | g)"
    assert len(hierlmm.model_spec(ok).fixed_formula) > 2000
    for n in (MAX_DEPTH + 1, 20000):
        with pytest.raises(FormulaError, match=f"more than {MAX_DEPTH}"):
            hierlmm.model_spec("y ~ " + " + ".join(f"x{i}" for i in range(n)) + " + (1 | g)")


@pytest.mark.parametrize(
    "random",
    ["~ " + nested(3000, "1") + " | g", {"g": "~ " + nested(3000, "t")}, {"g": hierlmm.pdDiag("~ " + nested(3000))}],
    ids=["string", "dict", "pdDiag"],
)
def test_nlme_random_argument(random: object) -> None:
    with pytest.raises(FormulaError, match="levels deep"):
        hierlmm.model_spec(fixed="y ~ t", random=random)


@pytest.mark.parametrize(
    "option",
    [["--formula", "y ~ " + nested(3000) + " + (1 | g)"],
     ["--formula", "y ~ t", "--random", "~ " + nested(3000, "1") + " | g"],
     ["--formula", "y ~ t", "--random", "pdDiag(~ " + nested(3000) + " | g)"],
     ["--formula", "y ~ t + (1 | g)", "--correlation", "corExp(form = ~ " + nested(3000) + " | g)"],
     ["--formula", "y ~ t + (1 | g)", "--weights", "varPower(form = ~ " + nested(3000) + ")"]],
    ids=["--formula", "--random", "--random pdDiag", "--correlation", "--weights"],
)
def test_cli_options_never_show_a_traceback(tmp_path, option: list[str]) -> None:
    path = tmp_path / "d.csv"
    small_data().to_csv(path, index=False)
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["fit", "--data", str(path), *option])
    assert code == 2
    assert err.getvalue().startswith("hierlmm: error:") and "Traceback" not in err.getvalue()


def test_no_recursion_error_from_any_entry_point() -> None:
    """Every entry point, every way of nesting: a HierlmmError, never a RecursionError."""
    data = small_data()
    calls = []
    for rhs in DEEP.values():
        calls += [lambda r=rhs: hierlmm.model_spec(f"y ~ {r} + (1 | g)"),
                  lambda r=rhs: hierlmm.fit(f"y ~ {r} + (1 | g)", data),
                  lambda r=rhs: hierlmm.fit("y ~ t", data, random=f"~ {r} | g")]
    for call in calls:
        with pytest.raises(HierlmmError):
            call()
