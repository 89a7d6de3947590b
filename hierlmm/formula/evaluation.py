"""Evaluate formula variables on data, safely.

The syntax tree from :mod:`hierlmm.formula.expression` is walked here; a name can only be a data column and a call can
only be a function of :data:`FUNCTIONS` (R's arithmetic helpers) or a stateful transform (``ns``, ``bs``, ``poly``,
``scale``). Nothing is handed to Python's ``eval``: this is what keeps a formula from someone else inert.

Stateful transforms are *fitted* the first time a design is built (knots from the training data) and their fitted
state is kept, keyed by the call's R text, so that new data are evaluated with the training knots.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, FormulaError, UnsafeExpressionError
from hierlmm.formula.expression import BinOp, Call, Expr, Name, Num, Paren, Str, Unary, deparse
from hierlmm.formula.transforms import STATEFUL_TRANSFORMS


@dataclass(frozen=True)
class Factor:
    """A categorical variable: integer codes (-1 = missing) into ``levels`` (reference level first)."""

    codes: np.ndarray
    levels: tuple[str, ...]


@dataclass(frozen=True)
class Numeric:
    """A numeric variable: ``values`` is (n, k); column ``j`` is labelled ``name + suffixes[j]``."""

    values: np.ndarray
    suffixes: tuple[str, ...] = ("",)


Value = Factor | Numeric


@dataclass(frozen=True)
class Scaling:
    """R's ``scale(x, center, scale)``: centre and scale fitted on the training data.

    As ``base::scale``: ``center = TRUE`` subtracts the mean, a number subtracts that number, ``FALSE`` nothing;
    ``scale = TRUE`` divides by the root mean square of the (centred) values, ``sqrt(sum(x^2) / (n - 1))`` -- the
    standard deviation when the mean was subtracted, but *not* when ``center = FALSE`` or a number --, a number
    divides by that number, ``FALSE`` by nothing. Missing values are left out of both, as R's ``na.rm = TRUE``.
    The fitted centre and scale are reused on new data, as R's ``predict`` does through ``makepredictcall``.
    """

    name = "scale"
    center: float
    scale: float

    @classmethod
    def fit(cls, x: np.ndarray, center: bool | float = True, scale: bool | float = True) -> Scaling:
        centring = _scale_argument(center, "center")
        x = np.asarray(x, dtype=float)
        if centring is True:
            c = math.fsum(x) / x.size if x.size else math.nan  # R's colMeans: one (long double) sum
        else:
            c = 0.0 if centring is False else centring
        s = _scale_argument(scale, "scale")
        if s is True:
            s = math.sqrt(math.fsum((x - c) ** 2) / max(1, x.size - 1))
            if not s > 0 or not math.isfinite(s):
                what = "sd" if centring is True else "root mean square"
                raise FormulaError("scale() of a constant variable." if centring is True else
                                   "scale() of a variable that is all zeros (after centring).",
                                   given=f"{what} = {s}", fix="Drop the term.")
        elif s is False:
            s = 1.0
        elif s == 0:
            raise FormulaError("scale(): scale = 0 divides by zero.", given=repr(scale),
                               fix="Give a non-zero scale, or scale = FALSE.")
        return cls(float(c), float(s))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.center) / self.scale)[:, None]

    @property
    def column_suffixes(self) -> tuple[str, ...]:
        return ("",)


def _scale_argument(value: Any, name: str) -> bool | float:
    """``center`` / ``scale`` of ``scale()``: TRUE, FALSE or one finite number (R also takes one per column)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    arr = np.asarray(value)
    if arr.dtype.kind in "iuf" and arr.size == 1 and np.isfinite(arr).all():
        return float(arr.reshape(-1)[0])
    raise FormulaError(
        f"scale(): {name} must be TRUE or FALSE, or a number.", given=repr(value),
        fix="Write scale(x), scale(x, center = FALSE), scale(x, scale = FALSE) or scale(x, center = 50, scale = 10).",
    )


def _stateful() -> dict[str, Any]:
    return {**STATEFUL_TRANSFORMS, "scale": Scaling}


