"""TOML model files are checked against a schema (hierlmm.spec.model_file_schema): a value of the wrong type, an
unknown key, invalid TOML or a path that is not one gives a SpecError naming the key (a dotted path), what it must be
and what was given; never an AttributeError or a TypeError. Issue 17, "no bare tracebacks"."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from paths import MODELS

import hierlmm
from hierlmm.errors import SpecError
from hierlmm.spec.model_file_schema import MODEL_FILE_SCHEMA, check_model_file
from hierlmm.spec.model_files import load_spec
from hierlmm.structures.serial_correlation import parse_correlation

MODEL = '[model]\nformula = "CD4 ~ obstime + (1 | patient)"\n'
NLME = '[model]\nfixed = "CD4 ~ obstime"\n'
DATA = '[data]\nname = "aids"\n'


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(text)
    return path


# (id, file, words the message must hold)
WRONG_TYPES = [
    ("name = 5", '[model]\nname = 5\nformula = "y ~ x + (1 | g)"\n' + DATA,
     ("model.name", "must be a string, not an integer", "Given: 5 (integer)")),
    ("model = 5", "model = 5\n" + DATA, ("model ", "must be a table, not an integer", "Given: 5")),
    ("title a table", MODEL + '[model.title]\na = 1\n' + DATA, ("model.title", "must be a string, not a table")),
    ("formula a number", "[model]\nformula = 3\n" + DATA, ("model.formula", "must be a string", "Given: 3")),
    ("fixed an array", '[model]\nfixed = ["y ~ x"]\n' + DATA, ("model.fixed", "not an array")),
    ("name a date", '[model]\nname = 1979-05-27\nformula = "y ~ x + (1 | g)"\n' + DATA,
     ("model.name", "not a date")),
    ("random a number", NLME + "random = 3\n" + DATA,
     ("model.random", "a string", "one table per grouping factor", "Given: 3")),
    ("random factor a number", NLME + "[model.random]\npatient = 3\n" + DATA,
     ("model.random.patient", "one-sided formula", "Given: 3")),
    ("random factor without formula", NLME + '[model.random.patient]\nstructure = "pdDiag"\n' + DATA,
     ("model.random.patient", "formula", "pdDiag")),
    ("unknown structure", NLME + '[model.random.patient]\nformula = "~ 1"\nstructure = "pdFoo"\n' + DATA,
     ("model.random.patient", "pdFoo", "pdSymm")),
    ("pdBlocked blocks not tables", NLME + '[model.random.patient]\nstructure = "pdBlocked"\nblocks = [1]\n' + DATA,
     ("model.random.patient", "pdBlocked")),
    ("correlation a number", MODEL + "correlation = 1\n" + DATA, ("model.correlation", "must be a string")),
    ("weights a boolean", MODEL + "weights = true\n" + DATA, ("model.weights", "not a boolean")),
    ("data a string", 'data = "aids"\n' + MODEL, ("data ", "must be a table, not a string")),
    ("data.name a number", MODEL + "[data]\nname = 1\n", ("data.name", "must be a string")),
    ("derive a table", MODEL + DATA + '[data.derive]\nname = "b"\n', ("data.derive", "must be an array")),
    ("derive by a number", MODEL + DATA + '[[data.derive]]\nname = "b"\nbaseline = "CD4"\nby = 2\n',
     ("data.derive[0].by", "must be a string", 'by = "id"')),
    ("derive without by", MODEL + DATA + '[[data.derive]]\nname = "b"\nbaseline = "CD4"\n',
     ("data.derive[0].by", "missing")),
    ("method a number", MODEL + DATA + "[fit]\nmethod = 1\n", ("fit.method", "must be a string", "REML")),
    ("sampler unknown", MODEL + DATA + '[fit]\nsampler = "gibbs"\n', ("fit.sampler", "'marginal', 'joint'", "gibbs")),
    ("centered a number", MODEL + DATA + "[fit]\ncentered = 3\n", ("fit.centered", '"auto" or an array')),
    ("priors a number", "priors = 1\n" + MODEL + DATA, ("priors", "must be a table")),
    ("reference.file a number", MODEL + DATA + "[reference]\nfile = 1\n", ("reference.file", "must be a string")),
    ("no model", DATA, ("no [model] table",)),
    ("no data", MODEL, ("no [data] table", "name")),
    ("empty file", "", ("no [model] table",)),
]

UNKNOWN_KEYS = [
    ("top level", MODEL + DATA + "[extra]\nx = 1\n",
     ("['extra']", "the top level", "data, fit, model, priors, reference")),
    ("model", MODEL + 'formla = "y ~ x"\n' + DATA,
     ("['formla']", "[model]", "correlation, fixed, formula, name, random, title, weights")),
    ("data", MODEL + DATA + 'file = "x.csv"\n', ("['file']", "[data]", "derive, name")),
    ("data.derive", MODEL + DATA + '[[data.derive]]\nname = "b"\nbaseline = "CD4"\nby = "id"\nkind = "first"\n',
     ("['kind']", "[data.derive[0]]", "baseline, by, name")),
    ("fit", MODEL + DATA + '[fit]\nmethod = "REML"\nmaxiter = 3\n', ("['maxiter']", "[fit]", "centered, method")),
    ("priors", MODEL + DATA + "[priors]\ntau = 1\n", ("['tau']", "[priors]", "beta, lkj_eta")),
    ("reference", MODEL + DATA + '[reference]\nfile = "x.json"\nurl = "u"\n', ("['url']", "[reference]", "file")),
]


@pytest.mark.parametrize(("name", "text", "words"), WRONG_TYPES + UNKNOWN_KEYS,
                         ids=[case[0] for case in WRONG_TYPES + UNKNOWN_KEYS])
def test_schema_errors_name_the_key_the_type_and_the_value(tmp_path: Path, name: str, text: str,
                                                           words: tuple[str, ...]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    message = str(info.value)
    assert "Fix:" in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[model\nformula = 1", ("Invalid TOML", "line 1, column 7", "'[model'")),
        ('[model]\nformula = "y ~ x\n' + DATA, ("Invalid TOML", "line 2", "'formula = \"y ~ x'")),
        (MODEL + DATA + "[data]\nname = \"x\"\n", ("Invalid TOML", "line 5")),  # a table defined twice
        (MODEL + "name = \n" + DATA, ("Invalid TOML", "line 3")),
    ],
    ids=["unclosed table header", "unclosed string", "table twice", "missing value"],
)
def test_invalid_toml_gives_line_and_column(tmp_path: Path, text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(_write(tmp_path, text))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("path", [None, 5, b"model.toml", ["m.toml"]], ids=["None", "int", "bytes", "list"])
def test_a_path_that_is_not_a_path(path: object) -> None:
    with pytest.raises(SpecError, match="must be given as a path"):
        load_spec(path)  # type: ignore[arg-type]


def test_directory_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(tmp_path)
    path = tmp_path / "latin.toml"
    path.write_bytes(MODEL.encode() + 'title = "café"\n'.encode("latin-1") + DATA.encode())
    with pytest.raises(SpecError, match="not UTF-8 text.*line 3"):
        load_spec(path)


def test_random_beside_an_lme4_formula_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="random goes with fixed"):
        load_spec(_write(tmp_path, MODEL + 'random = "~ 1 | patient"\n' + DATA))


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.toml")), ids=lambda p: p.name)
def test_every_repository_model_file_loads_and_matches_the_schema(path: Path) -> None:
    model_file = load_spec(path)
    assert model_file.name == path.stem
    check_model_file(tomllib.loads(path.read_text()), path)


def test_every_documented_key_is_accepted(tmp_path: Path) -> None:
    text = (
        '[model]\nname = "m"\ntitle = "t"\nfixed = "CD4 ~ obstime"\n'
        'correlation = "corExp(form = ~ obstime | patient)"\n'
        'weights = "varIdent(form = ~ 1 | drug)"\n'
        '[model.random.patient]\nstructure = "pdBlocked"\n'
        'blocks = [{ formula = "~ 1" }, { structure = "pdDiag", formula = "~ 0 + obstime" }]\n'
        '[data]\nname = "aids"\n[[data.derive]]\nname = "baseCD4"\nbaseline = "CD4"\nby = "patient"\n'
        '[fit]\nmethod = "nuts"\nsampler = "joint"\ncentered = ["patient:(Intercept)"]\n'
        '[priors]\nsigma = 3.0\nbeta = { obstime = [0.0, 1.0] }\nsd = { "patient:obstime" = 0.5 }\n'
        '[reference]\nfile = "r.json"\n'
    )
    model_file = load_spec(_write(tmp_path, text))
    assert model_file.run == "NUTS" and model_file.correlation.startswith("corExp")
    assert model_file.derive[0].name == "baseCD4" and model_file.reference == "r.json"
    Draft202012Validator.check_schema(MODEL_FILE_SCHEMA)  # the schema itself is valid JSON Schema


def test_load_spec_is_public_and_raises_the_same(tmp_path: Path) -> None:
    with pytest.raises(hierlmm.SpecError, match="model.name"):
        hierlmm.load_spec(_write(tmp_path, '[model]\nname = 5\nformula = "y ~ x + (1 | g)"\n' + DATA))


@pytest.mark.parametrize(
    ("value", "nugget"),
    [("TRUE", True), ("T", True), ("true", True), ("1", True), ("7", True), ("0.5", True), ("-1", True),
     ("FALSE", False), ("F", False), ("0", False), ("0.0", False)],
)
def test_nugget_is_read_as_r_reads_a_logical(value: str, nugget: bool) -> None:
    assert parse_correlation(f"corExp(form = ~ t | id, nugget = {value})").nugget is nugget


@pytest.mark.parametrize("value", ["yes", "NaN", "maybe"])
def test_nugget_that_is_not_a_logical_is_refused(value: str) -> None:
    with pytest.raises(SpecError, match="nugget must be TRUE or FALSE"):
        parse_correlation(f"corExp(form = ~ t | id, nugget = {value})")


def test_nugget_in_a_model_file(tmp_path: Path) -> None:
    path = _write(tmp_path, MODEL + 'correlation = "corExp(form = ~ obstime | patient, nugget = 1)"\n' + DATA)
    assert parse_correlation(load_spec(path).correlation).nugget
    path = _write(tmp_path, MODEL + 'correlation = "corExp(form = ~ obstime | patient, nugget = yes)"\n' + DATA)
    with pytest.raises(SpecError, match="nugget"):
        load_spec(path)


@pytest.mark.parametrize("value", [None, 5])
def test_parse_correlation_of_a_non_string(value: object) -> None:
    with pytest.raises(SpecError, match="as text"):
        parse_correlation(value)  # type: ignore[arg-type]
