"""Likelihood-ratio tests of nested ML/REML fits with the right null, and nlme's comparison table (chapter 3.10).

:func:`lrt` tests two nested fits (or one fit's only variance component against the linear model without random
effects); :func:`compare_models` gives nlme's ``anova(m1, m2, ...)`` table, one test per consecutive pair.

Notation
--------
Fits ``M0`` (the smaller model, ``k0`` parameters counted as nlme counts them: fixed effects, covariance parameters,
``sigma``) and ``M1`` (``k1 > k0``), log-likelihoods ``l0``, ``l1``; ``df = k1 - k0``; the statistic is
``L.Ratio = 2 (l1 - l0)`` (set to 0 if an optimiser left it slightly negative).

Which likelihood. REML likelihoods of models with different fixed effects are likelihoods of different data (the
residual contrasts ``K'y`` change with ``X``), so they are not comparable: such fits are refitted by ML
(``refit="auto"``, the default), or refused (``refit=False``). Fits by different methods are likewise refitted by ML.
REML (nlme's form, :mod:`hierlmm.engines.reml.profiled_likelihood`) is kept for fits with the same ``X``.

Which null (``null=``):

- ``"chisq"``: ``chi2(df)``, nlme's p-value; right when no parameter is on the boundary of its space under ``H0``
  (fixed effects, a covariance, the marginal model's ``D``, which may be indefinite);
- ``"mixture"``: one random effect added to one block (an existing block with ``q`` effects, or a new grouping
  factor) puts its variance on the boundary, 0: the null is the 50:50 mixture of ``chi2(df - 1)`` and ``chi2(df)``
  (Stram and Lee 1994; with a ``q``-dimensional unstructured ``D``, ``chi2(q)`` and ``chi2(q + 1)``, as the chapter
  uses; ``chi2(0)`` is a point mass at 0), ``p = 1/2 P(chi2(df - 1) >= L) + 1/2 P(chi2(df) >= L)``;
- ``"exact"``: the finite-sample null of Crainiceanu and Ruppert (2004) and Greven et al. (2008) for one independent
  variance component (a random intercept, a new grouping factor's intercept, a pdDiag slope), simulated as R's
  RLRsim does (:mod:`hierlmm.inference.exact_null`) for the model ``m`` with only the tested effect; REML fits with
  the same fixed effects (``exactRLRT(m, mA, m0)``), or one fit against the linear model (``exactRLRT(m)``; ML:
  ``exactLRT(m, lm)``);
- ``"bootstrap"``: parametric bootstrap: ``nsim`` responses ``y*`` drawn from ``M0``
  (:func:`hierlmm.inference.simulation.simulate_fit`), both models refitted to each
  (:func:`hierlmm.engines.reml.refit.refit`), ``p = (1 + #{L* >= L}) / (nsim + 1)``;
- ``"auto"`` (default): ``"mixture"`` where one variance is added, ``"chisq"`` otherwise (fixed effects,
  covariances, the marginal model; several variances added: ``chisq`` is then conservative, and the result says
  so).

The linear model ``y ~ N(X beta, sigma^2 I)`` (the null of :func:`lrt` with one fit): with ``RSS`` its residual sum
of squares, ``l_ML = -N/2 (log(2 pi RSS / N) + 1)`` and nlme's REML form
``l_REML = -(N - p)/2 (log(2 pi RSS / (N - p)) + 1) - 1/2 log|X'X|`` (R's ``logLik(lm, REML = TRUE)``).
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from hierlmm.design.design import Design, RandomEffectsBlock, data_difference
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.reml.correlated_fit import CorrelatedFit
from hierlmm.engines.reml.refit import refit as refit_fit
from hierlmm.engines.reml.result import REMLResult
from hierlmm.errors import DataError, HierlmmError, NotSupportedError, SpecError
from hierlmm.inference.exact_null import exact_p_value, grouped_columns, simulate_null, spectral_null
from hierlmm.inference.simulation import simulate_fit
from hierlmm.structures.random_effects import pieces

NULLS = ("auto", "chisq", "mixture", "exact", "bootstrap")
DEFAULT_NSIM = {"exact": 10_000, "bootstrap": 1000}
_BAYES_FIX = ("Compare Bayesian fits by predictive accuracy: hierlmm.loo(fit) and hierlmm.compare_models(*fits) "
              "on Bayesian fits (PSIS-LOO).")


# ---- the result ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LRTResult:
    """A likelihood-ratio test (module notation).

    Attributes
    ----------
    statistic
        ``L.Ratio = 2 (l1 - l0)``.
    df
        ``k1 - k0``.
    p_value
        Under the null named by ``null``.
    null
        ``"chisq"``, ``"mixture"``, ``"exact"`` or ``"bootstrap"``.
    null_description
        The null in words (e.g. ``"50:50 mixture of chi2(1) and chi2(2)"``).
    loglik, n_params
        ``(l0, l1)`` and ``(k0, k1)`` of the models as compared (after a refit by ML).
    method
        The likelihood compared: ``"REML"`` or ``"ML"``.
    refitted
        Whether REML fits were refitted by ML for the test.
    nsim, seed, simulated
        Simulated nulls: the number of draws used, the seed, the simulated statistics (None otherwise).
    notes
        What the reader should know (why a null was chosen, failed bootstrap refits, ...).
    """

    statistic: float
    df: int
    p_value: float
    null: str
    null_description: str
    loglik: tuple[float, float]
    n_params: tuple[int, int]
    method: str
    refitted: bool
    nsim: int | None = None
    seed: int | None = None
    simulated: np.ndarray | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        refit_text = "; REML fits refitted by ML (see the note)" if self.refitted else ""
        lines = [f"Likelihood-ratio test ({self.method} log-likelihoods{refit_text})",
                 f"  null model:        df {self.n_params[0]:3d}   logLik {self.loglik[0]:.4f}",
                 f"  alternative model: df {self.n_params[1]:3d}   logLik {self.loglik[1]:.4f}",
                 f"  L.Ratio {self.statistic:.4f} on {self.df} df, p-value {self._p_text()}",
                 f"  null distribution: {self.null_description}"]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def _p_text(self) -> str:
        """The p-value as printed: a simulated p of 0 is "< 1/nsim" (what nsim draws can show), not "< 1e-16"."""
        if self.nsim and self.p_value == 0:
            return f"< {1 / self.nsim:.2g} (none of {self.nsim} simulated statistics reaches L.Ratio; RLRsim prints 0)"
        return _format_p(self.p_value)

    def __repr__(self) -> str:
        return (f"<LRTResult L.Ratio={self.statistic:.4f} df={self.df} p={self._p_text().split(' (')[0]} "
                f"null={self.null!r} ({self.method}{', refitted by ML' if self.refitted else ''})>")


def _format_p(p: float) -> str:
    return "NA" if not np.isfinite(p) else ("<1e-16" if p < 1e-16 else f"{p:.4g}")


# ---- how two fits relate ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Relation:
    """How the smaller fit ``small`` sits in the larger ``large`` (see :func:`_relate`)."""

    small: REMLResult
    large: REMLResult
    same_fixed: bool  # same X (REML likelihoods comparable)
    added: tuple[str, ...]  # random effects of `large` that `small` lacks ("factor:effect")
    one_variance: bool  # exactly one variance component added (one effect, or a new one-parameter block)
    tested: tuple[RandomEffectsBlock, tuple[int, ...]] | None  # the added effect's block and columns
    df: int


def _check_fit(fit: Any, where: str) -> REMLResult:
    if isinstance(fit, PosteriorResult):
        raise NotSupportedError("A Bayesian fit has no maximised likelihood, so no likelihood-ratio test.",
                                given=f"{where}: {type(fit).__name__}", fix=_BAYES_FIX)
    if not isinstance(fit, REMLResult):
        raise DataError("Likelihood-ratio tests take ML/REML fits of hierlmm.", given=f"{where}: {type(fit).__name__}",
                        fix="Pass results of hierlmm.fit(...).")
    return fit


def _same_data(a: REMLResult, b: REMLResult, names: tuple[str, str]) -> None:
    """The two fits must be fitted to the same rows and the same response."""
    da, db = a.design, b.design
    difference = data_difference(da, db)
    if difference is not None:
        raise DataError(f"{names[0]} and {names[1]} were fitted to {difference}: likelihoods of different data are "
                        "not comparable.", given={names[0]: da.spec.formula, names[1]: db.spec.formula},
                        fix="Fit both models to the same response on the same rows, e.g. drop the rows with missing "
                            "values in any column either model uses before fitting.")
    if a.kind != b.kind:
        raise SpecError(f"{names[0]} is a {a.kind} model and {names[1]} a {b.kind} one: their parameter spaces differ "
                        "(the marginal model's D may be indefinite).", given=(a.kind, b.kind),
                        fix="Compare fits of one kind (kind='hierarchical' or kind='marginal').")
    errors = (_error_structure(a), _error_structure(b))
    if errors[0] != errors[1]:
        raise NotSupportedError(f"{names[0]} and {names[1]} have different error structures ({errors[0]} and "
                                f"{errors[1]}): lrt compares models that differ in their fixed or random effects.",
                                given=dict(zip(names, errors, strict=True)),
                                fix="Give both fits the same correlation= and weights=.")


def _error_structure(fit: REMLResult) -> str:
    if not isinstance(fit, CorrelatedFit):
        return "independent errors of one variance"
    parts = [f"correlation {fit.structure}" if fit.structure is not None else "",
             f"weights {fit.weights}" if fit.weights is not None else ""]
    return ", ".join(p for p in parts if p) or "independent errors of one variance"


def _fixed_nesting(small: Design, large: Design, names: tuple[str, str]) -> bool:
    """Refuse unless ``col(X_small)`` lies in ``col(X_large)``; whether the two ``X`` are the same up to a change of
    basis of determinant +-1 (then their REML likelihoods are comparable)."""
    Xs, Xl = small.X, large.X
    coef, *_ = np.linalg.lstsq(Xl, Xs, rcond=None)
    residual = np.linalg.norm(Xs - Xl @ coef) / max(np.linalg.norm(Xs), 1e-300)
    if residual > 1e-8:
        extra = [n for n in small.fixef_names if n not in large.fixef_names]
        raise SpecError(f"The models are not nested: the fixed effects of {names[0]} are not within those of "
                        f"{names[1]} (its {extra or 'columns'} are not).",
                        given={names[0]: list(small.fixef_names), names[1]: list(large.fixef_names)},
                        fix="Compare nested models (one's fixed effects a subset of the other's); compare non-nested "
                            "models by their AIC/BIC from ML fits.")
    return small.p == large.p and abs(abs(np.linalg.det(coef)) - 1.0) < 1e-8


def _normalised(block: RandomEffectsBlock) -> list[tuple[str, tuple[str, ...]]]:
    """A block's pieces as (structure, effects), diagonal pieces split into single effects."""
    out = []
    for piece in pieces(block):
        names = block.effect_names[piece.effects]
        if piece.q == 1 or piece.structure == "pdDiag":
            out.extend(("single", (n,)) for n in names)
        else:
            out.append((piece.structure, tuple(names)))
    return out


