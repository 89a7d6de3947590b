"""Exceptions and warnings raised by hierlmm.

Every error a user can cause says three things: what is wrong, what was given, and how to fix it.
Use :func:`user_error` style messages built with :class:`HierlmmError` subclasses; never let a bare
``numpy``/``pytensor`` traceback reach the user for a mistake in their input.
"""

from __future__ import annotations


class HierlmmError(Exception):
    """Base class of every error hierlmm raises on purpose.

    Parameters
    ----------
    problem
        What is wrong, in one sentence.
    given
        What the user gave (a formula, a column name, a value), quoted back.
    fix
        How to fix it.
    """

    def __init__(self, problem: str, *, given: object | None = None, fix: str | None = None) -> None:
        self.problem = problem
        self.given = given
        self.fix = fix
        parts = [problem]
        if given is not None:
            parts.append(f"Given: {given!s}")
        if fix:
            parts.append(f"Fix: {fix}")
        super().__init__("\n".join(parts))


class FormulaError(HierlmmError, ValueError):
    """A formula (or an nlme-style ``fixed``/``random`` argument) cannot be parsed or is not allowed."""


class UnsafeExpressionError(FormulaError):
    """A formula asks for something other than data columns and whitelisted R functions."""


class SpecError(HierlmmError, ValueError):
    """A model specification (Python arguments or a TOML file) is inconsistent or incomplete."""


class DataError(HierlmmError, ValueError):
    """The data do not fit the model: a missing column, a non-numeric response, no rows left, ..."""


class DatasetNotFoundError(HierlmmError, FileNotFoundError):
    """A named data set is not available on this machine (for instance ``HIERLMM_DATA`` is not set)."""


class FitFileError(HierlmmError, OSError):
    """A saved fit cannot be read: no file at the path, not a hierlmm fit, or a layout or class this version does
    not know (:func:`hierlmm.load`)."""


class NotSupportedError(HierlmmError, NotImplementedError):
    """The model is valid but this engine does not fit it (yet)."""


class ConvergenceWarning(UserWarning):
    """An optimiser or sampler finished without meeting its convergence checks."""


class BoundaryWarning(UserWarning):
    """An estimate lies on the boundary of the parameter space (e.g. a variance estimated as 0)."""


class ParetoKWarning(UserWarning):
    """PSIS-LOO's Pareto-k diagnostic is high for some units: their leave-one-out estimates are unreliable."""


class UnusedOutcomesWarning(UserWarning):
    """Outcomes given to a prediction are not used: new subjects' outcomes in ``newdata`` (they belong in
    ``history=``), or a history none of whose subjects is predicted."""


class MissingDataWarning(UserWarning):
    """Rows with missing values in the model's columns were dropped (how many, and which columns, are reported)."""


class NumericalError(HierlmmError, ArithmeticError):
    """A computation failed numerically (e.g. a likelihood that cannot be evaluated anywhere)."""
