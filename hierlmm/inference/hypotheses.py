"""Hypotheses about the fixed effects, ``L beta``: the contrast matrix ``L`` every test and contrast reads.

:func:`hierlmm.anova` (F tests of an ML/REML fit) and :func:`hierlmm.contrast` (the posterior of ``L beta``, or its
Wald interval) take ``L`` in the same forms and refuse the same mistakes, here.

Notation
--------
``L`` is ``k x p``: one row per hypothesis, one column per fixed effect in the design's order; hypothesis ``h`` is
about ``sum_j L[h, j] beta_j``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hierlmm.errors import SpecError


def combination(weights: np.ndarray, names: tuple[str, ...]) -> str:
    """A row of L in words: ``t - x``, ``0.5 (Intercept) + 0.5 t``."""
    text = ""
    for w, name in zip(weights, names, strict=True):
        if w == 0:
            continue
        sign = " - " if w < 0 else " + "
        size = "" if abs(w) == 1 else f"{abs(w):g} "
        text += (("-" if w < 0 else "") if not text else sign) + size + name
    return text


def contrast_matrix(L: Any, fixef_names: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """``L`` as a ``k x p`` array over the fixed effects, and the hypotheses' names.

    ``L`` is a DataFrame (rows = hypotheses, columns = fixed-effect names; absent ones weigh 0), a mapping
    ``{name: {coefficient: weight}}``, or an array with one column per fixed effect in the fit's order (a vector:
    one hypothesis).
    """
    names = tuple(fixef_names)
    if isinstance(L, pd.DataFrame | Mapping):
        rows = ({str(k): dict(v) for k, v in L.iterrows()} if isinstance(L, pd.DataFrame)
                else {str(k): v for k, v in L.items()})
        out = np.zeros((len(rows), len(names)))
        for h, (label, weights) in enumerate(rows.items()):
            if not isinstance(weights, Mapping):
                raise SpecError(f"Hypothesis {label!r} must map fixed-effect names to weights.", given=weights,
                                fix="Use e.g. {'t vs x': {'t': 1, 'x': -1}}.")
            for coef, w in weights.items():
                if coef not in names:
                    raise SpecError(f"No fixed effect {coef!r} in hypothesis {label!r}.", given=coef,
                                    fix=f"Use the fit's names: {list(names)}.")
                out[h, names.index(coef)] = _weight(w, label)
        labels = list(rows)
    else:
        try:
            out = np.array(L, dtype=float)
        except (TypeError, ValueError):
            raise SpecError("L must be numbers: a DataFrame, a mapping {name: {coefficient: weight}} or an array.",
                            given=type(L).__name__, fix="Use e.g. {'t': {'t': 1}}.") from None
        out = np.atleast_2d(out)
        if out.ndim != 2 or out.shape[1] != len(names):
            raise SpecError(f"An array L needs one column per fixed effect ({len(names)}: {list(names)}).",
                            given=f"shape {np.shape(L)}", fix="Give a (hypotheses x fixed effects) array, or a "
                            "DataFrame with the fixed effects' names as columns.")
        labels = [combination(row, names) for row in out]
    if out.shape[0] == 0:
        raise SpecError("L has no hypotheses.", given=L, fix="Give at least one row.")
    if not np.all(np.isfinite(out)):
        raise SpecError("L has missing or infinite weights.", given=L, fix="Use finite numbers (0 for unused).")
    zero = [lab for lab, row in zip(labels, out, strict=True) if not np.any(row)]
    if zero:
        raise SpecError(f"Hypotheses {zero} have all weights 0: they test nothing.", given=zero,
                        fix="Give each row a non-zero weight.")
    if len(set(labels)) != len(labels):
        raise SpecError("Two hypotheses have the same name.", given=labels, fix="Name every row of L differently.")
    return out, labels


def _weight(w: Any, label: str) -> float:
    try:
        return float(w)
    except (TypeError, ValueError):
        raise SpecError(f"A weight of hypothesis {label!r} is not a number.", given=w, fix="Use numbers.") from None