def _log(x: np.ndarray, base: float = np.e) -> np.ndarray:
    """R's ``log(x, base)``: ``log10``/``log2`` for bases 10 and 2 (R's ``logbase``), else ``log(x) / log(base)``."""
    if base == 10:
        return np.log10(x)
    if base == 2:
        return np.log2(x)
    return np.log(x) / (np.log(base) if base != np.e else 1.0)


def _r_pow_di(x: float, n: int) -> float:
    """R's ``R_pow_di``: ``x^n`` by repeated squaring, ``1 / x^|n|`` for negative ``n``."""
    xn, negative, n = 1.0, n < 0, abs(n)
    while True:
        if n & 1:
            xn *= x
        n >>= 1
        if not n:
            break
        x *= x
    return 1.0 / xn if negative else xn


def _r_round_one(x: float, digits: float) -> float:
    """R >= 4.0.0 ``round(x, digits)`` (nmath ``fround.c``): of the two neighbours with ``digits`` decimals, the one
    closer to ``x`` in double arithmetic, ties to an even last digit. numpy's ``round`` scales by ``10^digits`` and
    rounds the product, which differs near ties (R: ``round(0.15, 1) = 0.1``, numpy: 0.2)."""
    if math.isnan(x) or math.isnan(digits):
        return x + digits
    if not math.isfinite(x) or digits > 308 + 15 or x == 0.0:
        return x
    if digits < -308:
        return 0.0
    if digits == 0.0:
        return float(np.rint(x))
    dig = int(math.floor(digits + 0.5))
    if x < 0.0:
        return -_r_round_one(-x, dig)
    if math.log10(2.0) * (0.5 + (math.frexp(x)[1] - 1)) + dig > 15:  # logb(x) + dig > DBL_DIG: nothing to round
        return x
    if dig <= 308:
        pow10 = _r_pow_di(10.0, dig)
        x10 = pow10 * x
        i10 = math.floor(x10)
        xd, xu = i10 / pow10, math.ceil(x10) / pow10
    else:  # x is tiny
        p10, pow10 = _r_pow_di(10.0, dig - 308), _r_pow_di(10.0, 308)
        x10 = (pow10 * x) * p10
        i10 = math.floor(x10)
        xd, xu = i10 / pow10 / p10, math.ceil(x10) / pow10 / p10
    du, dd = xu - x, x - xd
    return xu if (du < dd or (du == dd and math.fmod(i10, 2.0) == 1.0)) else xd


def _round(x: Any, digits: Any = 0) -> Any:
    """R's ``round(x, digits)``, element-wise (``digits`` one number)."""
    d = np.asarray(digits, dtype=float)
    if d.size != 1:
        raise TypeError("round(): digits must be one number")
    out = np.vectorize(_r_round_one, otypes=[float])(np.asarray(x, dtype=float), float(d.reshape(-1)[0]))
    return out if np.ndim(x) else float(out)


def _parallel(extreme: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """R's ``pmin``/``pmax`` of any number of arguments (missing values propagate, as ``na.rm = FALSE``)."""
    def parallel(*values: Any) -> Any:
        return functools.reduce(extreme, values)
    return parallel


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "log": _log, "log2": np.log2, "log10": np.log10, "log1p": np.log1p, "exp": np.exp, "expm1": np.expm1,
    "sqrt": np.sqrt, "abs": np.abs, "sin": np.sin, "cos": np.cos, "tan": np.tan, "sign": np.sign,
    "floor": np.floor, "ceiling": np.ceil, "round": _round,
    "pmin": _parallel(np.minimum), "pmax": _parallel(np.maximum),
}
"""Whitelisted R functions of numbers (R name -> numpy implementation). ``tests/formula/test_functions_against_r.py``
compares each with R itself."""

SPECIAL = ("I", "c", "factor", "as.factor", "relevel", "as.numeric", "ns", "bs", "poly", "scale")
"""Calls handled by the evaluator itself."""

KEYWORDS: dict[str, tuple[str, ...]] = {"log": ("base",), "round": ("digits",)}
"""Named arguments the functions of :data:`FUNCTIONS` accept (numpy's own keywords, like ``out``, are not)."""

