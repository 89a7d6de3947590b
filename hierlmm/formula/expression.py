"""R expressions: tokenizer, parser and R-style deparser.

A formula is R code, but in hierlmm it is treated as *data*: it is parsed into the small, frozen syntax tree defined
here and never handed to Python's ``eval``. Evaluation (in :mod:`hierlmm.formula.evaluation`) walks this tree and can
only look up data columns and call whitelisted functions, so a formula from someone else cannot run code.

Written by hand on purpose: formulae (bambi's parser) evaluates calls as Python, rejects R's ``^``, silently
mis-reads ``%in%`` and has no ``||``; users comparing against nlme/lme4 need R's grammar and R's term names.

Notation
--------
Operator precedence follows R (``?Syntax``), from tightest to loosest::

    ^  (right-assoc)  >  unary - +  >  :  >  %in%  >  * /  >  binary + -  >  comparisons  >  | ||  >  ~
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hierlmm.errors import FormulaError, UnsafeExpressionError


@dataclass(frozen=True)
class Name:
    """A bare name: a data column (or, as a keyword, an argument name)."""

    id: str


@dataclass(frozen=True)
class Num:
    """A numeric literal."""

    value: float


@dataclass(frozen=True)
class Str:
    """A string literal."""

    value: str


@dataclass(frozen=True)
class Call:
    """A function call ``fn(args..., name = value...)``."""

    fn: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...] = ()


@dataclass(frozen=True)
class BinOp:
    """A binary operator application."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Unary:
    """A unary ``-`` or ``+``."""

    op: str
    operand: Expr


@dataclass(frozen=True)
class Paren:
    """Explicit parentheses (kept so that deparsing reproduces them)."""

    inner: Expr


