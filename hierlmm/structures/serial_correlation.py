"""Serially correlated within-subject errors: nlme's corExp, corGaus, corAR1, corCAR1 and corCompSymm.

``e_i ~ N(0, sigma^2 R_i)`` with ``R_i`` a correlation matrix of the subject's times (chapter section 3.6).

Notation
--------
For two rows of one subject at times (or positions) ``s`` and ``t``, ``d = |s - t|``, and parameter ``phi``:

- ``corExp``: ``exp(-d / phi)`` (``phi`` the range, > 0);
- ``corGaus``: ``exp(-(d / phi)^2)``;
- ``corCAR1``: ``phi^d`` (continuous-time AR(1), ``0 < phi < 1``);
- ``corAR1``: ``phi^|k - l|`` for the rows' positions ``k, l`` within the subject, or their integer times
  (``-1 < phi < 1``);
- ``corCompSymm``: ``phi`` for every pair (``-1/(n_max - 1) < phi < 1``).

With ``nugget = TRUE`` the correlation of two distinct rows is multiplied by ``1 - nugget`` (``0 < nugget < 1``), as
nlme does for corExp and corGaus. hierlmm also offers it for corCAR1 and corAR1 (nlme does not): corCAR1 with a
nugget is corExp with one (``phi = exp(-1 / range)``). corCompSymm refuses it: ``(1 - nugget) rho`` is again a
compound-symmetry correlation, so the nugget could not be told apart from ``rho``.

Without a nugget, two rows of a subject at one time would be perfectly correlated: such data are refused (nlme
refuses them even with a nugget). ``unconstrained`` maps the parameters to the real line (log range, logit, ...)
for optimisers and NUTS, as nlme's ``coef(..., unconstrained = TRUE)`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hierlmm.errors import DataError, SpecError

TYPES = ("corExp", "corGaus", "corCAR1", "corAR1", "corCompSymm")
# the kinds with a range parameter in the Bayesian model (corCAR1: phi = exp(-1 / range))
RANGE_KINDS = ("corExp", "corGaus", "corCAR1")
_DESCRIPTION = {"corExp": "Exponential spatial correlation", "corGaus": "Gaussian spatial correlation",
                "corCAR1": "Continuous AR(1)", "corAR1": "AR(1)", "corCompSymm": "Compound symmetry"}


@dataclass(frozen=True)
class CorrelationStructure:
    """A correlation structure: its type, the time column (None: row order) and the grouping column.

    Attributes
    ----------
    kind
        One of :data:`TYPES`.
    time, group
        ``form = ~ time | group`` (``time`` None for ``~ 1 | group``: positions within the group).
    nugget
        Whether a nugget effect is estimated (every type but corCompSymm).
    """

    kind: str
    time: str | None
    group: str
    nugget: bool = False

    def __post_init__(self) -> None:
        nugget = ", nugget = TRUE" if self.nugget else ""
        _check(self.kind, self.time, self.nugget, f"{self.kind}(form = {self.form}{nugget})")

    @property
    def form(self) -> str:
        """nlme's ``form``: ``"~ obstime | patient"``, ``"~ 1 | id"``."""
        return f"~ {self.time or 1} | {self.group}"

    @property
    def description(self) -> str:
        """nlme's name of the structure (``Correlation Structure:`` line of ``print.lme``)."""
        return _DESCRIPTION[self.kind] + (" with a nugget" if self.nugget else "")

    @property
    def n_params(self) -> int:
        """Number of correlation parameters (the nugget included)."""
        return 1 + int(self.nugget)

    def parameters(self, unconstrained: np.ndarray, n_max: int = 2) -> dict[str, float]:
        """Natural parameters from unconstrained ones."""
        u = np.asarray(unconstrained, dtype=float)
        if self.kind in ("corExp", "corGaus"):
            out = {"range": float(np.exp(u[0]))}
        elif self.kind == "corCAR1":
            out = {"phi": float(1 / (1 + np.exp(-u[0])))}
        elif self.kind == "corAR1":
            out = {"phi": float(np.tanh(u[0]))}
        else:
            low = -1.0 / max(n_max - 1, 1)
            out = {"rho": float(low + (1 - low) / (1 + np.exp(-u[0])))}
        if self.nugget:
            out["nugget"] = float(1 / (1 + np.exp(-u[1])))
        return out

    # ---- the Bayesian engine's free variables (hierlmm.engines.bayes.correlated_model declares them in its model)
    @property
    def free_names(self) -> tuple[str, ...]:
        """The free variables of the Bayesian model: ``range`` (corExp, corGaus, corCAR1), ``phi01`` (corAR1's
        ``(phi + 1) / 2``) or ``rho01`` (corCompSymm's ``rho`` rescaled to (0, 1)), and ``nugget``."""
        first = "range" if self.kind in RANGE_KINDS else "phi01" if self.kind == "corAR1" else "rho01"
        return (first, "nugget") if self.nugget else (first,)

    def free_variables(self, pm: Any, priors: Any) -> dict[str, Any]:
        """Declare the free variables in the current PyMC model (``pm`` is the pymc module). ``priors`` has
        ``range_median`` and ``range_log_sd`` (``range ~ LogNormal``), ``rho`` and ``nugget`` (Beta ``(a, b)``):
        :class:`hierlmm.engines.bayes.correlated_model.CorrelationPriors`."""
        free: dict[str, Any] = {}
        for name in self.free_names:
            if name == "range":
                free[name] = pm.LogNormal(name, mu=float(np.log(priors.range_median)), sigma=priors.range_log_sd)
            else:
                a, b = priors.nugget if name == "nugget" else priors.rho
                free[name] = pm.Beta(name, alpha=a, beta=b)
        return free

    def prior_rows(self, priors: Any) -> list[tuple[str, str]]:
        """(parameter, prior) rows of :meth:`free_variables`' priors, for printing."""
        if self.kind in RANGE_KINDS:
            rows = [("range", f"LogNormal(log {priors.range_median:.4g}, {priors.range_log_sd:g})")]
        elif self.kind == "corAR1":
            rows = [("phi", f"(phi + 1) / 2 ~ Beta{priors.rho}")]
        else:
            rows = [("rho", f"Beta{priors.rho} scaled to (-1/(n_max - 1), 1)")]
        return rows + ([("nugget", f"Beta{priors.nugget}")] if self.nugget else [])

    def start(self, times: np.ndarray) -> np.ndarray:
        """A starting point on the unconstrained scale (range: a fifth of the time span, as a rough nlme-like start)."""
        if self.kind in ("corExp", "corGaus"):
            span = float(np.ptp(times)) if times.size else 1.0
            first = np.log(max(span / 5, 1e-3))
        elif self.kind == "corAR1":  # phi = 0 is a stationary point when no lag is 1 (times 0, 2, 6, ...): start off it
            first = float(np.arctanh(0.2))
        else:
            first = 0.0
        return np.array([first, -2.0][: self.n_params])

    def matrix(self, unconstrained: np.ndarray, times: np.ndarray, n_max: int = 2) -> np.ndarray:
        """``R`` for one subject's times (n,) -> (n, n) (positions 0, 1, ... when the form has no time)."""
        times = np.asarray(times, dtype=float)
        return self.from_distances(unconstrained, np.abs(times[:, None] - times[None, :]), n_max)

    def from_distances(self, unconstrained: np.ndarray, d: np.ndarray, n_max: int = 2) -> np.ndarray:
        """``R`` from distances ``d`` (..., n, n) between the rows' times (or positions): vectorised over subjects."""
        p = self.parameters(unconstrained, n_max)
        off = ~np.eye(d.shape[-1], dtype=bool)  # distinct rows (even at equal times)
        if self.kind == "corCompSymm":
            return np.where(off, p["rho"], 1.0)
        if self.kind == "corExp":
            R = np.exp(-d / p["range"])
        elif self.kind == "corGaus":
            R = np.exp(-((d / p["range"]) ** 2))
        else:  # corCAR1 and corAR1 (integer lags)
            R = p["phi"] ** d
        if self.nugget:
            R = np.where(off, (1 - p["nugget"]) * R, 1.0)
        return R