def _piece_contains(structure: str, effects: tuple[str, ...], inside: list[tuple[str, tuple[str, ...]]]) -> bool:
    """Whether the family of a piece of the larger block (``structure`` on ``effects``) contains the smaller block's
    pieces ``inside`` (effects outside them zero)."""
    if structure == "pdSymm" or len(effects) == 1:
        return True
    if structure == "pdDiag":
        return all(s in ("single", "pdIdent") for s, _ in inside)
    if len(inside) != 1 or set(inside[0][1]) != set(effects):
        return False
    return inside[0][0] == "pdIdent" or inside[0][0] == structure


def _random_nesting(small: Design, large: Design, names: tuple[str, str]) -> tuple[tuple[str, ...], bool,
                                                                                   tuple[RandomEffectsBlock,
                                                                                         tuple[int, ...]] | None]:
    """The random effects ``large`` adds to ``small`` (refusing non-nested ones), whether that is one variance
    component, and the added effect's block and columns when it is one."""
    by_factor = {b.factor: b for b in large.blocks}
    for block in small.blocks:
        other = by_factor.get(block.factor)
        if other is None:
            raise SpecError(f"The models are not nested: {names[0]} has random effects by {block.factor!r}, "
                            f"{names[1]} has none.", given={names[0]: [b.factor for b in small.blocks],
                                                            names[1]: [b.factor for b in large.blocks]},
                            fix="Compare nested models: the larger one keeps every random effect of the smaller.")
        if other.levels != block.levels or not np.array_equal(other.group_index, block.group_index):
            raise DataError(f"The grouping factor {block.factor!r} differs between the models.",
                            given=(block.n_levels, other.n_levels), fix="Fit both models to the same data.")
        missing = [e for e in block.effect_names if e not in other.effect_names]
        if missing:
            raise SpecError(f"The models are not nested: {names[1]} lacks the random effects {missing} of "
                            f"{block.factor!r} that {names[0]} has.",
                            given={names[0]: list(block.effect_names), names[1]: list(other.effect_names)},
                            fix="Compare nested models: the larger one keeps every random effect of the smaller.")
        for j, e in enumerate(block.effect_names):
            if not np.allclose(block.Z[:, j], other.Z[:, other.effect_names.index(e)]):
                raise DataError(f"The random effect {block.factor}:{e} has different values in the two models.",
                                given=e, fix="Build both models from the same data and transformations.")
        small_pieces = _normalised(block)
        for piece in pieces(other):
            structure, effects = piece.structure, tuple(other.effect_names[piece.effects])
            inside = [pc for pc in small_pieces if set(pc[1]) & set(effects)]
            spans = [pc for pc in inside if not set(pc[1]) <= set(effects)]
            if spans or not _piece_contains(structure, effects, inside):
                raise SpecError(f"The models are not nested: the covariance structure of {block.factor!r} in "
                                f"{names[0]} ({block.structure} of {list(block.effect_names)}) is not a special case "
                                f"of {names[1]}'s ({other.structure} of {list(other.effect_names)}).",
                                given=(block.structure, other.structure),
                                fix="Compare nested covariance structures (pdIdent in pdDiag in pdSymm), or compare "
                                    "the models by AIC/BIC.")
    added: list[tuple[RandomEffectsBlock, int]] = []
    small_factors = {b.factor: b for b in small.blocks}
    for block in large.blocks:
        own = small_factors.get(block.factor)
        added += [(block, j) for j, e in enumerate(block.effect_names) if own is None or e not in own.effect_names]
    labels = tuple(f"{b.factor}:{b.effect_names[j]}" for b, j in added)
    if len(added) == 1:
        block, j = added[0]
        piece = next(p for p in pieces(block) if p.first <= j < p.first + p.q)
        independent = piece.q == 1 or piece.structure == "pdDiag"
        return labels, True, (block, (j,)) if independent else None
    new_blocks = {b.factor for b, _ in added}
    if len(new_blocks) == 1:
        block = added[0][0]
        if block.factor not in small_factors and block.structure == "pdIdent":  # one variance for all its effects
            return labels, True, (block, tuple(range(block.q)))
    return labels, False, None


