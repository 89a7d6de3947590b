"""R-style arguments of the stateful transforms (:mod:`hierlmm.formula.transforms`): matching ``ns(x, 3, knots=...)``'s
positional and named arguments to R's parameters, and checking their types, with a :class:`~hierlmm.errors.FormulaError`
that names the call and the fix (never a NumPy error)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hierlmm.errors import FormulaError


def bind_arguments(fun: str, positional: Sequence[str], keyword_only: Sequence[str], aliases: Mapping[str, str],
                   args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Match R-style arguments (positional in R's order, then by name) to parameter names."""
    call = f"{fun}(x{''.join(', ' + repr(a) for a in args)}"
    call += "".join(f", {k}={v!r}" for k, v in kwargs.items()) + ")"
    usage = f"{fun}(x, {', '.join(list(positional) + list(keyword_only))})"
    if len(args) > len(positional):
        raise FormulaError(f"{fun}() takes at most {len(positional)} positional argument(s) after x.",
                           given=call, fix=f"Name the extra arguments: {usage}.")
    bound = dict(zip(positional, args, strict=False))
    for key, value in kwargs.items():
        name = aliases.get(key, key)
        if name not in positional and name not in keyword_only:
            raise FormulaError(f"{fun}() has no argument {key!r}.", given=call, fix=f"Use {usage}.")
        if name in bound:
            raise FormulaError(f"{fun}() got argument {name!r} twice.", given=call, fix=f"Use {usage}.")
        bound[name] = value
    return bound


def as_int(value: Any, what: str, fun: str, minimum: int) -> int:
    """``value`` as a whole number ``>= minimum`` (R's ``df``, ``degree``)."""
    is_number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value != int(value) or int(value) < minimum:
        raise FormulaError(f"{fun}(): '{what}' must be a whole number >= {minimum}.", given=repr(value),
                           fix=f"Pass an integer such as {what}={max(minimum, 2)}.")
    return int(value)


def as_bool(value: Any, what: str, fun: str) -> bool:
    """``value`` as R's TRUE/FALSE (a bool, or 0/1)."""
    if isinstance(value, bool | np.bool_) or (isinstance(value, int | np.integer) and value in (0, 1)):
        return bool(value)
    raise FormulaError(f"{fun}(): '{what}' must be TRUE/FALSE.", given=repr(value),
                       fix=f"Pass {what}=True or {what}=False.")


def numeric_vector(x: Any, fun: str, what: str = "x", *, fitting: bool) -> np.ndarray:
    """``x`` as a 1-d float array; a FormulaError (never a numpy error) if it is not numeric."""
    try:
        if getattr(getattr(x, "dtype", None), "kind", "f") in "mM":  # dates are not silently numbers
            raise TypeError(x.dtype)
        if hasattr(x, "to_numpy"):  # pandas: nullable dtypes turn pd.NA into NaN
            arr = np.asarray(x.to_numpy(dtype=float, na_value=np.nan))
        else:
            arr = np.asarray(x)
            if arr.dtype.kind not in "biufO":
                raise TypeError(arr.dtype)
            arr = arr.astype(float)
    except (TypeError, ValueError):
        flat = np.asarray(x, dtype=object).reshape(-1)
        dtype = getattr(x, "dtype", None) or (type(flat[0]).__name__ if flat.size else "unknown")
        raise FormulaError(f"{fun}() needs numeric values for '{what}'.", given=f"values of type {dtype}",
                           fix="Convert the column to numbers, or use it as a factor instead.") from None
    if arr.ndim == 0 or (arr.ndim == 2 and arr.shape[1] == 1):
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise FormulaError(f"{fun}() needs a single numeric column for '{what}'.",
                           given=f"an array of shape {arr.shape}", fix="Pass one variable.")
    bad = np.isinf(arr) | (np.isnan(arr) if fitting else False)
    if bad.any():
        raise FormulaError(f"{fun}() got {int(bad.sum())} missing or infinite value(s) in '{what}'.",
                           given=f"{what}[{int(np.flatnonzero(bad)[0])}] = {arr[bad][0]}",
                           fix="Drop or impute the incomplete rows before building the model matrix.")
    return arr


def knot_vector(value: Any, fun: str, what: str) -> np.ndarray:
    """Knots given by the user, numeric and sorted."""
    arr = numeric_vector(np.atleast_1d(np.asarray(value, dtype=object)), fun, what, fitting=True)
    return np.sort(arr)