Expr = Name | Num | Str | Call | BinOp | Unary | Paren

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
  | (?P<name>[A-Za-z][A-Za-z0-9._]*|\.[A-Za-z_][A-Za-z0-9._]*|\.)
  | (?P<bq>`[^`]+`)
  | (?P<str>"[^"\\]*"|'[^'\\]*')
  | (?P<op>%in%|\|\||==|!=|<=|>=|\*\*|[~+\-*/:^()|,=<>])
    """,
    re.VERBOSE,
)

_BINARY = {  # operator: (left binding power, right binding power)
    "~": (5, 6),
    "|": (10, 11),
    "||": (10, 11),
    "==": (20, 21), "!=": (20, 21), "<": (20, 21), ">": (20, 21), "<=": (20, 21), ">=": (20, 21),
    "+": (30, 31), "-": (30, 31),
    "*": (40, 41), "/": (40, 41),
    "%in%": (45, 46),
    ":": (50, 51),
    "^": (71, 70),  # right associative, tighter than unary minus
}
_UNARY_POWER = 60

MAX_NESTING = 100
"""Deepest nesting the parser accepts: parentheses, calls, unary signs and ``^`` chains inside one another. Deeper
formulas are refused before Python's recursion limit can be reached (R's own parser stops near 5,000)."""

MAX_DEPTH = 1000
"""Deepest syntax tree accepted, counting chains of binary operators (a sum of ``MAX_DEPTH`` terms): every later step
walks the tree recursively."""


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[_Tok]:
    """Split R source into tokens; anything outside R's formula vocabulary is an error."""
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise FormulaError(
                f"Unexpected character {text[pos]!r} at position {pos} of the formula.",
                given=text,
                fix="Formulas may use column names, numbers, quoted strings, R's formula operators "
                "(~ + - * / : ^ %in% | ||) and whitelisted functions such as log(), I(), ns().",
            )
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "op" and value == "**":
                value = "^"
            tokens.append(_Tok(kind, value, pos))
        pos = m.end()
    return tokens


_DUNDER = re.compile(r"(?:^|\.)__")  # `__import__`, x.__class__: never a column, always an attack


class _Parser:
    """Pratt parser over :func:`tokenize` output."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def error(self, problem: str, fix: str) -> FormulaError:
        return FormulaError(problem, given=self.text, fix=fix)

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error("The formula ends too early.", "Check for an unfinished operator or parenthesis.")
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise self.error(
                f"Expected {text!r} at position {tok.pos} but found {tok.text!r}.",
                "Check that parentheses and commas balance.",
            )

    def parse(self) -> Expr:
        if not self.tokens:
            raise self.error("The formula is empty.", "Write a formula such as 'y ~ x + (1 | g)'.")
        expr = self.expression(0)
        tok = self.peek()
        if tok is not None:
            raise self.error(
                f"Unexpected {tok.text!r} at position {tok.pos}.",
                "Two terms need an operator between them (for example '+'); attribute access and "
                "indexing are not part of R's formula language.",
            )
        return expr

    def expression(self, min_power: int) -> Expr:
        self.depth += 1
        if self.depth > MAX_NESTING:
            tok = self.peek()
            raise FormulaError(
                f"The formula nests parentheses, calls or operators more than {MAX_NESTING} levels deep (at "
                f"position {tok.pos if tok is not None else len(self.text)}).", given=_shortened(self.text),
                fix="Write the expression with fewer nested parentheses; a formula this deep is not a model.")
        try:
            return self._expression(min_power)
        finally:
            self.depth -= 1

    def _expression(self, min_power: int) -> Expr:
        left = self.prefix()
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in _BINARY:
            lbp, rbp = _BINARY[tok.text]
            if lbp < min_power:
                break
            self.take()
            if tok.text == "~" and self.peek() is None:
                raise self.error("Nothing follows '~'.", "Add the right-hand side, e.g. 'y ~ 1'.")
            left = BinOp(tok.text, left, self.expression(rbp))
        return left

    def prefix(self) -> Expr:
        tok = self.take()
        if tok.kind == "num":
            return Num(float(tok.text.rstrip("L")))
        if tok.kind == "str":
            return Str(tok.text[1:-1])
        if tok.kind in ("name", "bq") and _DUNDER.search(tok.text.strip("`")):
            raise UnsafeExpressionError(
                f"The name {tok.text!r} at position {tok.pos} looks like a Python internal ('__...').",
                given=self.text,
                fix="A formula is R syntax over data columns; rename a column whose name starts with '__'.",
            )
        if tok.kind == "bq":
            return Name(tok.text[1:-1])
        if tok.kind == "name":
            if tok.text == ".":
                raise self.error(
                    "'.' (all other columns) is not supported.", "List the columns explicitly."
                )
            nxt = self.peek()
            if nxt is not None and nxt.text == "(":
                return self.call(tok.text)
            return Name(tok.text)
        if tok.text == "(":
            inner = self.expression(0)
            self.expect(")")
            return Paren(inner)
        if tok.text in ("-", "+"):
            return Unary(tok.text, self.expression(_UNARY_POWER))
        if tok.text == "~":  # one-sided formula
            return BinOp("~", Name(""), self.expression(6))
        raise self.error(
            f"Unexpected {tok.text!r} at position {tok.pos}.", "Check the operators around this position."
        )

    def call(self, fn: str) -> Call:
        self.expect("(")
        args: list[Expr] = []
        kwargs: list[tuple[str, Expr]] = []
        if self.peek() is not None and self.peek().text == ")":  # type: ignore[union-attr]
            self.take()
            return Call(fn, ())
        while True:
            tok, nxt = self.peek(), self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
            if tok is not None and tok.kind == "name" and nxt is not None and nxt.text == "=":
                self.i += 2
                kwargs.append((tok.text, self.expression(6)))
            else:
                if kwargs:
                    raise self.error(
                        f"In {fn}(), a positional argument follows a named one.",
                        "Put positional arguments first.",
                    )
                args.append(self.expression(6))
            sep = self.take()
            if sep.text == ")":
                return Call(fn, tuple(args), tuple(kwargs))
            if sep.text != ",":
                raise self.error(
                    f"Expected ',' or ')' in the arguments of {fn}() at position {sep.pos}, found {sep.text!r}.",
                    "Check the parentheses of this call.",
                )


