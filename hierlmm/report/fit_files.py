"""Saved fits: :func:`save` writes any fit (REML/ML or Bayesian, every kind) to a netCDF file or a zarr store, and
:func:`load` reads it back as an instance of the same class whose every method gives the same numbers. No pickle.

Notation
--------
The file is an xarray DataTree. A Bayesian fit's own DataTree (``posterior``, ``sample_stats``, ``log_likelihood``,
``observed_data``, ...) sits at the root, as ArviZ writes it, so ArviZ and ``xarray.open_datatree`` read the file as
they read any posterior. hierlmm's part is the group ``/hierlmm``:

- its attributes: ``hierlmm_format = "hierlmm.fit"``, ``hierlmm_format_version`` (1), ``hierlmm_version`` (the
  package that wrote it) and ``hierlmm_class``, the fit's class (``MLFit``, ``CrossedFit``, ``CorrelatedFit``,
  ``MarginalFit``, ``BayesFit``, ``CorrelatedBayesFit``, ``MarginalBayesFit``);
- below it, the fit's dataclass fields, one node per value, written generically:

  - a NumPy array (or NumPy scalar) is a variable named after the field (dimensions ``<field>_0``, ``<field>_1``,
    ...; attribute ``hierlmm_dtype``, the original dtype); a data column of Python objects is a string variable:
    the strings, or each item's JSON text (``hierlmm_items = "json"``);
  - ``None``, numbers, strings and tuples, lists and dicts of them are a JSON attribute named after the field;
  - a nested dataclass is a group named after the field with ``hierlmm_node = "dataclass"`` and ``hierlmm_class``;
  - a tuple, list or dict holding arrays or dataclasses is a group (``hierlmm_node = "tuple"``, ``"list"`` or
    ``"dict"``, ``hierlmm_length``, a dict's keys in ``hierlmm_keys``) whose items are named ``item0``, ``item1``,
    ...

Three kinds of value are written as what defines them, and rebuilt on loading:

- the :class:`~hierlmm.spec.model_spec.ModelSpec` (``hierlmm_node = "spec"``), as text: ``fixed`` (nlme's fixed
  formula, ``"y ~ t + x"``), ``random`` (JSON: per random term its grouping columns, structure, effects as a
  one-sided formula's right-hand side and, for pdBlocked, each part's structure and effects) and ``method``, parsed
  again by hierlmm's own formula parser (``formula``, the lme4 spelling, is there for the reader); the
  random-effects terms of the design's blocks come from it. :func:`save` refuses a spec whose text does not parse
  back to the same spec;
- the design (``hierlmm_node = "dataclass"``, class ``Design``): its arrays (``y``, ``X``, ``rows``, every block's
  ``Z``, ``group_index`` and ``levels``), the fitted stateful transforms (``state``: ``ns``/``bs`` knots, ``poly``
  coefficients, ``scale``), the factor levels and the covariates: what :func:`hierlmm.new_model_matrices` and the
  functions of fits read;
- a Bayesian fit's model (``hierlmm_node = "recipe"``): what its PyMC model is compiled from (the design, the
  priors, the sampler and the joint sampler's parametrisation; with correlated errors also the structure, the
  correlation priors and the subject batches), compiled again on loading.

Only the classes of :data:`CLASSES` are written or read: a file naming any other class is refused, and nothing in
the file is ever imported or executed.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from hierlmm.design.design import Design, MissingReport, RandomEffectsBlock
from hierlmm.design.subject_batches import SubjectBatches
from hierlmm.design.sufficient_stats import BlockLayout, SubjectStats
from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.correlated_fit import CorrelatedBayesFit
from hierlmm.engines.bayes.correlated_model import (
    CorrelatedBayesModel,
    CorrelationPriors,
    SizeBatch,
    compile_correlated_model,
)
from hierlmm.engines.bayes.hierarchical_model import BayesModel, rebuild_bayes_model
from hierlmm.engines.bayes.marginal_model import MarginalBayesFit, MarginalBayesModel, build_marginal_bayes_model
from hierlmm.engines.bayes.parametrisation import Parametrisation
from hierlmm.engines.bayes.priors import Priors
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.engines.reml.crossed_fit import CrossedFit
from hierlmm.engines.reml.marginal_model import MarginalFit
from hierlmm.engines.reml.ml_fit import MLFit
from hierlmm.engines.reml.profiled_likelihood import OptimizerReport, ProfiledState
from hierlmm.errors import FitFileError, HierlmmError, NotSupportedError, SpecError
from hierlmm.formula.evaluation import Scaling
from hierlmm.formula.terms import expand_terms, parse_formula, parse_rhs
from hierlmm.formula.transforms import BSpline, NaturalSpline, OrthogonalPolynomial
from hierlmm.spec.model_spec import STRUCTURES, ModelSpec, RandomTerm
from hierlmm.structures.random_effects import BlockParam, ThetaLayout
from hierlmm.structures.serial_correlation import CorrelationStructure
from hierlmm.structures.variance_functions import BoundVarianceFunction, BoundVarIdent, VarianceFunction

FORMAT = "hierlmm.fit"
"""The value of the ``hierlmm_format`` attribute of a saved fit's ``/hierlmm`` group."""
FORMAT_VERSION = 1
"""The version of the layout this module writes (and the newest it reads)."""
GROUP = "hierlmm"
FORMATS = ("netcdf", "zarr")