def _relate(a: REMLResult, b: REMLResult, names: tuple[str, str]) -> _Relation:
    """Check that the fits are comparable and nested; order them smaller first."""
    _same_data(a, b, names)
    if a.n_params == b.n_params:
        raise SpecError(f"{names[0]} and {names[1]} have the same number of parameters ({a.n_params}): nested models "
                        "differ in it, so there is nothing to test.",
                        given={names[0]: a.design.spec.formula, names[1]: b.design.spec.formula},
                        fix="Compare a model with a simpler one nested in it; non-nested models by AIC/BIC.")
    if a.n_params > b.n_params:
        a, b, names = b, a, (names[1], names[0])
    same_fixed = _fixed_nesting(a.design, b.design, names)
    added, one_variance, tested = _random_nesting(a.design, b.design, names)
    return _Relation(a, b, same_fixed, added, one_variance, tested, b.n_params - a.n_params)


def _needs_ml(rel: _Relation) -> str | None:
    """Why the pair must be compared by ML (None: as fitted)."""
    if rel.small.method != rel.large.method:
        return (f"the models were fitted by different methods ({rel.small.method} and {rel.large.method}), and "
                "likelihoods of different criteria are not comparable")
    if rel.small.method == "REML" and not rel.same_fixed:
        return ("their fixed effects differ, and REML likelihoods of models with different fixed effects are "
                "likelihoods of different residual contrasts (K'y changes with X), so they are not comparable")
    return None