LOGICAL = {"TRUE": True, "FALSE": False}
"""R's reserved logical constants (never data columns)."""


def allowed_functions() -> tuple[str, ...]:
    """Every function name a formula may call."""
    return tuple(sorted({*FUNCTIONS, *SPECIAL}))


def column_as_value(series: pd.Series) -> Value | np.ndarray:
    """A data column as R would see it: factor for categorical/string columns, logical for booleans."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        cats = series.cat.categories
        return Factor(series.cat.codes.to_numpy(np.int64), tuple(str(c) for c in cats))
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(bool)
    if pd.api.types.is_datetime64_any_dtype(series.dtype) or pd.api.types.is_timedelta64_dtype(series.dtype):
        raise DataError(
            f"Column {series.name!r} holds dates or durations, which a formula cannot use directly.",
            given=str(series.dtype),
            fix="Convert it to a number first, e.g. years since baseline: "
            "(data[col] - data[col].min()).dt.days / 365.25.",
        )
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(float)
    as_str = series.astype("string")
    levels = tuple(sorted(as_str.dropna().unique()))
    codes = pd.Categorical(as_str, categories=list(levels)).codes.astype(np.int64)
    return Factor(codes, levels)


class Evaluator:
    """Evaluate variables on one data frame.

    Parameters
    ----------
    data
        The data (all rows; missing values propagate as NaN / code -1).
    state
        Fitted stateful transforms from an earlier evaluation (``None`` or empty: fit them now).
    source
        The formula text, quoted in error messages.
    """

    def __init__(self, data: pd.DataFrame, state: Mapping[str, Any] | None = None, source: str = "") -> None:
        self.data = data
        self.fitting = not state
        self.state: dict[str, Any] = dict(state or {})
        self.source = source
        self.n = len(data)

    # ------------------------------------------------------------------------------------------------------------
    def variable(self, expr: Expr) -> Value:
        """Evaluate one formula variable to a :class:`Numeric` block or a :class:`Factor`."""
        value = self.eval(expr)
        if isinstance(value, Factor | Numeric):
            return value
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = np.full(self.n, arr)
        if arr.shape[0] != self.n:
            raise FormulaError(
                f"{deparse(expr)} has {arr.shape[0]} values, not one per row ({self.n}).",
                given=self.source or deparse(expr),
                fix="Every term must give one value per row of the data; c() is only for arguments such as knots.",
            )
        if arr.dtype == bool:
            return Factor(arr.astype(np.int64), ("FALSE", "TRUE"))
        if arr.dtype.kind not in "fiu":
            raise DataError(f"{deparse(expr)} is not numeric.", given=str(arr.dtype), fix="Use a numeric column.")
        return Numeric(arr.astype(float).reshape(self.n, -1) if arr.ndim > 1 else arr.astype(float)[:, None])

    def eval(self, expr: Expr) -> Any:
        match expr:
            case Name(id=name) if name in LOGICAL:
                return LOGICAL[name]
            case Name(id=name):
                return self.column(name)
            case Num(value=value):
                return value
            case Str(value=value):
                return value
            case Paren(inner=inner):
                return self.eval(inner)
            case Unary(op=op, operand=operand):
                v = self.numeric(self.eval(operand), expr)
                return -v if op == "-" else v
            case BinOp(op=op, left=left, right=right):
                return self.binary(op, self.eval(left), self.eval(right), expr)
            case Call():
                return self.call(expr)
        raise UnsafeExpressionError("Unsupported expression.", given=deparse(expr), fix="Simplify the formula.")

    def column(self, name: str) -> Any:
        if name not in self.data.columns:
            columns = [str(c) for c in self.data.columns]
            close = [c for c in columns if c.lower() == name.lower()] or difflib.get_close_matches(name, columns, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise DataError(
                f"The formula uses a column {name!r} that is not in the data.{hint}",
                given=self.source or name,
                fix=f"Use one of the data's columns: {', '.join(map(str, self.data.columns[:30]))}.",
            )
        column = self.data[name]
        if isinstance(column, pd.DataFrame):
            raise DataError(
                f"The data have {column.shape[1]} columns named {name!r}.",
                given=self.source or name,
                fix="Give the columns distinct names (DataFrame.columns must not repeat a name the model uses).",
            )
        return column_as_value(column)

    def numeric(self, value: Any, expr: Expr) -> Any:
        if isinstance(value, Factor):
            raise DataError(
                f"Arithmetic on a categorical variable in {deparse(expr)}.",
                given=self.source,
                fix="Use the factor as a term on its own, or convert it with as.numeric() if that is meant.",
            )
        if isinstance(value, Numeric):
            return value.values if value.values.shape[1] > 1 else value.values[:, 0]
        if isinstance(value, str):
            raise DataError(f"A string in arithmetic: {deparse(expr)}.", given=self.source, fix="Remove it.")
        return value

    def binary(self, op: str, left: Any, right: Any, expr: Expr) -> Any:
        if op in ("==", "!="):
            if isinstance(left, Factor) and isinstance(right, str):
                hit = np.array([left.levels[c] == right if c >= 0 else False for c in left.codes])
                return hit if op == "==" else ~hit
        ops: dict[str, Callable[[Any, Any], Any]] = {
            "+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power,
            "==": np.equal, "!=": np.not_equal, "<": np.less, ">": np.greater, "<=": np.less_equal,
            ">=": np.greater_equal,
        }
        if op not in ops:
            raise FormulaError(
                f"Operator {op!r} cannot be used inside {deparse(expr)}.",
                given=self.source,
                fix="Inside functions and I(), use arithmetic (+ - * / ^) and comparisons only.",
            )
        a, b = self.numeric(left, expr), self.numeric(right, expr)
        with np.errstate(all="ignore"):
            return ops[op](np.asarray(a, float) if op == "^" else a, b)

    def call(self, expr: Call) -> Any:
        fn = expr.fn
        if fn not in FUNCTIONS and fn not in SPECIAL:
            raise UnsafeExpressionError(
                f"The function {fn!r} is not allowed in a formula.",
                given=self.source or deparse(expr),
                fix=f"Formulas are data, not code: use only {', '.join(allowed_functions())}.",
            )
        kwargs = {k.replace(".", "_"): self.eval(v) for k, v in expr.kwargs}
        args = [self.eval(a) for a in expr.args]
        if fn in FUNCTIONS and not set(kwargs) <= set(KEYWORDS.get(fn, ())):
            allowed = KEYWORDS.get(fn, ())
            raise FormulaError(
                f"{fn}() has no argument(s) {', '.join(sorted(set(kwargs) - set(allowed)))}.",
                given=deparse(expr),
                fix=f"{fn}() takes {' and '.join(allowed) if allowed else 'no'} named arguments.",
            )
        if not args and fn != "c":
            raise FormulaError(f"{fn}() needs an argument.", given=deparse(expr), fix=f"Write e.g. {fn}(x).")
        if fn == "I":
            if len(args) != 1 or kwargs:
                raise FormulaError("I() takes one argument.", given=deparse(expr), fix="Write I(x^2).")
            return args[0] if isinstance(args[0], Factor) else self.numeric(args[0], expr)
        if fn == "c":
            return np.array([self.numeric(a, expr) for a in args], dtype=float)
        if fn in ("factor", "as.factor"):
            return self.to_factor(args[0], kwargs.get("levels"), expr)
        if fn == "relevel":
            f = self.to_factor(args[0], None, expr)
            ref = str(kwargs.get("ref", args[1] if len(args) > 1 else ""))
            if ref not in f.levels:
                raise DataError(
                    f"relevel(): {ref!r} is not a level.", given=deparse(expr), fix=f"Use one of {f.levels}."
                )
            order = (f.levels.index(ref), *(i for i, lv in enumerate(f.levels) if lv != ref))
            remap = np.argsort(order)
            return Factor(np.where(f.codes >= 0, remap[np.maximum(f.codes, 0)], -1), tuple(f.levels[i] for i in order))
        if fn == "as.numeric":
            a = args[0]
            return np.where(a.codes >= 0, a.codes + 1.0, np.nan) if isinstance(a, Factor) else self.numeric(a, expr)
        if fn in ("ns", "bs", "poly", "scale"):
            return self.stateful(expr, fn, args, kwargs)
        numbers = [self.numeric(a, expr) for a in args]
        with np.errstate(all="ignore"):
            try:
                return FUNCTIONS[fn](*numbers, **kwargs)
            except TypeError as exc:
                raise FormulaError(f"Bad arguments to {fn}().", given=deparse(expr), fix=str(exc)) from None

    def to_factor(self, value: Any, levels: Any, expr: Expr) -> Factor:
        if isinstance(value, Factor) and levels is None:
            present = sorted({int(c) for c in value.codes if c >= 0})
            remap = {old: new for new, old in enumerate(present)}
            codes = np.array([remap.get(int(c), -1) for c in value.codes], dtype=np.int64)
            return Factor(codes, tuple(value.levels[i] for i in present))
        if isinstance(value, Factor):
            raw = np.array([value.levels[c] if c >= 0 else None for c in value.codes], dtype=object)
        else:
            arr = np.asarray(self.numeric(value, expr))
            raw = np.array(
                [None if (isinstance(v, float) and np.isnan(v)) else _r_string(v) for v in arr], dtype=object
            )
        if levels is None:
            if isinstance(value, Factor):
                lv = [x for x in value.levels if x in set(raw)]
            else:
                lv = [_r_string(v) for v in sorted({float(v) for v in np.asarray(value, float) if not np.isnan(v)})]
        else:
            lv = [_r_string(v) for v in np.atleast_1d(levels)]
        lv = list(dict.fromkeys(lv))  # R: levels <- unique(as.character(sort(unique(x))))
        index = {level: i for i, level in enumerate(lv)}
        return Factor(np.array([index.get(v, -1) if v is not None else -1 for v in raw], np.int64), tuple(lv))

    def stateful(self, expr: Call, fn: str, args: list[Any], kwargs: dict[str, Any]) -> Numeric:
        key = deparse(expr)
        if not args:
            raise FormulaError(f"{fn}() needs a variable.", given=key, fix=f"Write e.g. {fn}(x, 2).")
        x = np.asarray(self.numeric(args[0], expr), dtype=float)
        if x.ndim != 1:
            raise FormulaError(f"{fn}() needs a single numeric variable.", given=key, fix="Pass one column.")
        ok = ~np.isnan(x)
        if self.fitting and key not in self.state:
            params = [self.numeric(a, expr) if not isinstance(a, str) else a for a in args[1:]]
            self.state[key] = _stateful()[fn].fit(x[ok], *params, **kwargs)
        elif key not in self.state:
            raise FormulaError(f"No fitted state for {key}.", given=key, fix="Build the design on training data first.")
        transform = self.state[key]
        out = np.full((self.n, len(transform.column_suffixes)), np.nan)
        out[ok] = transform.transform(x[ok])
        return Numeric(out, tuple(transform.column_suffixes))


def _r_string(v: Any) -> str:
    """R's ``as.character`` of a number, as ``factor()`` labels its levels.

    A whole number in R's integer range is written as an integer (``1``, not ``1.0``; ``100000``, as R writes the
    integer columns ``read.csv`` gives); any other number as R writes a double: 15 significant digits, fixed or
    scientific notation whichever is narrower (``0.333333333333333``, ``1e-04``, ``1e+10``).
    """
    if not isinstance(v, float | np.floating):
        return str(v)
    x = float(v)
    if x.is_integer() and abs(x) < 2**31:
        return str(int(x))
    if not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Inf" if x > 0 else "-Inf")
    mantissa, exponent = f"{abs(x):.14e}".split("e")
    kpower = int(exponent)
    nsig = len(mantissa.replace(".", "").rstrip("0")) or 1
    neg = int(x < 0)
    decimals = max(0, nsig - kpower - 1)
    fixed_width = neg + (kpower + 1 if kpower >= 0 else 1) + (decimals + 1 if decimals else 0)
    sci_width = neg + (nsig + 1 if nsig > 1 else nsig) + (4 if abs(kpower) < 100 else 5)
    return f"{x:.{decimals}f}" if fixed_width <= sci_width else f"{x:.{nsig - 1}e}"