FIT_CLASSES: tuple[type, ...] = (MLFit, CrossedFit, CorrelatedFit, MarginalFit, BayesFit, CorrelatedBayesFit,
                                 MarginalBayesFit)
"""The fits :func:`save` writes and :func:`load` reads."""

CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    *FIT_CLASSES, Design, RandomEffectsBlock, MissingReport, ThetaLayout, BlockParam, SubjectStats, BlockLayout,
    ProfiledState, OptimizerReport, SubjectBatches, CorrelationStructure, VarianceFunction, BoundVarianceFunction,
    BoundVarIdent, NaturalSpline, BSpline, OrthogonalPolynomial, Scaling, Priors, CorrelationPriors, Parametrisation,
    SizeBatch, BayesModel, CorrelatedBayesModel, MarginalBayesModel,
)}
"""Every class a saved fit may hold, by the name written in ``hierlmm_class``: the only classes :func:`load` makes."""

RECIPES: dict[type, tuple[tuple[str, ...], Callable[..., Any]]] = {
    BayesModel: (("design", "priors", "sampler", "parametrisation"), rebuild_bayes_model),
    CorrelatedBayesModel: (("design", "structure", "priors", "correlation_priors", "log_sd_names", "batches",
                            "n_max", "variance"), compile_correlated_model),
    MarginalBayesModel: (("design", "priors"), build_marginal_bayes_model),
}
"""The Bayesian models, written as the fields they are compiled from and rebuilt by the function beside them."""

_SKIPPED = {RandomEffectsBlock: ("effects",), BayesFit: ("tree",), CorrelatedBayesFit: ("tree",),
            MarginalBayesFit: ("tree",)}
"""Fields not written: a block's terms (from the spec) and a Bayesian fit's DataTree (the file's root)."""


# ---- writing --------------------------------------------------------------------------------------------------------
def save(fit: Any, path: str | Path, *, format: str | None = None) -> Path:
    """Save a fit to a netCDF file (default) or a zarr store.

    Parameters
    ----------
    fit
        Any fit of :func:`hierlmm.fit`, :func:`hierlmm.fit_bayes` or their engines (:data:`FIT_CLASSES`).
    path
        The file (``fit.nc``) or, for zarr, the store's folder (``fit.zarr``); missing parent folders are made, an
        existing file or store is replaced.
    format
        ``"netcdf"`` (netCDF4 through h5netcdf) or ``"zarr"``; by default zarr for a path ending in ``.zarr``,
        netCDF otherwise.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    SpecError
        An unknown ``format``.
    NotSupportedError
        Not a fit hierlmm can save, or a fit holding something it cannot write (see the module notation).
    """
    path = Path(path)
    format = format or ("zarr" if path.suffix == ".zarr" else "netcdf")
    if format not in FORMATS:
        raise SpecError("Unknown format for a saved fit.", given=format, fix="Use format='netcdf' or 'zarr'.")
    if type(fit) not in FIT_CLASSES:
        raise NotSupportedError("Only hierlmm's fits can be saved.", given=type(fit).__name__,
                                fix="Pass a fit of hierlmm.fit or hierlmm.fit_bayes.")
    groups: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    _write_node(fit, "/" + GROUP, groups)
    attrs = groups["/" + GROUP][0]
    attrs.update({"hierlmm_format": FORMAT, "hierlmm_format_version": FORMAT_VERSION,
                  "hierlmm_version": _package_version()})
    ours = xr.DataTree.from_dict({p: xr.Dataset(variables, attrs=a) for p, (a, variables) in groups.items()})
    tree = fit.tree.copy() if isinstance(fit, (BayesFit, MarginalBayesFit)) else xr.DataTree()
    if GROUP in tree.children:
        raise NotSupportedError(f"The fit's DataTree already has a group named {GROUP!r}, where hierlmm writes its "
                                "part of the file.", given=list(tree.children), fix="Rename that group.")
    tree[GROUP] = ours[GROUP]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        if format == "zarr":
            tree.to_zarr(path, mode="w")
        else:
            tree.to_netcdf(path, engine="h5netcdf", mode="w")
    return path


