"""R's formula algebra: from a parsed formula to ordered terms and random-effects terms.

This reproduces R's ``terms.formula`` (and lme4's ``findbars``) so that the fixed-effects columns come out in the
same order and with the same names as in nlme and lme4.

Notation
--------
A *variable* is one R expression (``obstime``, ``ns(year, 2)``, ``I(obstime^2)``). A *term* is a set of variables
(``obstime:drug``); the empty term is the intercept. The operators act on lists of terms:

- ``A + B``: the union; ``A - B``: remove B's terms (``- 1`` removes the intercept);
- ``A:B`` (and ``B %in% A``): every union of a term of A with a term of B;
- ``A * B`` = ``A + B + A:B``; ``A / B`` = ``A + (all of A's variables):B``;
- ``(A)^k``: all interactions of A's terms up to order k.

Terms are then ordered by their number of variables (R's ``keep.order = FALSE``), and the variables inside a term
by their first appearance in the formula. A random-effects term ``(effects | grouping)`` (``||`` for uncorrelated
effects) is allowed as a top-level summand, as in lme4; ``g1/g2`` in a grouping expands to ``g1`` and ``g1:g2``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hierlmm.errors import FormulaError
from hierlmm.formula.expression import BinOp, Call, Expr, Name, Num, Paren, Unary, deparse, parse


@dataclass(frozen=True)
class Term:
    """One term: the variables it multiplies, in R's order. ``variables == ()`` is the intercept."""

    variables: tuple[Expr, ...]

    @property
    def name(self) -> str:
        """The term's label as R prints it (``"obstime:drug"``, ``"(Intercept)"``)."""
        return ":".join(deparse(v) for v in self.variables) if self.variables else "(Intercept)"


@dataclass(frozen=True)
class TermList:
    """The right-hand side of a (fixed or random-effects) formula: intercept flag and ordered terms."""

    intercept: bool
    terms: tuple[Term, ...]

    @property
    def variables(self) -> tuple[Expr, ...]:
        """Distinct variables in order of first appearance."""
        seen: list[Expr] = []
        for term in self.terms:
            for v in term.variables:
                if v not in seen:
                    seen.append(v)
        return tuple(seen)

    def deparse(self) -> str:
        """The right-hand side as R would print it (``"1"`` for an intercept-only model)."""
        labels = [t.name for t in self.terms]
        if not self.intercept:
            labels = ["0", *labels] if labels else ["0"]
        return " + ".join(labels) if labels else "1"


@dataclass(frozen=True)
class RandomTermSyntax:
    """``(effects | grouping)`` as written: the effects' terms, the grouping factors, and ``||``."""

    effects: TermList
    grouping: tuple[tuple[str, ...], ...]  # each entry an interaction of columns; nesting already expanded
    uncorrelated: bool


@dataclass(frozen=True)
class ParsedFormula:
    """A two-sided formula split into response, fixed-effects terms and random-effects terms."""

    response: Expr | None
    fixed: TermList
    random: tuple[RandomTermSyntax, ...]


# Internal representation while expanding: an ordered list of terms, each a frozenset of variables.
_TermSets = list[frozenset[Expr]]


def _union(a: _TermSets, b: _TermSets) -> _TermSets:
    out = list(a)
    out.extend(t for t in b if t not in out)
    return out


def _interact(a: _TermSets, b: _TermSets) -> _TermSets:
    out: _TermSets = []
    for ta in a:  # R's InteractTerms/CrossTerms: left terms in the outer loop
        for tb in b:
            t = ta | tb
            if t not in out:
                out.append(t)
    return out


