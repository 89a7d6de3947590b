"""Declarative model files (TOML, one per model in ``models/``): a spec, its data set and fit options.

A file is data, not code: its formulas go through the same safe parser as any other formula. Its keys and their
types are checked against a schema (:mod:`hierlmm.spec.model_file_schema`) before any value is used: unknown keys
are errors (so a typo does not silently change the model), and so are values of the wrong type, each named by its
dotted key (``model.name``).

Format::

    [model]
    name = "aids_ri_rs"
    title = "AIDS: random intercepts and slopes (chapter 3.2)"
    formula = "CD4 ~ obstime + obstime:drug + (obstime | patient)"   # lme4 style, or:
    # fixed = "CD4 ~ obstime + obstime:drug"                          # nlme style
    # random = "~ obstime | patient"                                   # or a table:
    # [model.random.patient]
    # structure = "pdDiag"
    # formula = "~ obstime"
    # correlation = "corExp(form = ~ obstime | patient)"   # optional serially correlated errors (nlme syntax)
    # weights = "varIdent(form = ~ 1 | drug)"              # optional variance function (nlme syntax)

    [data]
    name = "aids"                     # a hierlmm.datasets name, or a CSV path relative to the file
    [[data.derive]]                   # optional derived columns
    name = "basePro"
    baseline = "prothrombin"          # each group's first value of this column
    by = "id"

    [fit]
    method = "REML"                   # or "ML", "NUTS", "BOTH" (the command line's default)
    sampler = "marginal"              # NUTS: "marginal" or "joint"
    centered = "auto"                 # joint sampler: "auto", or a list like ["patient:(Intercept)"]

    [priors]                          # optional overrides of the default priors (hierlmm.engines.bayes.priors)
    sigma = 3.0
    lkj_eta = 2.0
    beta = { obstime = [0.0, 1.0] }   # (mean, sd) of a fixed effect
    sd = { "patient:obstime" = 0.5 }  # scale of a random-effect SD

    [reference]                       # optional: the R fit this model reproduces
    file = "aids_ri_rs_reml.json"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hierlmm import datasets
from hierlmm.errors import SpecError
from hierlmm.spec.model_file_schema import check_model_file
from hierlmm.spec.model_spec import ModelSpec, PdMat, pdBlocked
from hierlmm.spec.prior_overrides import check_prior_overrides
from hierlmm.structures.serial_correlation import parse_correlation
from hierlmm.structures.variance_functions import parse_weights

_TOML_LINE = re.compile(r"at line (\d+)")  # tomllib's position, "(at line 3, column 8)" (3.13 has no lineno)


@dataclass(frozen=True)
class DerivedColumn:
    """A column computed from the data before the design is built (``kind="baseline"``)."""

    name: str
    kind: str
    column: str
    by: str


@dataclass(frozen=True)
class ModelFile:
    """A model file: the spec plus where its data come from."""

    name: str
    title: str
    spec: ModelSpec
    data: str
    derive: tuple[DerivedColumn, ...]
    reference: str | None
    path: Path
    priors: dict | None = None
    run: str = "REML"
    sampler: str = "marginal"
    centered: tuple[str, ...] | str = ()
    correlation: str | None = None
    weights: str | None = None

    def load_data(self) -> pd.DataFrame:
        """The data set (a :mod:`hierlmm.datasets` name or a CSV path), with derived columns added."""
        candidate = (self.path.parent / self.data) if self.data.endswith((".csv", ".csv.gz")) else None
        data = datasets.read_csv(candidate) if candidate is not None else datasets.load(self.data)
        for d in self.derive:
            data = datasets.add_baseline(data, d.column, d.by, name=d.name)
        return data


def _random(value: Any, path: Path) -> str | dict[str, PdMat] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        out = {}
        for factor, entry in value.items():
            if isinstance(entry, str):
                out[factor] = PdMat("pdSymm", entry)
            elif isinstance(entry, dict) and set(entry) <= {"structure", "formula"} and "formula" in entry:
                out[factor] = PdMat(entry.get("structure", "pdSymm"), entry["formula"])
            elif isinstance(entry, dict) and entry.get("structure") == "pdBlocked" and set(entry) == {
                    "structure", "blocks"} and isinstance(entry["blocks"], list):
                out[factor] = pdBlocked([_random({factor: b}, path)[factor] for b in entry["blocks"]])  # type: ignore[index]
            else:
                raise SpecError(
                    f"[model.random.{factor}] needs 'formula' (and optionally 'structure'), or structure = "
                    "\"pdBlocked\" with 'blocks'.",
                    given=str(entry),
                    fix='Write e.g. structure = "pdDiag", formula = "~ obstime"; or structure = "pdBlocked", '
                        'blocks = [{ formula = "~ 1" }, { structure = "pdDiag", formula = "~ 0 + obstime" }].',
                )
        return out
    raise SpecError("[model] random must be a string or a table.", given=repr(value), fix="See docs/specs.md.")


def load_spec(path: str | Path) -> ModelFile:
    """Read a TOML model file.

    Parameters
    ----------
    path
        The ``.toml`` file.

    Returns
    -------
    ModelFile
        The spec, its data set's name or CSV path, derived columns, fit options and priors.

    Raises
    ------
    SpecError
        A path that is not a string or a ``Path``, a missing file or a directory, a file that is not UTF-8, invalid
        TOML (with tomllib's line and column), a key the schema does not know or a value of the wrong type (the key
        as a dotted path, the type expected and the value given: :mod:`hierlmm.spec.model_file_schema`), both or
        neither of ``formula`` and ``fixed``, ``random`` beside an lme4-style ``formula``, an unknown ``method``,
        or priors of the wrong shape.
    FormulaError
        A formula that does not parse.
    """
    if not isinstance(path, (str, Path)):
        raise SpecError("The model file must be given as a path (a string or a pathlib.Path).", given=repr(path),
                        fix='Pass the path of a .toml file, e.g. load_spec("models/aids_ri_rs.toml").')
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            "Model file not found" + (f": {path} is a directory." if path.is_dir() else "."), given=str(path),
            fix="Give the path of a .toml file, e.g. models/aids_ri_rs.toml.",
        )
    raw = _parse_toml(path)
    check_model_file(raw, path)
    model, data, fit = raw.get("model", {}), raw.get("data", {}), raw.get("fit", {})
    run = str(fit.get("method", "REML")).upper()
    if run not in ("REML", "ML", "NUTS", "BOTH"):
        raise SpecError("[fit] method must be REML, ML, NUTS or BOTH.", given=run, fix='Write method = "REML".')
    method = run if run in ("REML", "ML") else "REML"
    sampler = fit.get("sampler", "marginal")
    if sampler not in ("marginal", "joint"):
        raise SpecError("[fit] sampler must be marginal or joint.", given=sampler, fix='Write sampler = "marginal".')
    centered = fit.get("centered", [])
    if not (centered == "auto" or (isinstance(centered, list) and all(isinstance(c, str) for c in centered))):
        raise SpecError("[fit] centered must be \"auto\" or a list of factor or factor:effect names.",
                        given=centered, fix='Write centered = "auto" or centered = ["patient:(Intercept)"].')
    if ("formula" in model) == ("fixed" in model):
        raise SpecError(
            "A model file needs exactly one of [model] formula (lme4 style) or [model] fixed (nlme style).",
            given=str(path),
            fix='Add formula = "y ~ x + (1 | g)", or fixed = "y ~ x" with random = "~ 1 | g".',
        )
    if "formula" in model and "random" in model:
        raise SpecError(
            "[model] random goes with fixed (nlme style); an lme4-style formula holds its random effects itself.",
            given=f"{path}: formula = {model['formula']!r}, random = {model['random']!r}",
            fix='Put the random effects into the formula, e.g. formula = "y ~ x + (1 | g)", or write fixed = '
                '"y ~ x" with random = "~ 1 | g".',
        )
    if "formula" in model:
        spec = ModelSpec.from_formula(model["formula"], method=method)
    else:
        spec = ModelSpec.from_nlme(model["fixed"], _random(model.get("random"), path), method=method)
    if "name" not in data:
        raise SpecError("[data] name is missing.", given=str(path), fix='Add [data] name = "aids" (or a CSV path).')
    derive = []
    for entry in data.get("derive", []):
        if set(entry) != {"name", "baseline", "by"}:
            raise SpecError(
                "Each [[data.derive]] needs exactly name, baseline and by.", given=str(entry),
                fix='Write name = "basePro", baseline = "prothrombin", by = "id".',
            )
        derive.append(DerivedColumn(entry["name"], "baseline", entry["baseline"], entry["by"]))
    return ModelFile(
        model.get("name", path.stem), model.get("title", ""), spec, data["name"], tuple(derive),
        raw.get("reference", {}).get("file"), path,
        check_prior_overrides(raw.get("priors"), f"[priors] of {path.name}"), run, sampler,
        centered if isinstance(centered, str) else tuple(centered), _correlation(model.get("correlation")),
        _weights(model.get("weights")),
    )


def _parse_toml(path: Path) -> dict[str, Any]:
    """The file's TOML, or a SpecError giving tomllib's line and column, or the line that is not UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{path.name} is not UTF-8 text (TOML files are): line {line} holds the byte "
                        f"{raw[exc.start : exc.start + 1]!r}.", given=str(path),
                        fix="Save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8).") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problem = str(exc)
        lines = text.splitlines()
        line = getattr(exc, "lineno", None) or next(
            (int(n) for n in _TOML_LINE.findall(problem)), None)
        shown = f", line {line}: {lines[line - 1].strip()[:80]!r}" if line and line <= len(lines) else ""
        raise SpecError(f"Invalid TOML in {path.name}: {problem}.", given=f"{path}{shown}",
                        fix="Correct the syntax at that line and column (TOML: key = value, strings in quotes, "
                            "[table] headers; see docs/specs.md).") from None


def _nlme_string(value: Any, key: str, parse: Any, example: str) -> str | None:
    """A ``[model]`` entry in nlme's syntax (``correlation``, ``weights``), parsed here so that a typo fails when the
    file is read."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(f"[model] {key} must be a string in nlme's syntax.", given=value,
                        fix=f'Write {key} = "{example}".')
    parse(value)
    return value


def _correlation(value: Any) -> str | None:
    """``[model] correlation``: a correlation structure
    (:func:`hierlmm.structures.serial_correlation.parse_correlation`)."""
    return _nlme_string(value, "correlation", parse_correlation, "corExp(form = ~ obstime | patient)")


def _weights(value: Any) -> str | None:
    """``[model] weights``: a variance function (:func:`hierlmm.structures.variance_functions.parse_weights`)."""
    return _nlme_string(value, "weights", parse_weights, "varIdent(form = ~ 1 | drug)")