def _check_refit(refit: Any) -> None:
    if refit not in ("auto", True, False):
        raise SpecError("Unknown refit option.", given=refit, fix="Use refit='auto' (default), True or False.")


def _to_ml(fit: REMLResult) -> REMLResult:
    return fit if fit.method == "ML" else refit_fit(fit, method="ML")


# ---- the tests -----------------------------------------------------------------------------------------------------
def lrt(
    fit0: Any,
    fit1: Any = None,
    *,
    null: str = "auto",
    nsim: int | None = None,
    seed: int | None = None,
    refit: str | bool = "auto",
    progressbar: bool | None = None,
) -> LRTResult:
    """Likelihood-ratio test of two nested ML/REML fits, or of one fit's only variance component (module notation).

    Parameters
    ----------
    fit0, fit1
        Two nested fits of the same data (either order: the smaller is the null). With ``fit1`` omitted, ``fit0``'s
        only variance component (one grouping factor with a random intercept, one random effect, or a pdIdent
        block) is tested against the linear model without random effects, as RLRsim's ``exactRLRT(m)``.
    null
        ``"auto"``, ``"chisq"``, ``"mixture"``, ``"exact"`` or ``"bootstrap"`` (module notation).
    nsim
        Simulated nulls only: the number of draws (default 10,000 for ``"exact"``, as RLRsim, and 1000 for
        ``"bootstrap"``).
    seed
        Simulated nulls only: the random seed (the same seed gives the same p-value).
    refit
        ``"auto"``: refit REML fits by ML where the likelihoods are otherwise not comparable (different fixed
        effects or methods); ``True``: refit every REML fit by ML (lme4's ``anova``); ``False``: never (then such
        pairs are refused with the reason).
    progressbar
        The bootstrap's progress on stderr (shown unless False); refused with the other nulls, which take no time.

    Returns
    -------
    LRTResult

    Raises
    ------
    NotSupportedError
        A Bayesian fit (compare those with ``hierlmm.loo`` and ``hierlmm.compare_models``), different error
        structures, or a null that does not apply to this comparison (the error says which does).
    SpecError, DataError
        Non-nested models, different data rows or responses, REML fits with different fixed effects and
        ``refit=False``, an unknown option.
    """
    if null not in NULLS:
        raise SpecError("Unknown null distribution.", given=null, fix=f"Use one of {', '.join(NULLS)}.")
    _check_refit(refit)
    simulated = _resolve_simulation_options(null, nsim, seed, progressbar)
    fit0 = _check_fit(fit0, "fit0")
    if fit1 is None:
        return _test_one(fit0, null, simulated, seed, refit, progressbar)
    fit1 = _check_fit(fit1, "fit1")
    rel = _relate(fit0, fit1, ("fit0", "fit1"))
    rel, refitted, note = _apply_refit(rel, refit)
    return _test_pair(rel, null, simulated, seed, refitted, progressbar, (note,) if note else ())


