"""hierlmm: Bayesian linear mixed-effects models, with ML/REML fits that agree with nlme and lme4.

The pipeline, every stage public::

    spec = hierlmm.model_spec("CD4 ~ obstime + obstime:drug + (obstime | patient)")   # ModelSpec
    design = hierlmm.build_design(spec, data)                                           # Design (y, X, blocks)
    fit = hierlmm.fit_ml(design, "REML")                                                # MLFit
    print(hierlmm.summary(fit))

or in one call: ``hierlmm.fit(formula, data)``.
"""

from hierlmm import datasets, plots
from hierlmm.api import fit, fit_ml, model_spec
from hierlmm.bayes_correlated_fit import CorrelatedBayesFit, fit_bayes_correlated
from hierlmm.bayes_fit import BayesFit, Diagnostics, fit_bayes
from hierlmm.bayes_model import BayesModel, build_bayes_model
from hierlmm.bayes_predictions import add_posterior_predictive, prior_predictive, trajectories
from hierlmm.compare import compare, compare_ranef
from hierlmm.design import Design, RandomEffectsBlock, build_design, new_model_matrices
from hierlmm.errors import (
    BoundaryWarning,
    ConvergenceWarning,
    DataError,
    DatasetNotFoundError,
    FormulaError,
    HierlmmError,
    MissingDataWarning,
    NotSupportedError,
    SpecError,
    UnsafeExpressionError,
)
from hierlmm.fit_result import MLFit, RandomEffects
from hierlmm.marginal_model import MarginalFit, fit_marginal
from hierlmm.marginal_structure import ImpliedCovariance, icc, implied_covariance
from hierlmm.predictions import predict
from hierlmm.priors import Priors, default_priors
from hierlmm.reml import profiled_deviance
from hierlmm.simulate import simulate
from hierlmm.spec import ModelSpec, RandomTerm, pdBlocked, pdCompSymm, pdDiag, pdIdent, pdSymm
from hierlmm.spec_files import load_spec
from hierlmm.summaries import summary, to_dict
from hierlmm.variance_function import VarianceFunction, parse_weights, varExp, varIdent, varPower

__version__ = "0.1.0"

__all__ = [
    "BayesFit", "BayesModel", "Diagnostics", "Priors", "build_bayes_model", "compare", "compare_ranef",
    "default_priors", "fit_bayes", "plots", "trajectories", "add_posterior_predictive", "prior_predictive",
    "BoundaryWarning", "ConvergenceWarning", "DataError", "DatasetNotFoundError", "Design", "FormulaError",
    "HierlmmError", "MLFit", "MissingDataWarning", "ModelSpec", "NotSupportedError", "RandomEffects",
    "RandomEffectsBlock", "RandomTerm", "SpecError", "UnsafeExpressionError", "build_design", "datasets", "fit",
    "fit_ml", "load_spec", "model_spec", "new_model_matrices", "pdBlocked", "pdCompSymm", "pdDiag", "pdIdent",
    "pdSymm", "predict", "profiled_deviance", "summary", "to_dict", "ImpliedCovariance", "icc",
    "implied_covariance", "MarginalFit", "fit_marginal", "simulate", "VarianceFunction", "parse_weights", "varExp",
    "varIdent", "varPower", "CorrelatedBayesFit", "fit_bayes_correlated",
]
