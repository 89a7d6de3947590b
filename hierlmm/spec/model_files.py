"""Declarative model files (TOML, one per model in ``models/``): a spec, its data set and fit options.

A file is data, not code: its formulas go through the same safe parser as any other formula, and unknown keys are
errors (so a typo does not silently change the model).

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
    sigma = 3.0 lkj_eta = 2.0 beta = { obstime = [0.0, 1.0] }   # (mean, sd) of a fixed effect sd = { "patient:obstime"
    = 0.5 }  # scale of a random-effect SD

    [reference]                       # optional: the R fit this model reproduces
    file = "aids_ri_rs_reml.json"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hierlmm import datasets
from hierlmm.errors import SpecError
from hierlmm.spec.model_spec import ModelSpec, PdMat, pdBlocked
from hierlmm.structures.serial_correlation import parse_correlation
from hierlmm.structures.variance_functions import parse_weights

_ALLOWED = {
    "model": {"name", "title", "formula", "fixed", "random", "correlation", "weights"},
    "data": {"name", "derive"},
    "fit": {"method", "sampler", "centered"},
    "reference": {"file"},
    "priors": {"beta", "sigma", "sd", "lkj_eta"},
}


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


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, path: Path) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise SpecError(
            f"Unknown key(s) {sorted(unknown)} in [{where}] of {path.name}.",
            given=str(path),
            fix=f"Allowed keys in [{where}]: {sorted(allowed)}.",
        )


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

    Raises
    ------
    SpecError
        Missing file, invalid TOML, unknown keys, or both/neither of ``formula`` and ``fixed``.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            "Model file not found.", given=str(path), fix="Give the path of a .toml file, e.g. models/aids_ri_rs.toml."
        )
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"Invalid TOML: {exc}.", given=str(path), fix="Check the file's syntax.") from None
    _check_keys(raw, set(_ALLOWED), "top level", path)
    for section, allowed in _ALLOWED.items():
        _check_keys(raw.get(section, {}), allowed, section, path)
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
        raw.get("reference", {}).get("file"), path, raw.get("priors") or None, run, sampler,
        centered if isinstance(centered, str) else tuple(centered), _correlation(model.get("correlation")),
        _weights(model.get("weights")),
    )


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
