"""Tests of hierlmm.formula.expression and hierlmm.formula.terms: R's grammar, R's term algebra and R's deparse.

Expected values are R's (``attr(terms(f), "term.labels")``, checked live in the ``needs_r`` test), the
formulae package's term sets (property test), or counted from first principles.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import subprocess
from itertools import combinations

import formulae
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hierlmm.errors import FormulaError
from hierlmm.formula.expression import BinOp, Call, Name, Num, Paren, Str, Unary, deparse, names_in, parse, tokenize
from hierlmm.formula.terms import TermList, parse_formula, parse_nlme_random, parse_rhs

HAS_R = shutil.which("Rscript") is not None
PROPERTY = settings(database=None, deadline=None, max_examples=200)


def labels(formula: str) -> list[str]:
    return [t.name for t in parse_formula(formula).fixed.terms]


def intercept(formula: str) -> bool:
    return parse_formula(formula).fixed.intercept


# ------------------------------------------------------------------------------------------ term algebra (R)
# Each expected list is what R 4.2 prints for attr(terms(f), "term.labels"); the needs_r test re-checks them.
R_TERMS: dict[str, tuple[int, list[str]]] = {
    "y ~ a*b": (1, ["a", "b", "a:b"]),
    "y ~ a/b": (1, ["a", "a:b"]),
    "y ~ (a+b+c)^2": (1, ["a", "b", "c", "a:b", "a:c", "b:c"]),
    "y ~ b %in% a": (1, ["b:a"]),
    "y ~ a + b %in% a": (1, ["a", "a:b"]),
    "y ~ a %in% (b + c)": (1, ["a:b:c"]),
    "y ~ (b + c) %in% a": (1, ["b:a", "c:a"]),
    "y ~ a - 1": (0, ["a"]),
    "y ~ 0 + a": (0, ["a"]),
    "y ~ -1 + a": (0, ["a"]),
    "y ~ a - 0": (1, ["a"]),
    "y ~ a - 1 - 0": (1, ["a"]),
    "y ~ a*b - a": (1, ["b", "a:b"]),
    "y ~ (a+b)/c": (1, ["a", "b", "a:b:c"]),
    "y ~ a/(b*c)": (1, ["a", "a:b", "a:c", "a:b:c"]),
    "y ~ (a/b)/(c/d)": (1, ["a", "a:b", "a:b:c", "a:b:c:d"]),
    "y ~ a^2": (1, ["a"]),
    "y ~ (a+b)^3 - a:b": (1, ["a", "b"]),
    "y ~ a:b:c + a*b": (1, ["a", "b", "a:b", "a:b:c"]),
    "y ~ c:b + a:c": (1, ["c:b", "c:a"]),
    "y ~ b*a*c - 1": (0, ["b", "a", "c", "b:a", "b:c", "a:c", "b:a:c"]),
    "y ~ a*b*c*d": (1, ["a", "b", "c", "d", "a:b", "a:c", "b:c", "a:d", "b:d", "c:d", "a:b:c", "a:b:d",
                        "a:c:d",
                        "b:c:d", "a:b:c:d"]),
    "y ~ a - a": (1, []),
    "y ~ (a+b):(c+d)": (1, ["a:c", "a:d", "b:c", "b:d"]),
    "y ~ (a+b)*(c+d)": (1, ["a", "b", "c", "d", "a:c", "a:d", "b:c", "b:d"]),
    "y ~ (a + b:c + d)^2": (1, ["a", "d", "a:d", "b:c", "a:b:c", "b:c:d"]),
    # the intercept: the last 1 or 0 met wins, with the meaning flipped on the right of '-'
    "y ~ 1 + 0 + a": (0, ["a"]),
    "y ~ 0 + a + 1": (1, ["a"]),
    "y ~ (a + 0)*b": (0, ["a", "b", "a:b"]),
    "y ~ b*(a - 1)": (0, ["b", "a", "b:a"]),
    "y ~ (a - 1)^2": (0, ["a"]),
    "y ~ a - (1 + b)": (0, ["a"]),
    "y ~ a - (0 + b)": (1, ["a"]),
    "y ~ -a + b": (1, ["b"]),
    "y ~ -(a + 1) + b": (0, ["b"]),
    "y ~ a - -1": (1, ["a"]),
    "y ~ a %in% 0": (0, ["a"]),
    "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex": (
        1, ["ns(year, 2)", "sex", "age", "basePro", "ns(year, 2):sex", "sex:age", "sex:basePro"],
    ),
    "y ~ I(obstime^2) + ns(year, df=2) + I(x>0) + poly(x,2)": (
        1, ["I(obstime^2)", "ns(year, df = 2)", "I(x > 0)", "poly(x, 2)"],
    ),
    "y ~ I(x/2) + I(x*1e6) + I(x*0.0001) + I(x/100000) + I(x^(1/3)) + I(x - (1 - 2))": (
        1, ["I(x/2)", "I(x * 1e+06)", "I(x * 1e-04)", "I(x/1e+05)", "I(x^(1/3))", "I(x - (1 - 2))"],
    ),
    "y ~ obstime + (obstime + I(obstime^2)):drug": (1, ["obstime", "obstime:drug", "I(obstime^2):drug"]),
    "y ~ log(x, base = 2) + `my var` + I(-x) + I(x != 1) + I(x^-1)": (
        1, ["log(x, base = 2)", "`my var`", "I(-x)", "I(x != 1)", "I(x^-1)"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("formula", list(R_TERMS))
def test_terms_match_r(formula: str) -> None:
    expected_intercept, expected_labels = R_TERMS[formula]
    assert labels(formula) == expected_labels
    assert intercept(formula) == bool(expected_intercept)


@pytest.mark.parametrize(
    ("formula", "expected"),
    [("y ~ a + 1", True), ("y ~ a", True), ("y ~ 1", True), ("y ~ 0", False), ("y ~ -1", False),
     ("y ~ a + 0 - 0", True), ("y ~ 0 + 1", True), ("y ~ 1 - 1 + a", False), ("y ~ a + -1", False)],
)  # fmt: skip
def test_intercept_rules(formula: str, expected: bool) -> None:
    assert intercept(formula) is expected


def test_chapter_formula_term_order() -> None:
    # the brief's example: degree first, variables by first appearance (sex before age in sex:age)
    parsed = parse_formula("log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex")
    assert parsed.response == Call("log", (Name("serBilir"),))
    assert [len(t.variables) for t in parsed.fixed.terms] == [1, 1, 1, 1, 2, 2, 2]
    assert parsed.fixed.variables == (
        Call("ns", (Name("year"), Num(2.0))),
        Name("sex"),
        Name("age"),
        Name("basePro"),
    )


def test_deparse_matches_r() -> None:
    assert deparse(parse("I(obstime^2)")) == "I(obstime^2)"
    assert deparse(parse("ns(year,df=2)")) == "ns(year, df = 2)"
    assert deparse(parse("ns( year , 2 )")) == "ns(year, 2)"
    assert deparse(parse("log(serBilir)")) == "log(serBilir)"
    assert deparse(parse("a:b")) == "a:b"
    assert deparse(parse("`a b`")) == "`a b`"
    assert deparse(parse('I(x=="a")')) == 'I(x == "a")'
    assert deparse(parse("~ obstime | patient")) == "~obstime | patient"


def test_power_is_right_associative_and_binds_tighter_than_unary_minus() -> None:
    # R: -2^2 == -4 and 2^3^2 == 2^9
    assert parse("-x^2") == Unary("-", BinOp("^", Name("x"), Num(2.0)))
    assert parse("a^b^c") == BinOp("^", Name("a"), BinOp("^", Name("b"), Name("c")))
    assert parse("a**2") == parse("a^2")


def test_precedence_follows_r() -> None:
    # R's ?Syntax: ':' > '%in%' > '* /' > '+ -'
    assert parse("a + b:c") == BinOp("+", Name("a"), BinOp(":", Name("b"), Name("c")))
    assert parse("a * b:c") == BinOp("*", Name("a"), BinOp(":", Name("b"), Name("c")))
    assert parse("a:b %in% c") == BinOp("%in%", BinOp(":", Name("a"), Name("b")), Name("c"))
    assert parse("a * b %in% c") == BinOp("*", Name("a"), BinOp("%in%", Name("b"), Name("c")))
    assert parse("a * b / c") == BinOp("/", BinOp("*", Name("a"), Name("b")), Name("c"))
    assert parse("a - b + c") == BinOp("+", BinOp("-", Name("a"), Name("b")), Name("c"))


def test_literals_and_names() -> None:
    assert parse("1e-3") == Num(0.001)
    assert parse("2L") == Num(2.0)
    assert parse("'x'") == Str("x") == parse('"x"')
    assert parse("x.1_y") == Name("x.1_y")
    assert parse("(a)") == Paren(Name("a"))
    assert names_in(parse("log(y) ~ ns(x, df = k) + x:z")) == ["y", "x", "k", "z"]
    assert [t.kind for t in tokenize("a %in% b")] == ["name", "op", "name"]


# ------------------------------------------------------------------------------------------ random terms
def test_random_terms() -> None:
    p = parse_formula("y ~ x + (x | g)")
    assert [t.name for t in p.fixed.terms] == ["x"]
    (r,) = p.random
    assert r.grouping == (("g",),) and not r.uncorrelated
    assert r.effects == TermList(True, parse_formula("y ~ x").fixed.terms)

    (r,) = parse_formula("y ~ (x || g)").random
    assert r.uncorrelated and r.grouping == (("g",),) and r.effects.intercept

    (r,) = parse_formula("y ~ (0 + x | g)").random
    assert not r.effects.intercept and [t.name for t in r.effects.terms] == ["x"]

    (r,) = parse_formula("y ~ 1 + (1 | a/b)").random
    assert r.grouping == (("a",), ("a", "b"))
    assert not r.effects.terms and r.effects.intercept

    (r,) = parse_formula("y ~ (1 | a/b/c)").random
    assert r.grouping == (("a",), ("a", "b"), ("a", "b", "c"))

    (r,) = parse_formula("y ~ (1 | a:b)").random
    assert r.grouping == (("a", "b"),)

    p = parse_formula("y ~ x + (1|a) + (1|b) - 1")
    assert [r.grouping for r in p.random] == [(("a",),), (("b",),)]
    assert not p.fixed.intercept and [t.name for t in p.fixed.terms] == ["x"]

    # random terms only: fixed part is the intercept
    p = parse_formula("y ~ (1 | g)")
    assert p.fixed == TermList(True, ())


@pytest.mark.parametrize(
    "formula",
    ["y ~ x + x | g", "y ~ x - (1 | g)", "y ~ (1 | log(g))", "y ~ (1 | a:(b/c))", "y ~ x:(1 | g)"],
)
def test_bad_random_terms(formula: str) -> None:
    with pytest.raises(FormulaError):
        parse_formula(formula)


def test_nlme_random_and_one_sided() -> None:
    effects, grouping = parse_nlme_random("~ obstime | patient")
    assert effects == Name("obstime") and grouping == Name("patient")
    assert parse_rhs("~ obstime") == Name("obstime")
    assert parse_rhs("obstime") == Name("obstime")
    with pytest.raises(FormulaError):
        parse_rhs("y ~ obstime")
    with pytest.raises(FormulaError):
        parse_nlme_random("~ obstime")


@pytest.mark.parametrize(
    "formula",
    ["y ~", "~", "", "y ~ x +", "y ~ (x", "y ~ x)", "y x", "y ~ 2", "y ~ x^y", "y ~ x > 1", "y ~ .",
     "y ~ f(x,)",
     "y ~ ns(df = 2, x)", "y ~ x $ z"],
)  # fmt: skip
def test_parse_errors(formula: str) -> None:
    with pytest.raises(FormulaError):
        parse_formula(formula)


# ------------------------------------------------------------------------------------------ R itself
def _r_terms(formulas: list[str]) -> list[tuple[int, list[str]] | None]:
    """R's (intercept, term labels) of each formula, None where R's terms() fails."""
    code = (
        "fs <- readLines(file('stdin'));"
        "for (f in fs) { t <- tryCatch(terms(as.formula(f)), error = function(e) NULL);"
        "if (is.null(t)) { cat('ERR\\n'); next };"
        "cat(attr(t, 'intercept'), paste(attr(t, 'term.labels'), collapse = '\\t'), sep = '\\t');"
        "cat('\\n') }"
    )
    out = subprocess.run(
        ["Rscript", "--vanilla", "-e", code],
        input="\n".join(formulas) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        if line == "ERR":
            rows.append(None)
            continue
        icpt, *rest = line.split("\t")
        rows.append((int(icpt), [x for x in rest if x]))
    return rows


@pytest.mark.needs_r
@pytest.mark.skipif(not HAS_R, reason="R (Rscript) is not installed on this machine")
def test_term_labels_agree_with_r() -> None:
    formulas = [
        *R_TERMS,
        "y ~ a*b*c", "y ~ (a+b+c+d)^3", "y ~ a/b/c", "y ~ (a*b)/c", "y ~ a:(b+c)", "y ~ (a/b)^2",
        "y ~ a/b:c", "y ~ a*(b+c) - b", "y ~ (a + b) %in% (c + d)", "y ~ (a+b)^2 %in% c", "y ~ d + c:b - 1",
        "y ~ I(x^2):f + x:f", "y ~ poly(x, 2)*f - f",
    ]  # fmt: skip
    r = _r_terms(formulas)
    assert len(r) == len(formulas)
    ours = [(int(intercept(f)), labels(f)) for f in formulas]
    mismatches = [(f, want, got) for f, want, got in zip(formulas, r, ours, strict=True) if want != got]
    assert not mismatches, json.dumps(mismatches, indent=1)


def _random_formula(rng: random.Random, depth: int = 0) -> tuple[str, set[str]]:
    """R source from the whole grammar (including %in%, ^k and -), fully parenthesised below the top.

    ``A - B`` is only drawn when A has a variable B lacks, so no bracket is empty: R's CrossTerms returns
    nothing for ``(a - a) * b`` (an empty left operand), a quirk not worth reproducing.
    """
    if depth >= 3 or rng.random() < 0.3:
        v = rng.choice(VARS)
        return v, {v}
    op = rng.choice(["+", "*", ":", "/", "%in%", "^", "-"])
    left, lvars = _random_formula(rng, depth + 1)
    if op == "^":
        return f"({left})^{rng.randint(2, 3)}", lvars
    right, rvars = _random_formula(rng, depth + 1)
    if op == "-" and lvars <= rvars:
        op = "+"
    text = f"({left}) {op} ({right})" if depth else f"{left} {op} {right}"
    return text, lvars | rvars


@pytest.mark.needs_r
@pytest.mark.skipif(not HAS_R, reason="R (Rscript) is not installed on this machine")
def test_random_formulas_agree_with_r() -> None:
    rng = random.Random(20240611)
    formulas = []
    for _ in range(300):
        suffix = rng.choice(["", "", " - 1", " + 0", " - 0"])
        formulas.append("y ~ " + _random_formula(rng)[0] + suffix)
    r = _r_terms(formulas)
    assert None not in r
    ours = [(int(intercept(f)), labels(f)) for f in formulas]
    mismatches = [(f, w, g) for f, w, g in zip(formulas, r, ours, strict=True) if w != g]
    assert not mismatches, json.dumps(mismatches[:10], indent=1)


# ------------------------------------------------------------------------------------------ property tests
# A formula tree: a variable name, or (op, left, right) with op in + * : /, or ("^2", inner).
VARS = "abcde"


def _trees(allow_nested_slash_rhs: bool = True) -> st.SearchStrategy:
    leaf = st.sampled_from(VARS)

    def extend(children: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(
            st.tuples(st.sampled_from(["+", "*", ":", "/"]), children, children),
            st.tuples(st.just("^2"), children),
        )

    tree = st.recursive(leaf, extend, max_leaves=6)
    if not allow_nested_slash_rhs:
        tree = tree.map(_distinct_leaves).filter(_no_slash_in_slash_rhs)
    return tree


def _distinct_leaves(t, names=None):
    """The same shape with every leaf a new variable: formulae mishandles operands that share variables
    (it reads (a + b)*(a + b) as a + b, where R and hierlmm give a + b + a:b)."""
    names = iter("abcdefghijklmnop") if names is None else names
    if isinstance(t, str):
        return next(names)
    return (t[0], *(_distinct_leaves(c, names) for c in t[1:]))


def _only_sums_and_colons(t) -> bool:
    return isinstance(t, str) or (t[0] in ("+", ":") and all(_only_sums_and_colons(c) for c in t[1:]))


def _no_slash_in_slash_rhs(t) -> bool:
    """formulae's A/B is wrong when B holds *, / or ^ (R and hierlmm: (a+b)/(c*d) has a:b:c:d, formulae
    drops it; (a/b)/(c/d) has a:b:c:d, formulae gives a:b:d): such shapes are left to the R tests."""
    if isinstance(t, str):
        return True
    if t[0] == "/" and not _only_sums_and_colons(t[2]):
        return False
    return all(_no_slash_in_slash_rhs(c) for c in t[1:])


_PREC = {"+": 1, "*": 2, "/": 2, ":": 4, "^2": 5}


def _render_r(t, extra: list[bool]) -> str:
    """R source with R's minimal parentheses (plus some redundant ones drawn by hypothesis)."""
    if isinstance(t, str):
        return t
    op = t[0]

    def child(c, right: bool) -> str:
        text = _render_r(c, extra)
        if isinstance(c, str):
            return text
        p_child, p_op = _PREC[c[0]], _PREC[op]
        needed = p_child < p_op or (right and p_child == p_op and op != "+") or op == "^2"
        wrap = needed or (extra.pop() if extra else False)
        return f"({text})" if wrap else text

    if op == "^2":
        return f"{child(t[1], False)}^2"
    sep = ":" if op == ":" else f" {op} "
    return f"{child(t[1], False)}{sep}{child(t[2], True)}"