def _package_version() -> str:
    try:
        return version("hierlmm")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was not installed
        return "unknown"


def _write_node(value: Any, path: str, groups: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Write a dataclass, a spec, a Bayesian model's recipe or a container holding arrays as the group ``path``."""
    attrs: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    groups[path] = (attrs, variables)
    kind = type(value)
    if isinstance(value, ModelSpec):
        attrs.update(_spec_attrs(value))
        return
    if kind in RECIPES:
        names, _ = RECIPES[kind]
        attrs.update({"hierlmm_node": "recipe", "hierlmm_class": kind.__name__})
        items: list[tuple[str, Any]] = [(name, getattr(value, name)) for name in names]
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        if CLASSES.get(kind.__name__) is not kind:
            raise NotSupportedError(f"A fit holding a {kind.__name__} cannot be saved: hierlmm writes only the "
                                    "classes it knows.", given=f"{kind.__module__}.{kind.__name__} at {path}",
                                    fix="Save a fit made by hierlmm.fit or hierlmm.fit_bayes.")
        attrs.update({"hierlmm_node": "dataclass", "hierlmm_class": kind.__name__})
        skipped = _SKIPPED.get(kind, ())
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in skipped]
    elif isinstance(value, (tuple, list)):
        attrs.update({"hierlmm_node": "tuple" if isinstance(value, tuple) else "list", "hierlmm_length": len(value)})
        items = [(f"item{k}", v) for k, v in enumerate(value)]
    elif isinstance(value, Mapping):
        keys = list(value)
        if not _plain(keys):
            raise NotSupportedError("A dict with keys other than strings and numbers cannot be saved.",
                                    given=f"{keys[:5]} at {path}", fix="Report this.")
        attrs.update({"hierlmm_node": "dict", "hierlmm_length": len(keys), "hierlmm_keys": json.dumps(_to_json(keys))})
        items = [(f"item{k}", value[key]) for k, key in enumerate(keys)]
    else:
        raise NotSupportedError(f"A {kind.__name__} cannot be saved.", given=path, fix="Report this.")
    if isinstance(value, Design):
        for k, (block, term) in enumerate(zip(value.blocks, value.spec.random, strict=True)):
            if block.effects != term.effects:
                raise NotSupportedError("The design's random-effects terms are not its spec's: it cannot be rebuilt "
                                        "from the spec's text.", given=f"block {k} ({block.factor})",
                                        fix="Save a fit whose design was built by hierlmm.build_design.")
    for name, item in items:
        if isinstance(item, (np.ndarray, np.generic)):
            variables[name] = _variable(name, item, f"{path}/{name}")
        elif _plain(item):
            attrs[name] = json.dumps(_to_json(item))
        else:
            _write_node(item, f"{path}/{name}", groups)


def _spec_attrs(spec: ModelSpec) -> dict[str, Any]:
    """The spec as text: the fixed part (nlme's ``fixed``) and every random term's grouping, structure and effects
    (each pdBlocked part's too), checked to parse back to the same spec; ``formula`` (lme4 syntax) for the reader."""
    random = [[list(term.grouping), term.structure, term.effects.deparse(),
               [[structure, effects.deparse()] for structure, effects in term.parts]] for term in spec.random]
    attrs = {"hierlmm_node": "spec", "formula": spec.formula, "method": spec.method, "fixed": spec.fixed_formula,
             "random": json.dumps(random)}
    try:
        again = _spec_from_attrs(attrs)
    except HierlmmError:
        again = None
    if again != spec:
        raise NotSupportedError("This model's text does not parse back to the same model, so a saved fit could not "
                                "be rebuilt from it.", given=spec.formula,
                                fix="Report this, with the formula (lme4 syntax) or the nlme arguments used.")
    return attrs


