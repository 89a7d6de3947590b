"""Hostile formulas never run code: they raise a FormulaError (or, for a quoted name, a DataError) and leave
no trace. Every test runs in tmp_path; the attacks try to create the sentinel file ``PWNED`` there.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierlmm.design.design import build_design
from hierlmm.errors import DataError, FormulaError, HierlmmError, SpecError, UnsafeExpressionError
from hierlmm.spec.model_files import load_spec
from hierlmm.spec.model_spec import ModelSpec, pdSymm

SENTINEL = "PWNED"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def small_data() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 12
    return pd.DataFrame({
        "CD4": rng.normal(10, 2, n), "y": rng.normal(size=n), "x": np.linspace(0.5, 3, n),
        "obstime": np.tile([0.0, 2.0, 6.0], 4), "drug": pd.Categorical(np.repeat(["ddC", "ddI"], 6)),
        "patient": pd.Categorical(np.repeat(["1", "2", "3", "4"], 3)),
    })  # fmt: skip


def build(formula: str) -> None:
    spec = ModelSpec.from_formula(formula)
    build_design(spec, small_data())


HOSTILE = [
    "CD4 ~ I(pd.io.common.os.system('touch PWNED'))",
    "CD4 ~ os.system('touch PWNED')",
    "CD4 ~ __import__('os').system('touch PWNED')",
    "CD4 ~ I(__import__('os').system('touch PWNED'))",
    'y ~ eval("1")',
    "y ~ eval(parse(text = 'system(\"touch PWNED\")'))",
    "y ~ system('touch PWNED')",
    "y ~ x.__class__",
    "y ~ x.__class__.__mro__",
    "y ~ I(x.__class__)",
    "y ~ open('/etc/passwd')",
    "y ~ exec('x')",
    "y ~ exec(\"open('PWNED', 'w')\")",
    "y ~ getattr(x, 'y')",
    "y ~ globals()",
    "y ~ print(x)",
    "y ~ lambda x: x",
    "y ~ (lambda: open('PWNED', 'w'))()",
    "y ~ x[0]",
    "y ~ x[[1]]",
    "y ~ {x}",
    "y ~ x; open('PWNED', 'w')",
    "y ~ x\nopen('PWNED', 'w')",
    "y ~ x\r\n__import__('os').system('touch PWNED')",
    "y ~ x; import os",
    "y ~ `__import__`('os')",
    "y ~ `os.system`('touch PWNED')",
    "y ~ log(x, base = `__builtins__`)",
    "y ~ ns(x, df = open('PWNED', 'w'))",
    "y ~ poly(x, 2, raw = eval('True'))",
    "y ~ x + (1 | patient); open('PWNED', 'w')",
    "y ~ x + (1 | open('PWNED', 'w'))",
    "y ~ x + (exec('1') | patient)",
    "y ~ x$y",
    "y ~ x@y",
    "y ~ base::system('touch PWNED')",
    "y ~ x <- 1",
    "y ~ !x",
    "y ~ f'{x}'",
    "y ~ 'a' 'b'",
    "y ~ x if x else x",
    "y ~ exp(x, out = x)",
    "y ~ pmax(x, 0, where = x)",
]


@pytest.mark.parametrize("formula", HOSTILE)
def test_hostile_formula_is_refused(formula: str, in_tmp: Path) -> None:
    with pytest.raises(FormulaError) as info:
        build(formula)
    assert "Fix:" in str(info.value)
    assert not (in_tmp / SENTINEL).exists()


@pytest.mark.parametrize(
    "formula",
    ["CD4 ~ I(pd.io.common.os.system('touch PWNED'))", "y ~ eval('1')", "y ~ open('/etc/passwd')",
     "y ~ system('touch PWNED')", "y ~ getattr(x, 'y')", "y ~ x.__class__", "y ~ `__import__`"],
)  # fmt: skip
def test_disallowed_names_are_unsafe_expression_errors(formula: str, in_tmp: Path) -> None:
    with pytest.raises(UnsafeExpressionError, match="not allowed|Python internal"):
        build(formula)
    assert not (in_tmp / SENTINEL).exists()


def test_quoted_names_are_only_ever_column_names(in_tmp: Path) -> None:
    # Backticks quote a column name (R semantics): whatever is inside is looked up, never run.
    with pytest.raises(DataError, match="not in the data"):
        build("y ~ `os.system('touch PWNED')`")
    with pytest.raises(DataError, match="not in the data"):
        build("y ~ I(`open('PWNED', 'w')`)")
    assert not (in_tmp / SENTINEL).exists()
    data = small_data().rename(columns={"x": "open('PWNED', 'w')"})
    design = build_design(ModelSpec.from_formula("y ~ `open('PWNED', 'w')`"), data)
    np.testing.assert_array_equal(design.X[:, 1], data["open('PWNED', 'w')"].to_numpy())
    assert not (in_tmp / SENTINEL).exists()


@pytest.mark.parametrize(
    ("fixed", "random"),
    [("y ~ x", "~ 1 | __import__('os')"), ("y ~ x", "~ open('PWNED', 'w') | patient"),
     ("y ~ I(os.system('touch PWNED'))", "~ 1 | patient"), ("y ~ x", {"patient": pdSymm("~ exec('1')")}),
     ("y ~ x", "~ 1 | patient; open('PWNED', 'w')")],
)  # fmt: skip
def test_hostile_nlme_arguments(fixed: str, random: object, in_tmp: Path) -> None:
    with pytest.raises(FormulaError):
        build_design(ModelSpec.from_nlme(fixed, random), small_data())  # type: ignore[arg-type]
    assert not (in_tmp / SENTINEL).exists()


def _model_file(folder: Path, model_lines: str) -> Path:
    small_data().to_csv(folder / "d.csv", index=False)
    path = folder / "attack.toml"
    path.write_text(f'[model]\n{model_lines}\n\n[data]\nname = "d.csv"\n')
    return path


def _toml_string(text: str) -> str:
    return "'''" + text + "'''"


@pytest.mark.parametrize("formula", HOSTILE)
def test_hostile_formula_in_a_toml_file(formula: str, in_tmp: Path) -> None:
    path = _model_file(in_tmp, f"formula = {_toml_string(formula)}")
    with pytest.raises(FormulaError):
        model = load_spec(path)
        build_design(model.spec, model.load_data())
    assert not (in_tmp / SENTINEL).exists()


@pytest.mark.parametrize(
    "model_lines",
    [f"fixed = {_toml_string('y ~ I(os.system(\"touch PWNED\"))')}\nrandom = '~ 1 | patient'",
     "fixed = 'y ~ x'\nrandom = '''~ 1 | __import__('os')'''",
     "fixed = 'y ~ x'\n[model.random.patient]\nstructure = 'pdDiag'\nformula = '''~ eval('1')'''"],
)  # fmt: skip
def test_hostile_nlme_toml_file(model_lines: str, in_tmp: Path) -> None:
    path = _model_file(in_tmp, model_lines)
    with pytest.raises(FormulaError):
        model = load_spec(path)
        build_design(model.spec, model.load_data())
    assert not (in_tmp / SENTINEL).exists()


def test_toml_cannot_smuggle_keys(in_tmp: Path) -> None:
    path = _model_file(in_tmp, "formula = 'y ~ x + (1 | patient)'\nexec = '''open('PWNED', 'w')'''")
    with pytest.raises(SpecError, match="exec"):
        load_spec(path)
    assert not (in_tmp / SENTINEL).exists()


# Random strings over the formula alphabet and Python's attack alphabet: a spec, or a hierlmm error.
ALPHABET = "abgxy" + "~+-*/:^()|,=<>.`'\"%!$@[]{};_ \n" + "0123456789" + "IeT"
TOKENS = [
    "y ~ ", "x", "g", "a", " + ", " * ", ":", "/", "(", ")", "|", "||", "^2", "-1", "0", "1", "I(", "log(",
    "ns(",
    ", ", "df = 2", "%in%", "`", "'", "__", ".", "[", "lambda", "import", "os", "system(", ";", "\n",
]  # fmt: skip


def _fuzz_data() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({
        "y": rng.normal(size=8), "x": rng.uniform(0.5, 2.0, 8), "a": pd.Categorical(list("pqrpqrpq")),
        "g": pd.Categorical(list("11223344")),
    })  # fmt: skip


def _spec_or_hierlmm_error(text: str, *, design: bool) -> None:
    try:
        spec = ModelSpec.from_formula(text)
    except (FormulaError, SpecError):
        return
    assert isinstance(spec, ModelSpec)
    if design:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                build_design(spec, _fuzz_data())
            except HierlmmError:
                pass


@settings(
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(alphabet=ALPHABET, max_size=40))
def test_random_text_is_a_spec_or_a_formula_error(text: str, in_tmp: Path) -> None:
    _spec_or_hierlmm_error(text, design=False)
    _spec_or_hierlmm_error("y ~ " + text, design=True)
    assert not (in_tmp / SENTINEL).exists()


@settings(
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=12))
def test_random_token_soup_is_a_spec_or_a_hierlmm_error(parts: list[str], in_tmp: Path) -> None:
    _spec_or_hierlmm_error("".join(parts), design=True)
    assert not (in_tmp / SENTINEL).exists()