def _render_formulae(t) -> str:
    """formulae source, fully parenthesised (formulae's precedence need not match R's)."""
    if isinstance(t, str):
        return t
    if t[0] == "^2":
        return f"({_render_formulae(t[1])})**2"
    return f"({_render_formulae(t[1])}) {t[0]} ({_render_formulae(t[2])})"


def _term_sets(formula: str) -> set[frozenset[str]]:
    parsed = parse_formula(formula)
    sets = {frozenset(deparse(v) for v in t.variables) for t in parsed.fixed.terms}
    return sets | ({frozenset()} if parsed.fixed.intercept else set())


def _formulae_term_sets(formula: str) -> set[frozenset[str]]:
    logger = logging.getLogger("formulae")
    level = logger.level
    logger.setLevel(logging.ERROR)  # formulae logs a note for x**2 on a single variable
    try:
        desc = formulae.model_description(formula)
    finally:
        logger.setLevel(level)
    out = set()
    for term in desc.common_terms:
        if type(term).__name__ == "Intercept":
            out.add(frozenset())
        else:
            out.add(frozenset(c.name for c in term.components))
    return out


@PROPERTY
@given(tree=_trees(), extra=st.lists(st.booleans(), max_size=8), minus_one=st.booleans())
def test_deparse_parse_round_trip(tree, extra: list[bool], minus_one: bool) -> None:
    source = "y ~ " + _render_r(tree, extra) + (" - 1" if minus_one else "")
    parsed = parse_formula(source)
    # the expression tree survives deparse -> parse
    assert parse(deparse(parse(source))) == parse(source)
    # the term list survives being printed as R would and read back: same intercept, same terms in the same
    # order. Inside a term, variables follow their first appearance in the text read, so (as in R, where
    # `(a + b):b` gives `b + a:b` but `b + a:b` gives `b + b:a`) their order may change once, then is stable.
    again = parse_formula("y ~ " + parsed.fixed.deparse()).fixed
    assert again.intercept == parsed.fixed.intercept
    assert [frozenset(t.variables) for t in again.terms] == [
        frozenset(t.variables) for t in parsed.fixed.terms
    ]
    assert parse_formula("y ~ " + again.deparse()).fixed == again
    assert parsed.fixed.intercept is not minus_one