def _resolve_simulation_options(null: str, nsim: int | None, seed: int | None,
                                progressbar: bool | None = None) -> int | None:
    """``nsim`` for a simulated null (its default if None); refuse nsim/seed for the analytic nulls, and a progress
    bar for anything but the bootstrap (the only null that takes long)."""
    if progressbar is not None and null != "bootstrap":
        raise SpecError(f"progressbar= shows the bootstrap's progress; null={null!r} has none.",
                        given={"progressbar": progressbar, "null": null}, fix="Drop progressbar=.")
    if null in ("exact", "bootstrap"):
        value = DEFAULT_NSIM[null] if nsim is None else nsim
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise SpecError("nsim must be a positive whole number.", given=nsim, fix="Use e.g. nsim=1000.")
        return int(value)
    if nsim is not None or seed is not None:
        raise SpecError(f"nsim= and seed= apply to simulated nulls only; null={null!r} is not simulated.",
                        given={"nsim": nsim, "seed": seed}, fix="Use null='exact' or null='bootstrap', or drop them.")
    return None


def _apply_refit(rel: _Relation, refit: str | bool) -> tuple[_Relation, bool, str | None]:
    why = _needs_ml(rel)
    if why is None and refit is not True:
        return rel, False, None
    if why is not None and refit is False:
        raise SpecError(f"These fits cannot be compared as fitted: {why}.",
                        given={"null model": f"{rel.small.design.spec.formula} ({rel.small.method})",
                               "alternative": f"{rel.large.design.spec.formula} ({rel.large.method})"},
                        fix="Use refit='auto' (refits both by ML), or fit both with method='ML'.")
    small, large = _to_ml(rel.small), _to_ml(rel.large)
    refitted = small is not rel.small or large is not rel.large
    rel = _Relation(small, large, rel.same_fixed, rel.added, rel.one_variance, rel.tested, rel.df)
    return rel, refitted, (f"refitted by ML: {why or 'refit=True'}" if refitted else None)


def _choose_null(null: str, rel: _Relation) -> tuple[str, tuple[str, ...]]:
    """The null to use (resolving ``"auto"``) and notes; refuse a null that does not apply, saying why."""
    marginal = rel.large.kind == "marginal"
    notes: list[str] = []
    if null == "auto":
        if marginal:
            return "chisq", ("the marginal model's D may be indefinite, so a variance of 0 is no boundary: chi2",)
        if rel.one_variance:
            return "mixture", ("one variance added: it lies on the boundary (0) under H0",)
        if rel.added:
            notes.append(f"{len(rel.added)} random effects added ({', '.join(rel.added)}): the chi2 p-value is "
                         "conservative (too large); null='bootstrap' gives a calibrated one")
        return "chisq", tuple(notes)
    if null == "mixture":
        if marginal:
            raise NotSupportedError("The marginal model has no boundary at a variance of 0 (its D may be indefinite): "
                                    "the chi-bar-square mixture does not apply.", given="null='mixture'",
                                    fix="Use null='chisq' (or 'auto') for marginal models.")
        if not rel.added:
            raise NotSupportedError("No random effect is added, so no variance is on the boundary under H0: the "
                                    "chi-bar-square mixture does not apply.", given="null='mixture'",
                                    fix="Use null='chisq' (or 'auto').")
        if not rel.one_variance:
            raise NotSupportedError(f"The 50:50 chi-bar-square mixture holds for one random effect added; these "
                                    f"models differ by {len(rel.added)} ({', '.join(rel.added)}), and the weights of "
                                    "the mixture then depend on the design.", given="null='mixture'",
                                    fix="Use null='bootstrap' (parametric bootstrap), or add one effect at a time.")
    if null == "exact":
        _check_exact(rel)
    return null, tuple(notes)


def _check_exact(rel: _Relation) -> None:
    if rel.large.kind == "marginal" or isinstance(rel.large, CorrelatedFit):
        raise NotSupportedError("The exact null (Crainiceanu-Ruppert / Greven et al.) is for the hierarchical model "
                                "with independent errors of one variance.", given=type(rel.large).__name__,
                                fix="Use null='bootstrap'.")
    if not rel.same_fixed or rel.small.method != "REML" or rel.large.method != "REML":
        raise NotSupportedError("The exact null of two models (RLRsim's exactRLRT(m, mA, m0)) compares REML fits "
                                "with the same fixed effects.",
                                given={"methods": (rel.small.method, rel.large.method),
                                       "same fixed effects": rel.same_fixed},
                                fix="Fit both by REML with the same fixed effects (hierlmm.refit(fit, "
                                    "method='REML')), or use null='bootstrap'.")
    if rel.tested is None or rel.df != 1:
        raise NotSupportedError("The exact null tests one independent variance component (a random intercept, a "
                                "new grouping factor's intercept, a pdDiag slope); these models differ by "
                                f"{rel.df} parameters ({', '.join(rel.added) or 'covariances'}).",
                                given="null='exact'", fix="Use null='mixture' or null='bootstrap'.")