def _spec_from_attrs(attrs: Mapping[str, Any]) -> ModelSpec:
    """A spec from its text (:func:`_spec_attrs`), by hierlmm's own formula parser."""
    fixed = str(attrs["fixed"])
    parsed = parse_formula(fixed)
    if parsed.random or parsed.response is None:
        raise FitFileError("The saved model's fixed part is not a fixed-effects formula.", given=fixed,
                           fix="Save the fit again with this hierlmm.")
    terms = []
    random = json.loads(attrs["random"])
    structures = [s for _, structure, _, parts in random for s in (structure, *(st for st, _ in parts))]
    if any(s not in STRUCTURES for s in structures) or attrs["method"] not in ("REML", "ML"):
        raise FitFileError("The saved model names an unknown structure or method.",
                           given=f"{structures}, {attrs['method']}", fix="Save the fit again with this hierlmm.")
    for grouping, structure, effects, parts in random:
        terms.append(RandomTerm(expand_terms(parse_rhs(effects), effects), tuple(grouping), structure,
                                tuple((st, expand_terms(parse_rhs(text), text)) for st, text in parts)))
    return ModelSpec(parsed.response, parsed.fixed, tuple(terms), str(attrs["method"]))


def _variable(name: str, value: np.ndarray | np.generic, where: str) -> xr.Variable:
    array = np.asarray(value)
    attrs = {"hierlmm_dtype": array.dtype.str}
    if isinstance(value, np.generic):
        attrs["hierlmm_scalar"] = 1
    if array.dtype == object:  # a data column of Python objects: strings, or JSON text of each (numbers, None)
        items = array.ravel().tolist()
        if not all(isinstance(v, str) for v in items):
            if not all(_plain(v) and not isinstance(v, (tuple, list, Mapping)) for v in items):
                raise NotSupportedError("An array of Python objects other than strings, numbers and None cannot be "
                                        "saved.", given=where, fix="Use numeric or string columns.")
            attrs["hierlmm_items"] = "json"
            items = [json.dumps(_to_json(v)) for v in items]
        array = np.array(items, dtype=str).reshape(array.shape) if items else np.zeros(array.shape, dtype="<U1")
    elif array.dtype.kind not in "biufUMm":
        raise NotSupportedError(f"An array of dtype {array.dtype} cannot be saved.", given=where,
                                fix="Use numbers or strings.")
    return xr.Variable(tuple(f"{name}_{k}" for k in range(array.ndim)), array, attrs=attrs)