class _Expander:
    """R's ``EncodeVars``: the intercept is one flag that every ``1``/``0`` met sets (the last one wins), with
    the meaning flipped on the right of ``-`` (so ``a - 1`` and ``(a - 1) * b`` have none, ``a - 0`` has one)."""

    def __init__(self, source: str, intercept: bool = True) -> None:
        self.source = source
        self.order: list[Expr] = []  # variables by first appearance
        self.intercept = intercept
        self.parity = True

    def error(self, problem: str, fix: str) -> FormulaError:
        return FormulaError(problem, given=self.source, fix=fix)

    def variable(self, expr: Expr) -> frozenset[Expr]:
        if expr not in self.order:
            self.order.append(expr)
        return frozenset([expr])

    def delete(self, left: _TermSets, right: Expr) -> _TermSets:
        self.parity = not self.parity
        removed = self.expand(right)
        self.parity = not self.parity
        return [t for t in left if t not in removed]

    def expand(self, expr: Expr) -> _TermSets:
        match expr:
            case Num(value=1.0):
                self.intercept = self.parity
                return []
            case Num(value=0.0):
                self.intercept = not self.parity
                return []
            case Num():
                raise self.error(
                    f"A bare number {deparse(expr)} is not a term.",
                    "Use 1 (intercept), 0 (no intercept) or I() for arithmetic, e.g. I(x + 2).",
                )
            case Name() | Call():
                return [self.variable(expr)]
            case Paren(inner=inner) | Unary(op="+", operand=inner):
                return self.expand(inner)
            case Unary(op="-", operand=operand):
                return self.delete([], operand)
            case BinOp(op="+", left=left, right=right):
                return _union(self.expand(left), self.expand(right))
            case BinOp(op="-", left=left, right=right):
                return self.delete(self.expand(left), right)
            case BinOp(op=":", left=left, right=right):
                return _interact(self.expand(left), self.expand(right))
            case BinOp(op="%in%", left=left, right=right):
                # R's InTerms: each left term joined with ALL the right side's variables (not term by term).
                outer, inner = self.expand(left), self.expand(right)
                return _interact(outer, [frozenset().union(*inner)])
            case BinOp(op="*", left=left, right=right):
                a, b = self.expand(left), self.expand(right)
                return _union(_union(a, b), _interact(a, b))
            case BinOp(op="/", left=left, right=right):
                a, b = self.expand(left), self.expand(right)
                whole = [frozenset().union(*a)] if a else []
                return _union(a, _interact(whole, b))
            case BinOp(op="^", left=left, right=Num(value=k)) if k >= 1 and k == int(k):
                a = self.expand(left)
                out = a
                for _ in range(int(k) - 1):  # R's PowerTerms: A:(A:(...)), left terms in the outer loop
                    out = _interact(a, out)
                return out
            case BinOp(op="|" | "||"):
                raise self.error(
                    "A random-effects term '(effects | group)' must stand on its own, in parentheses, "
                    "as a top-level summand of the formula.",
                    "Write e.g. 'y ~ x + (x | g)'.",
                )
        raise self.error(
            f"{deparse(expr)!r} is not a valid term in a formula.",
            "Wrap arithmetic in I(), e.g. I(x^2) or I(a > 3); comparisons and powers of single "
            "variables are not terms on their own.",
        )

    def finish(self, raw: _TermSets) -> TermList:
        rank = {v: i for i, v in enumerate(self.order)}
        ordered = sorted(raw, key=len)  # stable: keeps generation order within one degree
        terms = tuple(Term(tuple(sorted(t, key=rank.__getitem__))) for t in ordered if t)
        return TermList(self.intercept, terms)


def _split_sum(expr: Expr) -> list[tuple[str, Expr]]:
    """Top-level summands of a right-hand side, each with its sign."""
    match expr:
        case BinOp(op="+" | "-", left=left, right=right):
            sign = "+" if expr.op == "+" else "-"
            return [*_split_sum(left), (sign, right)]
    return [("+", expr)]


def _is_bar(expr: Expr) -> bool:
    return isinstance(expr, Paren) and isinstance(expr.inner, BinOp) and expr.inner.op in ("|", "||")


def _grouping(expr: Expr, source: str) -> tuple[tuple[str, ...], ...]:
    """Expand ``g``, ``g1:g2`` and ``g1/g2`` into the grouping factors (each a tuple of columns)."""
    match expr:
        case Name(id=name):
            return ((name,),)
        case Paren(inner=inner):
            return _grouping(inner, source)
        case BinOp(op=":", left=left, right=right):
            (a,), (b,) = _single(_grouping(left, source), source), _single(_grouping(right, source), source)
            return (a + b,)
        case BinOp(op="/", left=left, right=right):
            outer = _grouping(left, source)
            inner = _grouping(right, source)
            last = outer[-1]
            return outer + tuple(last + g for g in inner)
    raise FormulaError(
        f"The grouping {deparse(expr)!r} of a random-effects term is not a column, an interaction 'g1:g2' or a "
        "nesting 'g1/g2'.",
        given=source,
        fix="Group by data columns, e.g. (1 | patient) or (1 | id/eye).",
    )