def _p_analytic(null: str, statistic: float, df: int) -> tuple[float, str]:
    if null == "chisq":
        return float(scipy.stats.chi2.sf(statistic, df)), f"chi2({df})"
    lower = float(scipy.stats.chi2.sf(statistic, df - 1)) if df > 1 else float(statistic <= 0)
    return 0.5 * lower + 0.5 * float(scipy.stats.chi2.sf(statistic, df)), \
        f"50:50 mixture of chi2({df - 1}) and chi2({df})"


def _statistic(l0: float, l1: float) -> tuple[float, tuple[str, ...]]:
    raw = 2.0 * (l1 - l0)
    if raw < -1e-6:
        return 0.0, (f"the larger model's log-likelihood is below the smaller's by {-raw / 2:.3g}: an optimiser "
                     "stopped short of a maximum; the statistic is set to 0",)
    return max(raw, 0.0), ()


def _test_pair(rel: _Relation, null: str, nsim: int | None, seed: int | None, refitted: bool, progressbar: bool,
               notes: tuple[str, ...] = ()) -> LRTResult:
    chosen, why = _choose_null(null, rel)
    l0, l1 = rel.small.loglik, rel.large.loglik
    statistic, warn = _statistic(l0, l1)
    notes = (*notes, *why, *warn)
    common = dict(loglik=(l0, l1), n_params=(rel.small.n_params, rel.large.n_params), method=rel.large.method,
                  refitted=refitted)
    if chosen in ("chisq", "mixture"):
        p, text = _p_analytic(chosen, statistic, rel.df)
        return LRTResult(statistic, rel.df, p, chosen, text, notes=notes, **common)
    if chosen == "exact":
        block, columns = rel.tested
        Z = grouped_columns(block.Z[:, list(columns)], block.group_index, block.n_levels)
        sims = simulate_null(spectral_null(rel.large.design.X, Z, reml=True), nsim, seed)
        text = (f"exact finite-sample null of the RLRT for the variance of {', '.join(rel.added)} (Greven et al. "
                f"2008; RLRsim's exactRLRT), {nsim} draws")
        return LRTResult(statistic, rel.df, exact_p_value(statistic, sims), "exact", text, nsim=nsim, seed=seed,
                         simulated=sims, notes=notes, **common)
    sims, failed = _bootstrap(rel.small, lambda y: (refit_fit(rel.small, y=y).loglik, refit_fit(rel.large, y=y).loglik),
                              nsim, seed, progressbar)
    return _bootstrap_result(statistic, sims, failed, rel.df, nsim, seed, notes, common)


def _bootstrap_result(statistic: float, sims: np.ndarray, failed: int, df: int, nsim: int, seed: int | None,
                      notes: tuple[str, ...], common: dict[str, Any]) -> LRTResult:
    ok = sims[np.isfinite(sims)]
    if ok.size == 0:
        raise NotSupportedError("Every bootstrap refit failed.", given=f"nsim={nsim}",
                                fix="Check the fits' convergence, or use null='mixture'.")
    if failed:
        notes = (*notes, f"{failed} of {nsim} bootstrap refits failed and were left out")
    p = (1.0 + float(np.sum(ok >= statistic))) / (ok.size + 1.0)
    text = f"parametric bootstrap from the null model, {ok.size} draws, p = (1 + #{{L* >= L}}) / (nsim + 1)"
    return LRTResult(statistic, df, p, "bootstrap", text, nsim=int(ok.size), seed=seed, simulated=ok, notes=notes,
                     **common)