_PATTERN = re.compile(r"^\s*(\w+)\s*\(\s*form\s*=\s*~\s*([\w.]+)\s*(?:\|\s*([\w.]+)\s*)?"
                      r"(?:,\s*nugget\s*=\s*([\w.+-]+)\s*)?\)\s*$")
_LOGICALS = {"TRUE": True, "T": True, "FALSE": False, "F": False}


def parse_correlation(text: str) -> CorrelationStructure:
    """Parse nlme's syntax: ``"corExp(form = ~ obstime | patient)"``, ``"corAR1(form = ~ 1 | id)"``,
    ``"corExp(form = ~ t | id, nugget = TRUE)"``.

    ``nugget`` is read as R reads a logical argument: ``TRUE``/``T`` and ``FALSE``/``F`` (in any case), or a number,
    non-zero meaning TRUE (``nugget = 1`` is a nugget, ``nugget = 0`` none); anything else is refused.
    """
    if not isinstance(text, str):
        raise SpecError("The correlation structure must be nlme's syntax as text.", given=repr(text),
                        fix='Write e.g. correlation="corExp(form = ~ obstime | patient)".')
    m = _PATTERN.match(text)
    if not m:
        raise SpecError("Cannot read the correlation structure.", given=text,
                        fix='Write it as nlme does, e.g. "corExp(form = ~ obstime | patient)".')
    kind, time, group, nugget = m.groups()
    if group is None:
        raise SpecError("The correlation structure needs its grouping: form = ~ time | group.", given=text,
                        fix='Write e.g. "corExp(form = ~ obstime | patient)".')
    has_nugget = False if nugget is None else _logical(nugget, text)
    time = None if time == "1" else time
    _check(kind, time, has_nugget, text)
    return CorrelationStructure(kind, time, group, has_nugget)