def _single(groups: tuple[tuple[str, ...], ...], source: str) -> tuple[tuple[str, ...]]:
    if len(groups) != 1:
        raise FormulaError(
            "Nesting '/' cannot appear inside an interaction ':' of grouping factors.",
            given=source,
            fix="Write the nesting at the outer level, e.g. (1 | a/b).",
        )
    return (groups[0],)


def expand_terms(rhs: Expr, source: str, default_intercept: bool = True) -> TermList:
    """Expand a right-hand side (no random terms) into R's ordered :class:`TermList`."""
    expander = _Expander(source, default_intercept)
    return expander.finish(expander.expand(rhs))


def random_term(effects: Expr, grouping: Expr, uncorrelated: bool, source: str) -> RandomTermSyntax:
    """Build one :class:`RandomTermSyntax` from the two sides of a bar."""
    return RandomTermSyntax(expand_terms(effects, source), _grouping(grouping, source), uncorrelated)


def parse_formula(text: str, *, require_response: bool = True) -> ParsedFormula:
    """Parse an lme4-style formula ``y ~ fixed + (effects | grouping)``.

    Parameters
    ----------
    text
        The formula. Random-effects terms must be top-level summands in parentheses.
    require_response
        Whether a left-hand side is required.

    Returns
    -------
    ParsedFormula
    """
    tree = parse(text)
    if not (isinstance(tree, BinOp) and tree.op == "~"):
        raise FormulaError("A formula needs a '~'.", given=text, fix="Write e.g. 'CD4 ~ obstime + (1 | patient)'.")
    response = None if tree.left == Name("") else tree.left
    if require_response and response is None:
        raise FormulaError("The formula has no response.", given=text, fix="Put the response left of '~'.")
    random: list[RandomTermSyntax] = []
    fixed_parts: list[tuple[str, Expr]] = []
    for sign, part in _split_sum(tree.right):
        if _is_bar(part):
            if sign == "-":
                raise FormulaError("A random-effects term cannot be subtracted.", given=text, fix="Remove it.")
            bar = part.inner  # type: ignore[union-attr]
            random.append(random_term(bar.left, bar.right, bar.op == "||", text))
        else:
            fixed_parts.append((sign, part))
    if not fixed_parts:
        fixed_rhs: Expr = Num(1.0)
    else:
        fixed_rhs = fixed_parts[0][1] if fixed_parts[0][0] == "+" else Unary("-", fixed_parts[0][1])
        for sign, part in fixed_parts[1:]:
            fixed_rhs = BinOp(sign, fixed_rhs, part)
    return ParsedFormula(response, expand_terms(fixed_rhs, text), tuple(random))


def parse_rhs(text: str) -> Expr:
    """Parse a one-sided formula ``~ rhs`` (or a bare right-hand side) and return the right-hand side."""
    tree = parse(text)
    if isinstance(tree, BinOp) and tree.op == "~":
        if tree.left != Name(""):
            raise FormulaError("Expected a one-sided formula.", given=text, fix="Drop the left-hand side: '~ x'.")
        return tree.right
    return tree


def parse_nlme_random(text: str) -> tuple[Expr, Expr]:
    """Split nlme's ``~ effects | grouping`` into its two sides."""
    rhs = parse_rhs(text)
    if isinstance(rhs, Paren):
        rhs = rhs.inner
    if not (isinstance(rhs, BinOp) and rhs.op == "|"):
        raise FormulaError(
            "An nlme random formula must have the form '~ effects | grouping'.",
            given=text,
            fix="Write e.g. random='~ obstime | patient' or random={'patient': pdDiag('~ obstime')}.",
        )
    return rhs.left, rhs.right