def _bootstrap(null_fit: Any, logliks: Any, nsim: int, seed: int | None, progressbar: bool,
               draw: Any = None) -> tuple[np.ndarray, int]:
    """``nsim`` statistics ``2 (l1* - l0*)`` of responses drawn from the null (``draw(nsim, seed)`` or
    :func:`simulate_fit` of ``null_fit``), with ``logliks(y) -> (l0*, l1*)``; failed refits are NaN."""
    Y = draw(nsim, seed) if draw is not None else simulate_fit(null_fit, nsim, seed=seed)
    out = np.full(nsim, np.nan)
    failed = 0
    bar = _Progress(nsim, "bootstrap", progressbar is not False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boundary and convergence warnings are expected under the null
        for j, y in enumerate(Y):
            try:
                l0, l1 = logliks(y)
                out[j] = max(2.0 * (l1 - l0), 0.0)
            except (HierlmmError, np.linalg.LinAlgError, ValueError):
                failed += 1
            bar.update(j + 1)
    bar.close()
    return out, failed


class _Progress:
    """A plain progress line on stderr (tqdm is not a dependency): count, elapsed and remaining seconds."""

    def __init__(self, total: int, label: str, show: bool) -> None:
        self.total, self.label, self.show = total, label, show
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.show or (now - self.last < 0.2 and done < self.total):
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed / done * (self.total - done)
        sys.stderr.write(f"\r{self.label}: {done}/{self.total} [{elapsed:.0f} s, ~{left:.0f} s left]")
        sys.stderr.flush()

    def close(self) -> None:
        if self.show:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---- one fit against the linear model ------------------------------------------------------------------------------
def linear_model_loglik(X: np.ndarray, y: np.ndarray, method: str = "REML") -> tuple[float, np.ndarray, float]:
    """The maximised log-likelihood of ``y ~ N(X beta, sigma^2 I)`` (module notation), with ``beta`` and ``sigma``
    (ML: ``sqrt(RSS / N)``; REML: ``sqrt(RSS / (N - p))``)."""
    N, p = X.shape
    Q, R = np.linalg.qr(X)
    beta = np.linalg.solve(R, Q.T @ y)
    rss = float(np.sum((y - X @ beta) ** 2))
    if method.upper() == "ML":
        return -0.5 * N * (math.log(2 * math.pi * rss / N) + 1), beta, math.sqrt(rss / N)
    dof = N - p
    logdet = 2.0 * float(np.sum(np.log(np.abs(np.diag(R)))))
    return -0.5 * dof * (math.log(2 * math.pi * rss / dof) + 1) - 0.5 * logdet, beta, math.sqrt(rss / dof)


def _single_variance_block(fit: REMLResult) -> RandomEffectsBlock:
    design = fit.design
    if isinstance(fit, CorrelatedFit):
        raise NotSupportedError("With serial correlation or a variance function the null model of lrt(fit) would be a "
                                "gls model with the same error structure, which hierlmm does not fit.",
                                given=_error_structure(fit), fix="Compare two mixed models with lrt(fit0, fit1).")
    if len(design.blocks) != 1 or fit.n_theta != 1:
        raise NotSupportedError("lrt(fit) tests a model's only variance component (as RLRsim's exactRLRT(m)); this "
                                f"model has {fit.n_theta} covariance parameters in {len(design.blocks)} grouping "
                                "factor(s).", given=design.spec.formula,
                                fix="Fit the smaller model too and use lrt(fit0, fit1).")
    return design.blocks[0]


def _test_one(fit: REMLResult, null: str, nsim: int | None, seed: int | None, refit: str | bool,
              progressbar: bool) -> LRTResult:
    block = _single_variance_block(fit)
    refitted = False
    notes: list[str] = []
    if refit is True and fit.method == "REML":
        fit, refitted = refit_fit(fit, method="ML"), True
        notes.append("refitted by ML (refit=True)")
    design = fit.design
    l0, beta0, sigma0 = linear_model_loglik(design.X, design.y, fit.method)
    statistic, warn = _statistic(l0, fit.loglik)
    notes += list(warn)
    label = f"{block.factor}:{', '.join(block.effect_names)}"
    marginal = fit.kind == "marginal"
    chosen = null
    if null == "auto":
        chosen = "chisq" if marginal else "mixture"
        notes.append("the marginal model's D may be indefinite: no boundary, chi2" if marginal
                     else "the variance lies on the boundary (0) under H0")
    if chosen in ("mixture", "exact") and marginal:
        raise NotSupportedError("The marginal model has no boundary at a variance of 0 (its D may be indefinite).",
                                given=f"null={null!r}", fix="Use null='chisq' or null='bootstrap'.")
    common = dict(loglik=(l0, fit.loglik), n_params=(design.p + 1, fit.n_params), method=fit.method,
                  refitted=refitted)
    df = fit.n_params - design.p - 1
    if chosen in ("chisq", "mixture"):
        p, text = _p_analytic(chosen, statistic, df)
        return LRTResult(statistic, df, p, chosen, text, notes=tuple(notes), **common)
    if chosen == "exact":
        reml = fit.method == "REML"
        Z = grouped_columns(block.Z, block.group_index, block.n_levels)
        sims = simulate_null(spectral_null(design.X, Z, reml=reml), nsim, seed)
        text = (f"exact finite-sample null of the {'RLRT' if reml else 'LRT'} for the variance of {label} against "
                f"the linear model (RLRsim's {'exactRLRT(m)' if reml else 'exactLRT(m, lm)'}), {nsim} draws")
        return LRTResult(statistic, df, exact_p_value(statistic, sims), "exact", text, nsim=nsim, seed=seed,
                         simulated=sims, notes=tuple(notes), **common)

    def draw(count: int, seed_: int | None) -> np.ndarray:
        rng = np.random.default_rng(seed_)
        return design.X @ beta0 + sigma0 * rng.standard_normal((count, design.n_obs))

    def logliks(y: np.ndarray) -> tuple[float, float]:
        return linear_model_loglik(design.X, y, fit.method)[0], refit_fit(fit, y=y).loglik

    sims, failed = _bootstrap(None, logliks, nsim, seed, progressbar, draw)
    return _bootstrap_result(statistic, sims, failed, df, nsim, seed, tuple(notes), common)


# ---- nlme's table ---------------------------------------------------------------------------------------------------
class ComparisonTable(pd.DataFrame):
    """nlme's ``anova(m1, m2, ...)`` table, printed with its note (which nulls, which likelihood, any refit); the
    same is in ``attrs``: ``"note"``, ``"method"``, ``"refitted"``, ``"nulls"`` and ``"tests"`` (the
    :class:`LRTResult` of each consecutive pair)."""

    @property
    def _constructor(self) -> type[ComparisonTable]:
        return ComparisonTable

    def __repr__(self) -> str:
        note = self.attrs.get("note")
        return self.to_string() + (f"\n{note}" if note else "")

    def __str__(self) -> str:
        return self.__repr__()

    def _repr_html_(self) -> str:
        """The notebook view: the table and, under it, the note (which likelihood, which nulls, any ML refit)."""
        note = self.attrs.get("note")
        html = pd.DataFrame(self).to_html()
        return html + (f"<pre>{escape(note)}</pre>" if note else "")


def compare_models(
    *fits: Any,
    refit: str | bool = "auto",
    null: str = "auto",
    nsim: int | None = None,
    seed: int | None = None,
    progressbar: bool | None = None,
    names: Sequence[str] | None = None,
) -> ComparisonTable:
    """nlme's ``anova(m1, m2, ...)``: one row per model (``Model``, ``df``, ``AIC``, ``BIC``, ``logLik``) and a
    likelihood-ratio test of each model against the one before it (``Test``, ``L.Ratio``, ``p-value``).

    Parameters
    ----------
    *fits
        Two or more ML/REML fits of the same data, each nested in the next or the next in it.
    refit
        As in :func:`lrt`; when any pair needs ML likelihoods every REML fit is refitted by ML, so that the whole
        table (AIC, BIC and logLik too) is on one likelihood, and the note says so.
    null, nsim, seed, progressbar
        As in :func:`lrt`, for every test (``"auto"``: each pair gets its own; the note names them).
    names
        Row labels (default ``fit1``, ``fit2``, ...).

    Returns
    -------
    ComparisonTable
        A DataFrame (columns as nlme prints them; ``p-value`` under the null named in the note, NaN on the first
        row) whose printout ends with the note.
    """
    if len(fits) < 2:
        raise SpecError("compare_models needs two or more fits.", given=len(fits),
                        fix="Pass nested fits, e.g. compare_models(fit0, fit1); test one fit's variance component "
                            "with hierlmm.lrt(fit).")
    if null not in NULLS:
        raise SpecError("Unknown null distribution.", given=null, fix=f"Use one of {', '.join(NULLS)}.")
    _check_refit(refit)
    simulated = _resolve_simulation_options(null, nsim, seed, progressbar)
    labels = list(names) if names is not None else [f"fit{k + 1}" for k in range(len(fits))]
    if len(labels) != len(fits) or len(set(labels)) != len(labels):
        raise SpecError("names must give one distinct label per fit.", given=names,
                        fix=f"Pass {len(fits)} distinct names.")
    checked = [_check_fit(f, label) for f, label in zip(fits, labels, strict=True)]
    pairs = [(k, _relate(checked[k - 1], checked[k], (labels[k - 1], labels[k]))) for k in range(1, len(checked))]
    reasons = [why for _, rel in pairs if (why := _needs_ml(rel))]
    if reasons and refit is False:
        raise SpecError(f"These fits cannot be compared as fitted: {reasons[0]}.",
                        given={label: f"{f.design.spec.formula} ({f.method})" for label, f in zip(labels, checked,
                                                                                              strict=True)},
                        fix="Use refit='auto' (refits every fit by ML), or fit all with method='ML'.")
    refitted = bool(reasons or refit is True) and any(f.method == "REML" for f in checked)
    if refitted:
        checked = [_to_ml(f) for f in checked]
        pairs = [(k, _relate(checked[k - 1], checked[k], (labels[k - 1], labels[k]))) for k in range(1, len(checked))]
    tests = [None] + [_test_pair(rel, null, simulated, seed, refitted, progressbar) for _, rel in pairs]
    table = ComparisonTable({
        "Model": np.arange(1, len(checked) + 1),
        "df": [f.n_params for f in checked],
        "AIC": [f.aic for f in checked],
        "BIC": [f.bic for f in checked],
        "logLik": [f.loglik for f in checked],
        "Test": [""] + [f"{k} vs {k + 1}" for k in range(1, len(checked))],
        "L.Ratio": [np.nan] + [t.statistic for t in tests[1:]],
        "p-value": [np.nan] + [t.p_value for t in tests[1:]],
    }, index=pd.Index(labels))
    method = checked[0].method
    lines = [f"Likelihoods: {method}" + (f"; every fit refitted by ML ({reasons[0] if reasons else 'refit=True'})"
                                         if refitted else "")]
    for k, t in enumerate(tests[1:], start=1):
        lines.append(f"Test {k} vs {k + 1}: p-value from {t.null_description}"
                     + "".join(f"; {n}" for n in t.notes if not n.startswith("refitted by ML")))
    table.attrs.update(note="\n".join(lines), method=method, refitted=refitted,
                       nulls=[None] + [t.null for t in tests[1:]], tests=tests)
    return table


__all__: Sequence[str] = ("lrt", "compare_models", "LRTResult", "ComparisonTable", "linear_model_loglik", "NULLS")
