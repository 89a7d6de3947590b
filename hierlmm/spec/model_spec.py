"""Model specifications: one frozen :class:`ModelSpec` from lme4-style formulas, nlme-style arguments or TOML.

Stage 1 of the pipeline ``spec -> design -> model -> fit``. A spec is pure syntax: it knows the response, the
fixed-effects terms and one :class:`RandomTerm` per grouping factor, but nothing about data.

Examples
--------
The same model three ways (they compare equal)::

    ModelSpec.from_formula("CD4 ~ obstime + obstime:drug + (obstime | patient)")
    ModelSpec.from_nlme(fixed="CD4 ~ obstime + obstime:drug", random="~ obstime | patient")
    ModelSpec.from_nlme(fixed="CD4 ~ obstime + obstime:drug", random={"patient": pdSymm("~ obstime")})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from hierlmm.errors import FormulaError, SpecError
from hierlmm.formula.expression import Expr, deparse
from hierlmm.formula.terms import (
    RandomTermSyntax,
    TermList,
    expand_terms,
    parse_formula,
    parse_nlme_random,
    parse_rhs,
    random_term,
)

Structure = Literal["pdSymm", "pdDiag", "pdIdent", "pdCompSymm", "pdBlocked"]
Method = Literal["REML", "ML"]
STRUCTURES: tuple[str, ...] = ("pdSymm", "pdDiag", "pdIdent", "pdCompSymm", "pdBlocked")


@dataclass(frozen=True)
class PdMat:
    """An nlme positive-definite matrix class applied to a one-sided formula (``pdDiag("~ obstime")``).

    ``pdBlocked`` has no formula of its own: its ``parts`` are the pdMats of its diagonal blocks.
    """

    structure: Structure
    formula: str
    parts: tuple[PdMat, ...] = ()


def pdSymm(formula: str) -> PdMat:  # nlme's name
    """General positive-definite D (nlme's ``pdSymm``/``pdLogChol``; lme4's ``(x | g)``)."""
    return PdMat("pdSymm", formula)


def pdDiag(formula: str) -> PdMat:  # nlme's name
    """Diagonal D: uncorrelated random effects (nlme's ``pdDiag``; lme4's ``(x || g)``)."""
    return PdMat("pdDiag", formula)


def pdIdent(formula: str) -> PdMat:  # nlme's name
    """A multiple of the identity: uncorrelated random effects with one common variance (nlme's ``pdIdent``)."""
    return PdMat("pdIdent", formula)


def pdCompSymm(formula: str) -> PdMat:  # nlme's name
    """Compound symmetry: one common variance and one common correlation (nlme's ``pdCompSymm``)."""
    return PdMat("pdCompSymm", formula)


def pdBlocked(parts: list[PdMat] | tuple[PdMat, ...]) -> PdMat:  # nlme's name
    """Block-diagonal D, each block with its own structure (nlme's ``pdBlocked(list(pdSymm(~ 1), ...))``; lme4's
    ``(1 | g) + (0 + x | g)``): effects in different blocks are uncorrelated."""
    parts = tuple(parts) if isinstance(parts, (list, tuple)) else ()
    bad = [p for p in parts if not isinstance(p, PdMat) or p.structure == "pdBlocked"]
    if len(parts) < 2 or bad:
        raise SpecError("pdBlocked takes a list of two or more pdMats (not pdBlocked themselves).",
                        given=repr(parts or bad), fix="Use pdBlocked([pdSymm('~ obstime'), pdDiag('~ 0 + x')]).")
    return PdMat("pdBlocked", " + ".join(p.formula for p in parts), parts)


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects block: effects ``b`` for each level of one grouping factor, with covariance ``D``.

    Attributes
    ----------
    effects
        The random-effects terms (columns of Z), e.g. intercept and ``obstime``.
    grouping
        The grouping factor: one column, or an interaction of columns (``("id", "eye")`` is ``id:eye``, outer
        factor first; ``(1 | id/eye)`` gives ``("id",)`` and ``("id", "eye")``).
    structure
        ``"pdSymm"`` (general D), ``"pdDiag"`` (diagonal), ``"pdIdent"`` (``s^2 I``), ``"pdCompSymm"`` (compound
        symmetry) or ``"pdBlocked"`` (block diagonal: see ``parts``); :mod:`hierlmm.structures.random_effects` has the
        maths.
    parts
        ``pdBlocked`` only: each diagonal block's structure and effects, in order (``effects`` is their union).
    """

    effects: TermList
    grouping: tuple[str, ...]
    structure: Structure = "pdSymm"
    parts: tuple[tuple[Structure, TermList], ...] = ()

    @property
    def factor(self) -> str:
        """The grouping factor's name, outer factor first (``"id:eye"``; lme4 prints nested factors inner first,
        ``eye:id``, and nlme as ``id/eye``)."""
        return ":".join(self.grouping)

    def deparse(self) -> str:
        """lme4 syntax for this block, e.g. ``"(obstime | patient)"``."""
        if self.structure == "pdBlocked":
            return " + ".join(RandomTerm(e, self.grouping, st).deparse() for st, e in self.parts)
        bar = "||" if self.structure == "pdDiag" else "|"
        if self.structure in ("pdIdent", "pdCompSymm"):  # no lme4 spelling: nlme's, as the formulae would read it
            return f"{self.structure}({self.effects.deparse()} | {self.factor})"
        return f"({self.effects.deparse()} {bar} {self.factor})"


@dataclass(frozen=True)
class ModelSpec:
    """A linear mixed model, as syntax.

    Attributes
    ----------
    response
        The response expression (``CD4``, ``log(serBilir)``).
    fixed
        Fixed-effects terms, in R's order.
    random
        One block per grouping factor; nested groupings appear outermost first.
    method
        Default estimation method for the ML/REML engine.
    """

    response: Expr
    fixed: TermList
    random: tuple[RandomTerm, ...] = ()
    method: Method = "REML"

    @property
    def formula(self) -> str:
        """The whole model in lme4 syntax (canonical: what R's ``deparse`` would print)."""
        parts = [self.fixed.deparse(), *(r.deparse() for r in self.random)]
        return f"{deparse(self.response)} ~ {' + '.join(parts)}"

    @property
    def fixed_formula(self) -> str:
        """The fixed part as nlme prints it (``CD4 ~ obstime + obstime:drug``)."""
        return f"{deparse(self.response)} ~ {self.fixed.deparse()}"

    # ----- front ends -------------------------------------------------------------------------------------------
    @classmethod
    def from_formula(cls, formula: str, *, method: str = "REML") -> ModelSpec:
        """lme4/brms style: ``"y ~ x + (x | g)"``, ``(1 | g)``, ``(x || g)``, ``(1 | g1/g2)``, crossed terms."""
        parsed = parse_formula(formula)
        blocks: list[RandomTerm] = []
        for syntax in parsed.random:
            blocks.extend(_blocks(syntax, "pdDiag" if syntax.uncorrelated else "pdSymm"))
        assert parsed.response is not None
        return cls(parsed.response, parsed.fixed, _check_blocks(_merge_blocks(blocks, formula), formula),
                   _method(method))

    @classmethod
    def from_nlme(
        cls,
        fixed: str,
        random: str | PdMat | Mapping[str, str | PdMat] | None = None,
        *,
        method: str = "REML",
    ) -> ModelSpec:
        """nlme style: ``fixed="y ~ x"``, ``random="~ x | g"`` or ``random={"g": pdDiag("~ x")}``.

        A mapping lists grouping factors outermost first and nests them, as nlme's ``random = list(...)`` does:
        ``{"id": pdSymm("~ years"), "eye": pdSymm("~ 1")}`` is ``eye`` within ``id``.
        """
        parsed = parse_formula(fixed)
        if parsed.random:
            raise SpecError(
                "The nlme-style 'fixed' formula contains random-effects terms.",
                given=fixed,
                fix="Move them to 'random', or use ModelSpec.from_formula for lme4 syntax.",
            )
        blocks: list[RandomTerm] = []
        if isinstance(random, (str, PdMat)):
            pd = random if isinstance(random, PdMat) else PdMat("pdSymm", random)
            if pd.structure == "pdBlocked":
                raise SpecError("A pdBlocked random part needs its grouping factor as the key of a dict.",
                                given=repr(pd), fix="Use random={'patient': pdBlocked([pdSymm('~ 1'), "
                                "pdSymm('~ 0 + obstime')])}.")
            effects, grouping = parse_nlme_random(pd.formula)
            blocks.extend(_blocks(random_term(effects, grouping, False, pd.formula), _structure(pd.structure)))
        elif isinstance(random, Mapping):
            outer: tuple[str, ...] = ()
            for factor, value in random.items():
                if not isinstance(factor, str) or not factor.strip():
                    raise SpecError(
                        "The keys of 'random' must be grouping column names.",
                        given=repr(factor),
                        fix="Use random={'patient': pdDiag('~ obstime')}.",
                    )
                pd = value if isinstance(value, PdMat) else PdMat("pdSymm", value)
                grouping = outer + tuple(factor.split(":"))
                if pd.structure == "pdBlocked":
                    parts = tuple((_structure(p.structure), expand_terms(parse_rhs(p.formula), p.formula))
                                  for p in pd.parts)
                    blocks.append(_blocked(grouping, parts))
                else:
                    rhs = parse_rhs(pd.formula)
                    blocks.append(RandomTerm(expand_terms(rhs, pd.formula), grouping, _structure(pd.structure)))
                outer = grouping
        elif random is not None:
            raise SpecError(
                "'random' must be a formula string, a pdMat such as pdDiag('~ x | g'), or a dict.",
                given=repr(random),
                fix="Use random='~ obstime | patient' or random={'patient': pdDiag('~ obstime')}.",
            )
        return cls(parsed.response, parsed.fixed, _check_blocks(tuple(blocks), fixed), _method(method))  # type: ignore[arg-type]

    def with_method(self, method: str) -> ModelSpec:
        """A copy with another default estimation method."""
        return replace(self, method=_method(method))


def _blocks(syntax: RandomTermSyntax, structure: Structure) -> list[RandomTerm]:
    return [RandomTerm(syntax.effects, grouping, structure) for grouping in syntax.grouping]


def _structure(name: str) -> Structure:
    if name not in STRUCTURES:
        raise SpecError(f"Unknown covariance structure {name!r}.", given=name,
                        fix=f"Use one of {', '.join(STRUCTURES)}.")
    return name  # type: ignore[return-value]


def _blocked(grouping: tuple[str, ...], parts: tuple[tuple[Structure, TermList], ...]) -> RandomTerm:
    """One pdBlocked block from its parts; ``effects`` is the union of the parts' terms, in order."""
    terms = tuple(t for _, e in parts for t in e.terms)
    intercept = any(e.intercept for _, e in parts)
    return RandomTerm(TermList(intercept, terms), grouping, "pdBlocked", parts)


def _merge_blocks(blocks: list[RandomTerm], source: str) -> tuple[RandomTerm, ...]:
    """lme4 style: terms on the same grouping factor, ``(1 | g) + (0 + x | g)``, are uncorrelated blocks of one
    pdBlocked D (lme4 keeps them as separate ``reTrms`` blocks: the same model)."""
    out: list[RandomTerm] = []
    for block in blocks:
        k = next((i for i, b in enumerate(out) if b.grouping == block.grouping), None)
        if k is None:
            out.append(block)
            continue
        first = out[k]
        parts = first.parts if first.structure == "pdBlocked" else ((first.structure, first.effects),)
        if block.effects.intercept and any(e.intercept for _, e in parts):
            raise FormulaError(f"The grouping factor {block.factor!r} has a random intercept in two terms.",
                               given=source, fix="Drop the intercept from one of them: (1 | g) + (0 + x | g).")
        out[k] = _blocked(first.grouping, (*parts, (block.structure, block.effects)))
    return tuple(out)


def _method(method: str) -> Method:
    upper = str(method).upper()
    if upper not in ("REML", "ML"):
        raise SpecError("Unknown estimation method.", given=method, fix="Use 'REML' or 'ML'.")
    return upper  # type: ignore[return-value]


def _check_blocks(blocks: tuple[RandomTerm, ...], source: str) -> tuple[RandomTerm, ...]:
    seen: set[tuple[str, ...]] = set()
    for block in blocks:
        if block.grouping in seen:
            raise FormulaError(
                f"The grouping factor {block.factor!r} appears in two random-effects terms.",
                given=source,
                fix="Put all of its random effects in one term, e.g. {'g': pdSymm('~ x')}.",
            )
        if not block.effects.intercept and not block.effects.terms:
            raise FormulaError(
                f"The random-effects term for {block.factor!r} has no effects.", given=source, fix="Use (1 | g)."
            )
        seen.add(block.grouping)
    return blocks


def model_spec(
    formula: str | None = None,
    *,
    fixed: str | None = None,
    random: str | PdMat | Mapping[str, str | PdMat] | None = None,
    method: str = "REML",
) -> ModelSpec:
    """Build a :class:`ModelSpec` from lme4 syntax (``formula``) or nlme syntax (``fixed`` + ``random``)."""
    if formula is not None and fixed is not None:
        raise SpecError(
            "Both 'formula' and 'fixed' were given.",
            given=f"formula={formula!r}, fixed={fixed!r}",
            fix="Use formula= (lme4 style) or fixed= with random= (nlme style), not both.",
        )
    if formula is not None:
        if random is not None:
            return ModelSpec.from_nlme(formula, random, method=method)
        return ModelSpec.from_formula(formula, method=method)
    if fixed is None:
        raise SpecError("No model formula was given.", given=None, fix="Pass formula='y ~ x + (1 | g)'.")
    return ModelSpec.from_nlme(fixed, random, method=method)