@PROPERTY
@given(
    tree=_trees(allow_nested_slash_rhs=False),
    extra=st.lists(st.booleans(), max_size=8),
    minus_one=st.booleans(),
)
def test_term_sets_agree_with_formulae(tree, extra: list[bool], minus_one: bool) -> None:
    ours = _term_sets("y ~ " + _render_r(tree, extra) + (" - 1" if minus_one else ""))
    theirs = _formulae_term_sets("y ~ " + _render_formulae(tree) + (" - 1" if minus_one else ""))
    assert ours == theirs


@PROPERTY
@given(k=st.integers(1, 5), order=st.integers(1, 5), data=st.data())
def test_term_counts_from_first_principles(k: int, order: int, data: st.DataObject) -> None:
    names = data.draw(st.permutations(VARS))[:k]
    # a*b*...: every non-empty subset, 2^k - 1 terms, ordered by degree then by first appearance
    crossed = labels("y ~ " + " * ".join(names))
    assert len(crossed) == 2**k - 1
    assert set(crossed) == {":".join(c) for d in range(1, k + 1) for c in combinations(names, d)}
    degrees = [label.count(":") for label in crossed]
    assert degrees == sorted(degrees)
    # (a+b+...)^m: subsets of size <= m
    power = labels(f"y ~ ({' + '.join(names)})^{order}")
    assert len(power) == sum(math.comb(k, d) for d in range(1, min(order, k) + 1))
    # a/b/c/...: one term per prefix
    nested = labels("y ~ " + " / ".join(names))
    assert nested == [":".join(names[: i + 1]) for i in range(k)]
    # a:b:... is one term; (a+b+...):z is k terms
    assert len(labels("y ~ " + ":".join(names))) == 1
    assert len(labels(f"y ~ ({' + '.join(names)}):z")) == k
    # a*b*... - 1 keeps all terms and drops the intercept
    assert labels("y ~ " + " * ".join(names) + " - 1") == crossed and not intercept(
        "y ~ " + "*".join(names) + "-1"
    )