def _logical(value: str, given: str) -> bool:
    """R's reading of ``nugget = value``: a logical constant, or a number (non-zero is TRUE, as ``if (1)`` in R)."""
    if value.upper() in _LOGICALS:
        return _LOGICALS[value.upper()]
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number != number:  # not a number (or NaN, which R refuses too)
        raise SpecError(f"nugget must be TRUE or FALSE (or a number, non-zero meaning TRUE, as in R), not {value!r}.",
                        given=given, fix="Write nugget = TRUE, or leave it out for no nugget.")
    return number != 0


def _check(kind: str, time: str | None, nugget: bool, given: str) -> None:
    """The rules every structure obeys, however it was made (parsed or constructed)."""
    if kind not in TYPES:
        raise SpecError(f"Unknown correlation structure {kind}.", given=given, fix=f"Use one of {', '.join(TYPES)}.")
    if nugget and kind == "corCompSymm":
        raise SpecError("corCompSymm cannot have a nugget: (1 - nugget) rho is again a compound-symmetry correlation, "
                        "so the data cannot tell the nugget from rho.", given=given,
                        fix="Drop nugget = TRUE (rho then absorbs it).")
    if kind in ("corExp", "corGaus", "corCAR1") and time is None:
        raise SpecError(f"{kind} needs a time covariate.", given=given, fix=f'Write "{kind}(form = ~ time | group)".')


def check_times(structure: CorrelationStructure, times: np.ndarray, rows: str) -> None:
    """Refuse times the structure cannot use: missing or not numeric (NaN after ``pd.to_numeric(errors="coerce")``),
    and non-integer times for corAR1. ``rows`` names the rows in the message ("rows the model uses", "new rows")."""
    bad = ~np.isfinite(times)
    if bad.any():
        raise DataError(f"The correlation's time column {structure.time!r} is missing or not numeric in "
                        f"{int(bad.sum())} {rows}.", given=structure.time,
                        fix="Give those rows a numeric time, or drop them.")
    if structure.kind == "corAR1" and not np.all(times == np.round(times)):
        raise DataError(f"corAR1 counts lags in whole steps, but the time column {structure.time!r} has "
                        f"non-integer values in {rows} (e.g. {times[times != np.round(times)][0]:g}).",
                        given=structure.time,
                        fix="Use corCAR1 (continuous time) for these times, or an integer visit number.")


def correlation_values(structure: CorrelationStructure | None, free: Mapping[str, Any], n_max: int, lib: Any) -> dict:
    """The reported correlation parameters (nlme's names: ``range``, ``phi``, ``rho``, ``nugget``) from the free
    variables (``range``, ``phi01``, ``rho01``, ``nugget``), for PyTensor or NumPy (``lib``); none without a
    structure."""
    if structure is None:
        return {}
    if structure.kind in ("corExp", "corGaus"):
        out = {"range": free["range"]}
    elif structure.kind == "corCAR1":
        out = {"phi": lib.exp(-1.0 / free["range"])}
    elif structure.kind == "corAR1":
        out = {"phi": 2.0 * free["phi01"] - 1.0}
    else:
        low = -1.0 / max(n_max - 1, 1)
        out = {"rho": low + (1.0 - low) * free["rho01"]}
    if structure.nugget:
        out["nugget"] = free["nugget"]
    return out


def correlation_matrix(structure: CorrelationStructure | None, free: Mapping[str, Any], d: Any, n: int, n_max: int,
                       lib: Any) -> Any:
    """``R`` for stacked distances ``d`` (..., n, n) (as :meth:`CorrelationStructure.from_distances`), PyTensor or
    NumPy; the (n, n) identity without a structure."""
    if structure is None:
        return np.eye(n)
    off = 1.0 - np.eye(n)  # distinct rows, even at equal times
    if structure.kind == "corCompSymm":
        rho = correlation_values(structure, free, n_max, lib)["rho"]
        return np.eye(n) + off * rho
    if structure.kind in ("corExp", "corCAR1"):
        R = lib.exp(-d / free["range"])
    elif structure.kind == "corGaus":
        R = lib.exp(-((d / free["range"]) ** 2))
    else:
        R = (2.0 * free["phi01"] - 1.0) ** d  # (integer lags)
    if structure.nugget:
        R = np.eye(n) + off * (1.0 - free["nugget"]) * R
    return R