def parse(text: str) -> Expr:
    """Parse R source (a formula or an expression) into an :data:`Expr` tree."""
    if not isinstance(text, str):
        raise FormulaError("A formula must be a string.", given=repr(text), fix="Pass e.g. 'y ~ x + (1 | g)'.")
    expr = _Parser(text).parse()
    depth = _depth(expr)
    if depth > MAX_DEPTH:
        raise FormulaError(
            f"The formula's expression is {depth} operators deep (more than {MAX_DEPTH}), for instance a sum of "
            f"{depth} terms.", given=_shortened(text),
            fix="Use fewer terms; build long sums of columns in the data (a matrix column or a score) instead.")
    return expr


def _shortened(text: str) -> str:
    """A long formula quoted back by its first 200 characters and its length."""
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text)} characters)"


def _depth(expr: Expr) -> int:
    """Depth of a syntax tree, without recursion (a long sum is a deep, left-leaning tree)."""
    deepest, stack = 0, [(expr, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        match node:
            case Call(args=args, kwargs=kwargs):
                stack.extend((child, level + 1) for child in (*args, *(v for _, v in kwargs)))
            case BinOp(left=left, right=right):
                stack.extend(((left, level + 1), (right, level + 1)))
            case Unary(operand=child) | Paren(inner=child):
                stack.append((child, level + 1))
    return deepest


_SYNTACTIC = re.compile(r"^(?:[A-Za-z]|\.[A-Za-z_.]?)[A-Za-z0-9._]*$")


def _number(value: float) -> str:
    """R's formatting of a number in ``deparse``: 15 significant digits, fixed unless scientific is narrower."""
    if value == 0 or value != value or value in (float("inf"), float("-inf")):
        return f"{value:g}"
    digits = next(d for d in range(1, 16) if float(f"{value:.{d - 1}e}") == float(f"{value:.14e}"))
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    sci = f"{mantissa}e{int(exponent):+03d}"
    e10 = int(exponent)
    decimals = max(0, digits - e10 - 1)
    fixed = f"{value:.{decimals}f}"
    return fixed if len(fixed) <= len(sci) else sci


def deparse(expr: Expr) -> str:
    """Print an expression as R's ``deparse`` does (R's spacing), so that names match nlme's output."""
    match expr:
        case Name(id=name):
            return name if _SYNTACTIC.match(name) else f"`{name}`"
        case Num(value=value):
            return _number(value)
        case Str(value=value):
            return f'"{value}"'
        case Call(fn=fn, args=args, kwargs=kwargs):
            parts = [deparse(a) for a in args] + [f"{k} = {deparse(v)}" for k, v in kwargs]
            return f"{fn}({', '.join(parts)})"
        case Unary(op=op, operand=operand):
            return f"{op}{deparse(operand)}"
        case Paren(inner=inner):
            return f"({deparse(inner)})"
        case BinOp(op=op, left=left, right=right):
            if op in ("^", ":", "/"):  # R's deparse puts no spaces around these
                return f"{deparse(left)}{op}{deparse(right)}"
            if op == "~" and left == Name(""):
                return f"~{deparse(right)}"
            return f"{deparse(left)} {op} {deparse(right)}"
    raise TypeError(f"not an expression: {expr!r}")


def names_in(expr: Expr) -> list[str]:
    """Data column names an expression refers to, in order of first appearance (keyword names excluded)."""
    found: list[str] = []

    def walk(e: Expr) -> None:
        match e:
            case Name(id=name):
                if name and name not in found and name not in ("TRUE", "FALSE"):  # R's reserved logicals
                    found.append(name)
            case Call(args=args, kwargs=kwargs):
                for a in args:
                    walk(a)
                for _, v in kwargs:
                    walk(v)
            case BinOp(left=left, right=right):
                walk(left)
                walk(right)
            case Unary(operand=operand) | Paren(inner=operand):
                walk(operand)

    walk(expr)
    return found
