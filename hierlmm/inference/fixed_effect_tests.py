"""F tests of the fixed effects (chapter 3.10): nlme's ``anova(fit)`` tables, joint tests of terms, and contrasts.

One function, :func:`anova`, for every ML/REML fit (nested or crossed random effects, the marginal model, serially
correlated or heteroscedastic errors), with three choices of denominator degrees of freedom: nlme's rule, and
lmerTest's Satterthwaite and pbkrtest's Kenward-Roger approximations
(:mod:`hierlmm.engines.reml.denominator_df`). A Bayesian fit answers the same questions with the posterior of the
contrast (:func:`hierlmm.contrast`).

Notation
--------
Every test is of ``L beta = 0`` with ``F = (L beta)'(L C L')^-1 (L beta) / q``, ``q`` the rank of ``L`` and ``C``
the covariance of ``beta`` (nlme's ``vcov``, with the ``N / (N - p)`` correction of an ML fit, for ``ddf="nlme"``;
``Phi = (X'V^-1X)^-1`` for the other two; Kenward and Roger's scaled statistic uses the adjusted ``Phi_A``).

- ``type="sequential"`` (nlme's default, R's type I): the rows of term ``t`` are the rows of ``U`` for its columns,
  ``U`` the upper Cholesky factor of ``C^-1`` (columns in the model's order): each term adjusted for the terms before
  it, so the table depends on the order of the terms;
- ``type="marginal"`` (nlme's ``type = "marginal"``): the rows of the identity for the term's columns, each term
  adjusted for all the others (with interactions, a main effect is then tested at the reference level of the other
  factor: read such rows with care);
- ``terms=[...]``: one joint test of several terms' coefficients (nlme's ``Terms =``);
- ``L=``: a contrast matrix, rows = hypotheses, columns = fixed effects by name (nlme's ``L =``).

nlme's denominator degrees of freedom are those of the grouping level where a term is estimated; a joint test must
involve terms of one level (as nlme, which stops otherwise). lmerTest's own type I hypotheses come from ``X'X``
rather than ``C^-1``, so its sequential F values differ slightly from nlme's (and hierlmm's); its marginal ones agree.
lmerTest's ``anova(ddf = "Kenward-Roger")`` scales the unadjusted Wald statistic; hierlmm reports pbkrtest's
``KRmodcomp`` statistic (the adjusted one), which is Kenward and Roger's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.engines.fit_result import BayesResult
from hierlmm.engines.reml.denominator_df import FTest, f_test
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, NotSupportedError, SpecError
from hierlmm.inference.hypotheses import contrast_matrix

TYPES = ("sequential", "marginal")

_HEADINGS = {
    "nlme": "denominator DF by nlme's between/within rule",
    "satterthwaite": "Satterthwaite's denominator DF (lmerTest)",
    "kenward-roger": "Kenward-Roger's scaled F and denominator DF (pbkrtest)",
}


def term_labels(fit: REMLResult) -> dict[int, str]:
    """The fixed part's terms as R labels them, keyed by the design's ``assign`` value (0 = ``"(Intercept)"``)."""
    names = {0: "(Intercept)"}
    names.update({t: term.name for t, term in enumerate(fit.design.spec.fixed.terms, start=1)})
    return {t: names[t] for t in dict.fromkeys(fit.design.assign)}


def _check_fit(fit: Any) -> REMLResult:
    if isinstance(fit, BayesResult):
        raise NotSupportedError("F tests need a maximum-likelihood fit: a posterior answers the same question with "
                                "the posterior of the contrast.", given=type(fit).__name__,
                                fix="Use hierlmm.contrast(bayes_fit, L) (its interval and the posterior probability "
                                    "of its sign), or fit the model by REML for anova().")
    if not isinstance(fit, REMLResult):
        raise DataError("anova() takes a fit made by hierlmm.fit (REML or ML).", given=type(fit).__name__,
                        fix="Pass the result of hierlmm.fit(...).")
    return fit


def _covariance(fit: REMLResult, ddf: str) -> tuple[np.ndarray, np.ndarray]:
    """``beta`` and the covariance the hypotheses are built from (module notation)."""
    if ddf == "nlme":
        return fit.beta, fit.cov_beta
    info = fit.parameter_information
    return info.beta, info.Phi


def _nlme_denominator(fit: REMLResult, columns: np.ndarray, what: str) -> float:
    """nlme's DF of a test of these columns: the columns' common DF (nlme refuses a test across levels)."""
    df = np.unique(np.asarray(fit.df, dtype=float)[columns])
    if df.size > 1:
        raise SpecError(f"{what} involves fixed effects estimated at different grouping levels (nlme's DF "
                        f"{', '.join(f'{d:g}' for d in df)}): nlme's rule gives no single denominator DF.",
                        given=[fit.design.fixef_names[j] for j in columns],
                        fix="Test the levels separately, or use ddf='satterthwaite' or ddf='kenward-roger'.")
    return float(df[0])


def _nlme_term_denominator(fit: REMLResult, chosen: list[int], what: str) -> float:
    """nlme's DF of a joint test of terms: their common term DF (nlme refuses a test across levels)."""
    df = sorted({fit.term_df[t] for t in chosen})
    if len(df) > 1:
        labels = term_labels(fit)
        raise SpecError(f"{what} involves terms estimated at different grouping levels (nlme's DF "
                        f"{', '.join(f'{d:g}' for d in df)}): nlme's rule gives no single denominator DF.",
                        given=[labels[t] for t in chosen],
                        fix="Test the levels separately, or use ddf='satterthwaite' or ddf='kenward-roger'.")
    return float(df[0])