def _plain(value: Any) -> bool:
    """``None``, a number, a string, or a tuple, list or dict of them (a JSON attribute)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    if isinstance(value, Mapping) and not dataclasses.is_dataclass(value):
        return all(_plain(k) and not isinstance(k, (tuple, list)) for k in value) and all(
            _plain(v) for v in value.values())
    return False


def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"tuple": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return {"list": [_to_json(v) for v in value]}
    if isinstance(value, Mapping):
        return {"dict": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        (kind, items), = value.items()
        if kind == "tuple":
            return tuple(_from_json(v) for v in items)
        if kind == "list":
            return [_from_json(v) for v in items]
        return {_from_json(k): _from_json(v) for k, v in items}
    return value


# ---- reading --------------------------------------------------------------------------------------------------------
def load(path: str | Path) -> Any:
    """Read a fit saved by :func:`save` (or the ``--out`` folder of ``hierlmm fit --method nuts``).

    Parameters
    ----------
    path
        A netCDF file, a zarr store, or a folder holding ``posterior.nc`` or ``posterior.zarr``.

    Returns
    -------
    MLFit, CrossedFit, CorrelatedFit, MarginalFit, BayesFit, CorrelatedBayesFit or MarginalBayesFit
        The fit, of the class it was saved from; a Bayesian fit's model is compiled again.

    Raises
    ------
    FitFileError
        No file at ``path``, a file that is not netCDF or zarr, or not a hierlmm fit, a newer layout, or a class
        that is not one of :data:`CLASSES`.
    """
    path = Path(path)
    if not path.exists():
        raise FitFileError("There is no saved fit at this path.", given=str(path),
                           fix="Check the path: hierlmm.save(fit, path) writes one.")
    if path.is_dir() and not (path / "zarr.json").exists() and not (path / ".zgroup").exists():
        inside = [path / name for name in ("posterior.nc", "posterior.zarr") if (path / name).exists()]
        if not inside:
            raise FitFileError("This folder holds no saved fit (no posterior.nc or posterior.zarr, and it is not a "
                               "zarr store).", given=str(path), fix="Pass the file written by hierlmm.save.")
        path = inside[0]
    engine = "zarr" if path.is_dir() else "h5netcdf"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opened = xr.open_datatree(path, engine=engine)
            tree = opened.load()
            opened.close()
    except Exception as error:
        raise FitFileError("This is not a netCDF file or a zarr store that xarray can read.", given=str(path),
                           fix="Pass a file written by hierlmm.save.") from error
    node = tree.children.get(GROUP)
    if node is None or node.attrs.get("hierlmm_format") != FORMAT:
        raise FitFileError("This file is not a saved hierlmm fit (it has no /hierlmm group).", given=str(path),
                           fix="Pass a file written by hierlmm.save; a posterior DataTree alone reads with "
                               "xarray.open_datatree.")
    version = int(node.attrs.get("hierlmm_format_version", 0))
    if version > FORMAT_VERSION:
        raise FitFileError(f"This fit was saved in layout {version}, newer than this hierlmm reads "
                           f"({FORMAT_VERSION}).", given=node.attrs.get("hierlmm_version"),
                           fix="Upgrade hierlmm.")
    name = node.attrs.get("hierlmm_class")
    if name not in {cls.__name__ for cls in FIT_CLASSES}:
        raise FitFileError("This file holds a kind of fit that this hierlmm does not know.", given=name,
                           fix=f"Known: {', '.join(cls.__name__ for cls in FIT_CLASSES)}.")
    fit_tree = None
    if name in ("BayesFit", "CorrelatedBayesFit", "MarginalBayesFit"):
        fit_tree = tree.copy()
        del fit_tree[GROUP]
    return _read_node(node, str(path), fit_tree)


def _read_node(node: xr.DataTree, where: str, fit_tree: Any = None) -> Any:
    kind = node.attrs.get("hierlmm_node")
    if kind == "spec":
        return _spec_from_attrs(node.attrs)
    if kind in ("tuple", "list", "dict"):
        items = [_read_field(node, f"item{k}", where) for k in range(int(node.attrs["hierlmm_length"]))]
        if kind == "dict":
            return dict(zip(_from_json(json.loads(node.attrs["hierlmm_keys"])), items, strict=True))
        return tuple(items) if kind == "tuple" else items
    name = node.attrs.get("hierlmm_class")
    cls = CLASSES.get(name)
    if kind not in ("dataclass", "recipe") or cls is None or (kind == "recipe") != (cls in RECIPES):
        raise FitFileError("The saved fit holds a class that this hierlmm does not know.",
                           given=f"{name!r} at {node.path} of {where}", fix="Save the fit again with this hierlmm.")
    if kind == "recipe":
        names, rebuild = RECIPES[cls]
        return rebuild(*[_read_field(node, n, where) for n in names])
    values = {}
    skipped = _SKIPPED.get(cls, ())
    for field in dataclasses.fields(cls):
        if field.name in skipped:
            continue
        if _has_field(node, field.name):
            values[field.name] = _read_field(node, field.name, where)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise FitFileError(f"The saved {name} lacks its field {field.name!r}.", given=f"{node.path} of {where}",
                               fix="Save the fit again with this hierlmm.")
    if cls is RandomEffectsBlock:
        values["effects"] = None  # set from the spec by the design (below)
    if cls is Design:
        values["blocks"] = tuple(dataclasses.replace(block, effects=term.effects)
                                 for block, term in zip(values["blocks"], values["spec"].random, strict=True))
    if "tree" in skipped:
        values["tree"] = fit_tree
    return cls(**values)


def _has_field(node: xr.DataTree, name: str) -> bool:
    return name in node.attrs or name in node.data_vars or name in node.children


def _read_field(node: xr.DataTree, name: str, where: str) -> Any:
    if name in node.attrs:
        return _from_json(json.loads(node.attrs[name]))
    if name in node.data_vars:
        return _array(node.data_vars[name])
    if name in node.children:
        return _read_node(node.children[name], where)
    raise FitFileError(f"The saved fit lacks {name!r}.", given=f"{node.path} of {where}",
                       fix="Save the fit again with this hierlmm.")


def _array(variable: xr.DataArray) -> np.ndarray | np.generic:
    values = np.asarray(variable.values)
    dtype = np.dtype(variable.attrs.get("hierlmm_dtype", values.dtype.str))
    if dtype.kind == "O":  # Python objects (a data column): strings, or the JSON text of each
        read = json.loads if variable.attrs.get("hierlmm_items") == "json" else str
        values = np.array([read(v) for v in values.ravel().tolist()] + [None], dtype=object)[:-1].reshape(values.shape)
    elif values.dtype != dtype:
        values = values.astype(dtype)
    return values[()] if variable.attrs.get("hierlmm_scalar") else values
