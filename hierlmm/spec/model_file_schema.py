"""The schema of TOML model files, checked with :mod:`jsonschema` before any value is used.

A model file is a tree of TOML tables. :data:`MODEL_FILE_SCHEMA` (JSON Schema, draft 2020-12) lists every key a
model file may hold and the type of its value; :func:`check_model_file` refuses anything else with a
:class:`~hierlmm.errors.SpecError` naming the key as a dotted path (``model.name``, ``data.derive[0].by``), the type
expected and the value given. Unknown keys are refused with the known ones listed, so a typo cannot silently change
the model. What the schema cannot say (exactly one of ``formula`` and ``fixed``; a formula's syntax; ``method``'s
values in any case; which priors a model takes) is checked by :func:`hierlmm.spec.model_files.load_spec` and the
functions it calls.

Keys and types::

    [model]        name: string, title: string, formula: string (lme4 style) | fixed: string (nlme style),
                   random: string, or one table per grouping factor (see below), correlation: string,
                   weights: string
    [model.random.FACTOR]
                   formula: string, structure: "pdSymm" | "pdDiag" | "pdIdent" | "pdCompSymm";
                   or structure = "pdBlocked" with blocks: array of tables { formula, structure }; or a string
    [data]         name: string (required), derive: array of tables { name, baseline, by: string }
    [fit]          method: string (REML, ML, NUTS, BOTH), sampler: "marginal" | "joint",
                   centered: "auto" or array of strings
    [priors]       beta, sigma, sd, lkj_eta, range, nugget, rho (values checked by
                   :func:`hierlmm.spec.prior_overrides.check_prior_overrides`)
    [reference]    file: string
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, relevance

from hierlmm.errors import SpecError
from hierlmm.spec.prior_overrides import PRIOR_SHAPES

STRUCTURES = ("pdSymm", "pdDiag", "pdIdent", "pdCompSymm")
"""The structures of ``[model.random.FACTOR] structure`` (besides ``pdBlocked``, which takes ``blocks``)."""

_STRING = {"type": "string"}
_BLOCK = {
    "type": "object",
    "properties": {"structure": {"enum": list(STRUCTURES)}, "formula": _STRING},
    "required": ["formula"],
    "additionalProperties": False,
}
_FACTOR = {
    "description": 'a one-sided formula ("~ obstime"), a table with formula (and optionally structure = '
                   f'{", ".join(map(repr, STRUCTURES))}), or structure = "pdBlocked" with blocks',
    "examples": ['structure = "pdDiag", formula = "~ obstime"; or structure = "pdBlocked", blocks = '
                 '[{ formula = "~ 1" }, { structure = "pdDiag", formula = "~ 0 + obstime" }]'],
    "anyOf": [
        _STRING,
        _BLOCK,
        {
            "type": "object",
            "properties": {"structure": {"const": "pdBlocked"},
                           "blocks": {"type": "array", "minItems": 1, "items": {"anyOf": [_STRING, _BLOCK]}}},
            "required": ["structure", "blocks"],
            "additionalProperties": False,
        },
    ],
}

MODEL_FILE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "hierlmm model file",
    "type": "object",
    "required": ["model", "data"],
    "additionalProperties": False,
    "properties": {
        "model": {
            "type": "object",
            "examples": ['[model] with formula = "CD4 ~ obstime + (obstime | patient)"'],
            "additionalProperties": False,
            "properties": {
                "name": {**_STRING, "examples": ['name = "aids_ri_rs"']},
                "title": {**_STRING, "examples": ['title = "AIDS: random intercepts and slopes"']},
                "formula": {**_STRING, "examples": ['formula = "CD4 ~ obstime + (obstime | patient)"']},
                "fixed": {**_STRING, "examples": ['fixed = "CD4 ~ obstime + obstime:drug"']},
                "random": {
                    "description": 'a string ("~ obstime | patient") or one table per grouping factor',
                    "examples": ['random = "~ obstime | patient", or [model.random.patient] with '
                                 'formula = "~ obstime"'],
                    "anyOf": [_STRING, {"type": "object", "minProperties": 1, "additionalProperties": _FACTOR}],
                },
                "correlation": {**_STRING, "examples": ['correlation = "corExp(form = ~ obstime | patient)"']},
                "weights": {**_STRING, "examples": ['weights = "varIdent(form = ~ 1 | drug)"']},
            },
        },
        "data": {
            "type": "object",
            "examples": ['[data] with name = "aids"'],
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {**_STRING, "examples": ['name = "aids" (a hierlmm.datasets name, or a CSV path)']},
                "derive": {
                    "type": "array",
                    "examples": ['[[data.derive]] with name = "basePro", baseline = "prothrombin", by = "id"'],
                    "items": {
                        "type": "object",
                        "examples": ['name = "basePro", baseline = "prothrombin", by = "id"'],
                        "required": ["name", "baseline", "by"],
                        "additionalProperties": False,
                        "properties": {"name": {**_STRING, "examples": ['name = "basePro"']},
                                       "baseline": {**_STRING, "examples": ['baseline = "prothrombin"']},
                                       "by": {**_STRING, "examples": ['by = "id"']}},
                    },
                },
            },
        },
        "fit": {
            "type": "object",
            "examples": ['[fit] with method = "REML"'],
            "additionalProperties": False,
            "properties": {
                "method": {**_STRING, "examples": ['method = "REML" (or "ML", "NUTS", "BOTH")']},
                "sampler": {"enum": ["marginal", "joint"], "examples": ['sampler = "marginal"']},
                "centered": {
                    "description": '"auto" or an array of factor or factor:effect names',
                    "examples": ['centered = "auto" or centered = ["patient:(Intercept)"]'],
                    "anyOf": [{"const": "auto"}, {"type": "array", "items": _STRING}],
                },
            },
        },
        "priors": {
            "type": "object",
            "examples": ['[priors] with sigma = 3.0'],
            "additionalProperties": False,
            "properties": {name: {"description": shape} for name, shape in PRIOR_SHAPES.items()},
        },
        "reference": {
            "type": "object",
            "examples": ['[reference] with file = "aids_ri_rs_reml.json"'],
            "additionalProperties": False,
            "properties": {"file": {**_STRING, "examples": ['file = "aids_ri_rs_reml.json"']}},
        },
    },
}
"""JSON Schema of a model file after TOML parsing: every key there is, and its type."""

_VALIDATOR = Draft202012Validator(MODEL_FILE_SCHEMA)

_TOML_TYPES = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean (true/false)",
    "object": "a table", "array": "an array",
}
_ARTICLE = {"integer": "an", "array": "an"}


def check_model_file(raw: dict[str, Any], path: Path) -> None:
    """Check a parsed model file against :data:`MODEL_FILE_SCHEMA`.

    Parameters
    ----------
    raw
        The file's contents, as :func:`tomllib.loads` returns them.
    path
        The file, for the messages.

    Raises
    ------
    SpecError
        The first problem (by jsonschema's relevance), naming the key as a dotted path, the type or values
        expected and the value given; unknown keys are listed with the known ones.
    """
    errors = list(_VALIDATOR.iter_errors(raw))
    if errors:
        raise _spec_error(_specific(max(errors, key=relevance)), path)


def _specific(error: ValidationError) -> ValidationError:
    """Descend into an ``anyOf`` error when exactly one of its forms has the value's type: a table under ``random``
    is judged as a table (its unknown key, its missing formula), not also as a string. Otherwise the ``anyOf`` error
    itself, whose ``description`` says every form the key takes."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return error
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    forms = error.schema[error.validator]
    typed = [subs for index, subs in branches.items() if "type" in forms[index]
             and not any(sub.validator == "type" and not sub.relative_path for sub in subs)]
    return _specific(max(typed[0], key=relevance)) if len(typed) == 1 else error


def toml_type(value: object) -> str:
    """The TOML name of a parsed value's type (``"integer"``, ``"table"``, ...)."""
    names = ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), (dict, "table"),
             (list, "array"), (datetime.datetime, "date-time"), (datetime.date, "date"), (datetime.time, "time"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def _dotted(parts: Sequence[str | int]) -> str:
    """``["data", "derive", 0, "by"]`` -> ``"data.derive[0].by"``; a key that is not a bare TOML key is quoted."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if part.replace("_", "").replace("-", "").isalnum() else f'"{part}"'
            out += ("." if out else "") + key
    return out


def _shown(value: object) -> str:
    text = repr(value)
    return f"{text[:200]}{'...' if len(text) > 200 else ''} ({toml_type(value)})"


def _spec_error(error: ValidationError, path: Path) -> SpecError:
    """A :class:`SpecError` for one schema violation: which key, what it must be, what it is."""
    key = _dotted(list(error.absolute_path))
    schema = error.schema if isinstance(error.schema, dict) else {}
    where = f"[{key}]" if key else "the top level"
    file = path.name
    if error.validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        unknown = sorted(str(k) for k in error.instance if k not in known)
        return SpecError(f"Unknown key(s) {unknown} in {where} of {file}: an unknown key is refused, not ignored.",
                         given=f"{path}: {', '.join(_dotted([*error.absolute_path, k]) for k in unknown)}",
                         fix=f"Known keys in {where}: {', '.join(known)} (see docs/specs.md); correct or remove "
                             f"{'it' if len(unknown) == 1 else 'them'}.")
    if error.validator == "required":
        missing = [k for k in schema.get("required", []) if k not in error.instance]
        if key == "" and "model" in missing:
            return SpecError(f"{file} has no [model] table: a model file states its model in [model].",
                             given=str(path), fix='Add [model] with formula = "y ~ x + (1 | g)" (lme4 style), or '
                                                  'fixed = "y ~ x" and random = "~ 1 | g" (nlme style).')
        if key == "" and "data" in missing:
            return SpecError(f"{file} has no [data] table: a model file names its data set with [data] name.",
                             given=str(path), fix='Add [data] with name = "aids" (a data set name or a CSV path).')
        names = ", ".join(_dotted([*error.absolute_path, k]) for k in missing)
        return SpecError(f"{names} {'is' if len(missing) == 1 else 'are'} missing in {file}.", given=str(path),
                         fix=_example(error) or f"Add {', '.join(missing)} to {where}.")
    what = f"{key} in {file}" if key else file
    if error.validator == "type":
        expected = schema["type"]
        given = toml_type(error.instance)
        return SpecError(f"{what} must be {_TOML_TYPES.get(expected, expected)}, not {_ARTICLE.get(given, 'a')} "
                         f"{given}.", given=_shown(error.instance),
                         fix=_example(error) or f"Give {key} {_TOML_TYPES.get(expected, expected)}.")
    if error.validator in ("enum", "const"):
        allowed = schema.get("enum", [schema.get("const")])
        return SpecError(f"{what} must be one of {', '.join(map(repr, allowed))}.", given=_shown(error.instance),
                         fix=_example(error) or f"Write {key} = {allowed[0]!r}.")
    if error.validator in ("anyOf", "oneOf"):
        return SpecError(f"{what} must be {schema.get('description', 'of another form')}.",
                         given=_shown(error.instance), fix=_example(error) or "See docs/specs.md (Model files).")
    return SpecError(f"{what}: {error.message}.", given=_shown(error.instance), fix="See docs/specs.md (Model files).")


def _example(error: ValidationError) -> str | None:
    """The first of ``examples`` of the schema node in error, or of the closest enclosing one that has one."""
    node: ValidationError | None = error
    while node is not None:
        if isinstance(node.schema, dict) and node.schema.get("examples"):
            return f"Write e.g. {node.schema['examples'][0]}."
        node = node.parent
    return None