def _table(tests: list[FTest], index: list[str], ddf: str, heading: str) -> pd.DataFrame:
    table = pd.DataFrame({"numDF": [t.numDF for t in tests], "denDF": [t.denDF for t in tests],
                          "F-value": [t.F for t in tests], "p-value": [t.p for t in tests]},
                         index=pd.Index(index, name="term"))
    if ddf == "nlme":
        table["denDF"] = table["denDF"].astype(int)
    if ddf == "kenward-roger":
        table["F-scaling"] = [t.scale for t in tests]
    table.attrs["heading"] = heading
    table.attrs["ddf"] = ddf
    return table


def anova(fit: Any, type: str | None = None, ddf: str = "nlme", *,
          terms: Sequence[str] | None = None, L: Any = None) -> pd.DataFrame:
    """F tests of the fixed effects of an ML/REML fit: nlme's ``anova(fit, type =, Terms =, L =)``.

    Parameters
    ----------
    fit
        Any ML/REML fit (:class:`~hierlmm.engines.fit_result.FitResult`).
    type
        ``"sequential"`` (default, nlme's) or ``"marginal"`` (module notation); a ``terms``/``L`` test has none.
    ddf
        ``"nlme"`` (default: nlme's between/within rule), ``"satterthwaite"`` (lmerTest) or ``"kenward-roger"``
        (pbkrtest; REML fits only).
    terms
        Term labels (as the table's index names them) for one joint F test (nlme's ``Terms =``).
    L
        A contrast matrix for one F test (nlme's ``L =``): a DataFrame or ``{hypothesis: {effect: weight}}`` naming
        fixed effects, or an array of p columns.

    Returns
    -------
    pandas.DataFrame
        Indexed by term (or by the test for ``terms``/``L``), with nlme's columns ``numDF``, ``denDF``, ``F-value``,
        ``p-value`` (Kenward-Roger adds ``F-scaling``, its ``lambda``); ``attrs["heading"]`` says what was tested
        and with which DF, ``attrs["L"]`` holds the tested contrast for ``terms``/``L``.

    Examples
    --------
    >>> import hierlmm
    >>> pbc2 = hierlmm.datasets.load("pbc2")
    >>> fit = hierlmm.fit("log(serBilir) ~ year * sex + (year | id)", pbc2)
    >>> table = hierlmm.anova(fit, type="marginal")
    >>> list(table.index)
    ['(Intercept)', 'year', 'sex', 'year:sex']
    >>> list(table.columns)
    ['numDF', 'denDF', 'F-value', 'p-value']
    """
    fit = _check_fit(fit)
    fit.check_ddf(ddf)
    if type is not None and (terms is not None or L is not None):
        raise SpecError("type= chooses how the rows of a per-term table are adjusted; a terms= or L= test is one "
                        "test of the hypotheses given.", given={"type": type, "terms": terms, "L": L is not None},
                        fix="Drop type= (or drop terms=/L= for the per-term table).")
    type = type or "sequential"
    if type not in TYPES:
        raise SpecError("Unknown type of anova table.", given=type,
                        fix="Use type='sequential' (each term after those before it) or type='marginal' (each term "
                            "after all the others).")
    if terms is not None and L is not None:
        raise SpecError("Give terms= or L=, not both.", given={"terms": terms, "L": "given"},
                        fix="Test the terms with terms=, or write them as rows of L.")
    beta, cov = _covariance(fit, ddf)
    info = fit.parameter_information if ddf != "nlme" else None
    assign = np.asarray(fit.design.assign)
    labels = term_labels(fit)
    heading = _HEADINGS[ddf]
    if L is not None or terms is not None:
        if L is not None:
            matrix, rows = contrast_matrix(L, fit.design.fixef_names)
            label, index = "F-test for linear combination(s)", "L"
            frame = pd.DataFrame(matrix, index=rows, columns=fit.design.fixef_names)
        else:
            if isinstance(terms, str) or not len(terms):
                raise SpecError("terms= takes a list of term labels.", given=terms,
                                fix=f"For example terms={[labels[t] for t in list(labels)[1:3]]!r}.")
            if len(set(terms)) != len(terms):
                raise SpecError("A term is named twice in terms=.", given=list(terms), fix="Name each term once.")
            unknown = [t for t in terms if t not in labels.values()]
            if unknown:
                raise SpecError(f"Unknown term(s): {', '.join(map(str, unknown))}.", given=list(terms),
                                fix=f"Use labels among: {', '.join(labels.values())}.")
            chosen = [t for t, name in labels.items() if name in terms]
            columns = np.flatnonzero(np.isin(assign, chosen))
            matrix = np.eye(fit.design.p)[columns]
            label, index = f"F-test for: {', '.join(labels[t] for t in chosen)}", ", ".join(labels[t] for t in chosen)
            frame = pd.DataFrame(matrix, index=[fit.design.fixef_names[j] for j in columns],
                                 columns=fit.design.fixef_names)
        denominator = None
        if ddf == "nlme":  # nlme: a Terms= test takes its terms' DF (fixDF$terms), an L= test its columns' (fixDF$X)
            denominator = (_nlme_term_denominator(fit, chosen, label) if terms is not None else
                           _nlme_denominator(fit, np.flatnonzero(np.any(matrix != 0, axis=0)), label))
        test = f_test(matrix, beta, cov, ddf, denominator=denominator, information=info)
        table = _table([test], [index], ddf, f"{label}; {heading}")
        table.attrs["L"] = frame
        return table
    if type == "sequential":
        U = np.linalg.cholesky(np.linalg.inv(cov)).T  # upper: U'U = C^-1
    tests, index = [], []
    for t, name in labels.items():
        columns = np.flatnonzero(assign == t)
        matrix = U[columns] if type == "sequential" else np.eye(fit.design.p)[columns]
        test = f_test(matrix, beta, cov, ddf, denominator=fit.term_df[t] if ddf == "nlme" else None,
                      information=info)
        tests.append(test)
        index.append(name)
    return _table(tests, index, ddf, f"{type.capitalize()} F tests; {heading}")
