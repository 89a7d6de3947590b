"""Overrides of the Bayesian engine's default priors, checked for shape and value before any data are read.

Priors are given as a table: ``priors={...}`` in Python (:func:`hierlmm.fit_bayes`) or the ``[priors]`` section of a
model file (:mod:`hierlmm.spec.model_files`). :func:`check_prior_overrides` is the one check of what can be checked
without the data: every entry has the shape its prior needs, every number is a finite number (not a bool, not a
string), and positive where it is a scale or a shape. Which names apply to a given model (its fixed effects, its
grouping factors, whether it has an LKJ block or a correlation structure) needs the design:
:func:`hierlmm.engines.bayes.priors.check_priors` calls this function first, then checks the names.

Shapes
------
``beta``
    a table ``{fixed effect: [mean, sd]}``, ``sd > 0``;
``sigma``
    a positive number, the scale of sigma's half-Student-t(3) prior;
``sd``
    a table ``{factor: scale or [one scale per effect], "factor:effect": scale}``, every scale positive;
``lkj_eta``
    a positive number (every full block), or a table ``{factor: number}``;
``range``
    ``[median, log_sd]`` of the correlation range's log-normal prior, both positive;
``nugget``, ``rho``
    ``[a, b]`` of a Beta prior, both positive.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hierlmm.errors import SpecError

PRIOR_SHAPES: dict[str, str] = {
    "beta": "a table {fixed effect: [mean, sd]}, e.g. beta = { obstime = [0.0, 1.0] }",
    "sigma": "a positive number (the scale of sigma's half-Student-t prior), e.g. sigma = 3.0",
    "sd": 'a table {factor: scale or [one scale per effect], "factor:effect": scale}, '
          'e.g. sd = { "patient:obstime" = 0.5 }',
    "lkj_eta": "a positive number, or a table {factor: number}, e.g. lkj_eta = 2.0",
    "range": "[median, log_sd] of a log-normal prior, both positive, e.g. range = [4.0, 1.5]",
    "nugget": "[a, b] of a Beta prior, both positive, e.g. nugget = [2.0, 2.0]",
    "rho": "[a, b] of a Beta prior, both positive, e.g. rho = [2.0, 2.0]",
}
"""Every prior name a model can take, and the shape of its value (which apply depends on the model)."""


def check_prior_overrides(overrides: Mapping[str, Any] | None, where: str = "priors") -> dict[str, Any] | None:
    """Check a table of prior overrides for shape and value; return it normalised (floats and lists).

    Parameters
    ----------
    overrides
        The table (see the module notes for the shapes), or None.
    where
        Where it came from, for the messages (``"priors"``, ``"[priors] of aids.toml"``).

    Returns
    -------
    dict or None
        The table in TOML's types: ``beta``: {name: [mean, sd]}; ``sigma``: float; ``sd``: {key: float or list of
        floats}; ``lkj_eta``: float or {factor: float}; ``range``, ``nugget``, ``rho``: [float, float]. None for no
        overrides (None or empty).

    Raises
    ------
    SpecError
        Not a table, an unknown name, a value of the wrong shape, a non-finite number, or a scale that is not
        positive; the message names the prior, the value and the shape expected.
    """
    if overrides is None:
        return None
    if not isinstance(overrides, Mapping):
        raise SpecError(f"{where} must be a table of prior names and values.", given=_shown(overrides),
                        fix="Pass e.g. priors={'sigma': 3.0, 'beta': {'obstime': (0.0, 1.0)}}.")
    if not overrides:
        return None
    unknown = sorted(str(k) for k in overrides if k not in PRIOR_SHAPES)
    if unknown:
        raise SpecError(f"Unknown prior(s) {unknown} in {where}.", given=dict(overrides),
                        fix=f"Known priors: {', '.join(PRIOR_SHAPES)} (which apply depends on the model).")
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name == "beta":
            out[name] = {key: _pair(v, f"beta[{key}]", where, name, positive_first=False)
                         for key, v in _table(value, name, where).items()}
        elif name == "sd":
            out[name] = {key: _scales(v, f"sd[{key}]", where) for key, v in _table(value, name, where).items()}
        elif name == "lkj_eta":
            if isinstance(value, Mapping):
                out[name] = {key: _number(v, f"lkj_eta[{key}]", where, name)
                             for key, v in _table(value, name, where).items()}
            else:
                out[name] = _number(value, name, where, name)
        elif name == "sigma":
            out[name] = _number(value, name, where, name)
        else:  # range, nugget, rho
            out[name] = _pair(value, name, where, name, positive_first=True)
    return out


def _shown(value: Any) -> str:
    """A value quoted back with its type."""
    return f"{value!r} ({type(value).__name__})"


def _table(value: Any, name: str, where: str) -> Mapping[str, Any]:
    """``value`` if it is a table with string keys; else a SpecError giving the shape expected."""
    if not isinstance(value, Mapping):
        raise SpecError(f"The prior {name!r} in {where} must be a table, not a {type(value).__name__}.",
                        given=_shown(value), fix=f"Write {name} as {PRIOR_SHAPES[name]}.")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise SpecError(f"The keys of the prior {name!r} in {where} must be names (strings).", given=bad,
                        fix=f"Write {name} as {PRIOR_SHAPES[name]}.")
    return value


def _number(value: Any, label: str, where: str, name: str, *, positive: bool = True) -> float:
    """``value`` as a finite float (positive unless ``positive`` is False); else a SpecError."""
    wanted = "a finite positive number" if positive else "a finite number"
    if not isinstance(value, numbers.Real) or isinstance(value, bool | np.bool_):
        raise SpecError(f"The prior {label} in {where} must be {wanted}.", given=_shown(value),
                        fix=f"Write {name} as {PRIOR_SHAPES[name]}.")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        why = ("infinite, NaN, zero and negative scales make the prior improper or leave the sampler no finite "
               "starting point") if positive else "an infinite or NaN value leaves the sampler no finite starting point"
        raise SpecError(f"The prior {label} in {where} must be {wanted} ({why}).", given=_shown(value),
                        fix=f"Write {name} as {PRIOR_SHAPES[name]}.")
    return v


def _sequence(value: Any) -> bool:
    """A list, tuple or 1-D array (a string is not a sequence of numbers)."""
    return (isinstance(value, Sequence) and not isinstance(value, str | bytes)) or (
        isinstance(value, np.ndarray) and value.ndim == 1)


def _pair(value: Any, label: str, where: str, name: str, *, positive_first: bool) -> list[float]:
    """Two finite numbers (the second positive; the first too if ``positive_first``); else a SpecError."""
    if not _sequence(value) or len(value) != 2:
        raise SpecError(f"The prior {label} in {where} must be a pair of numbers.", given=_shown(value),
                        fix=f"Write {name} as {PRIOR_SHAPES[name]}.")
    first, second = value
    parts = {"beta": ("mean", "sd"), "range": ("median", "log_sd")}.get(name, ("a", "b"))
    return [_number(first, f"{label} {parts[0]}", where, name, positive=positive_first),
            _number(second, f"{label} {parts[1]}", where, name)]


def _scales(value: Any, label: str, where: str) -> float | list[float]:
    """One positive scale, or a non-empty list of them; else a SpecError."""
    if _sequence(value):
        if len(value) == 0:
            raise SpecError(f"The prior {label} in {where} has no scales.", given=_shown(value),
                            fix=f"Write sd as {PRIOR_SHAPES['sd']}.")
        return [_number(v, label, where, "sd") for v in value]
    return _number(value, label, where, "sd")
