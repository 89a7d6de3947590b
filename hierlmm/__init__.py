"""hierlmm: Bayesian linear mixed-effects models, with ML/REML fits that agree with nlme and lme4.

The pipeline, every stage public::

    spec = hierlmm.model_spec("CD4 ~ obstime + obstime:drug + (obstime | patient)")   # ModelSpec
    design = hierlmm.build_design(spec, data)                                           # Design (y, X, blocks)
    fit = hierlmm.fit_ml(design, "REML")                                                # MLFit
    print(hierlmm.summary(fit))

or in one call: ``hierlmm.fit(formula, data)``. Every fit, REML or Bayesian, of every kind, offers one interface
(:class:`FitResult`, :class:`BayesResult`): ``beta``, ``D``, ``sigma``, ``fixef()``, ``varcorr()``, ``ranef()``,
``fitted()``, ``residuals()``, ``predict()``, ``summary()``. The package's layout follows the pipeline:
``formula -> spec -> design -> structures -> kernels -> engines -> inference -> report -> api/cli``
(docs/architecture.md).
"""

from hierlmm import datasets, tvc
from hierlmm.api import compare_models, fit, fit_bayes, fit_design, fit_ml, model_spec, predict
from hierlmm.design.design import Design, RandomEffectsBlock, build_design, new_model_matrices
from hierlmm.engines.bayes.bayes_fit import BayesFit, Diagnostics
from hierlmm.engines.bayes.correlated_fit import CorrelatedBayesFit, fit_bayes_correlated
from hierlmm.engines.bayes.hierarchical_model import BayesModel, build_bayes_model
from hierlmm.engines.bayes.marginal_model import MarginalBayesFit
from hierlmm.engines.bayes.priors import Priors, default_priors
from hierlmm.engines.bayes.sampling import SamplerOptions
from hierlmm.engines.fit_result import BayesResult, FitResult
from hierlmm.engines.reml.correlated_fit import CorrelatedFit, fit_correlated
from hierlmm.engines.reml.crossed_fit import CrossedFit, fit_crossed
from hierlmm.engines.reml.marginal_model import MarginalFit, fit_marginal
from hierlmm.engines.reml.ml_fit import MLFit
from hierlmm.engines.reml.profiled_likelihood import profiled_deviance
from hierlmm.engines.reml.refit import refit
from hierlmm.engines.reml.result import RandomEffects
from hierlmm.errors import (
    BoundaryWarning,
    ConvergenceWarning,
    DataError,
    DatasetNotFoundError,
    FitFileError,
    FormulaError,
    HierlmmError,
    MissingDataWarning,
    NotSupportedError,
    ParetoKWarning,
    SpecError,
    UnsafeExpressionError,
    UnusedOutcomesWarning,
)
from hierlmm.inference.bayes_vs_ml import compare, compare_ranef
from hierlmm.inference.effects import Effects, effects
from hierlmm.inference.fixed_effect_tests import anova
from hierlmm.inference.implied_covariance import ImpliedCovariance, icc, implied_covariance
from hierlmm.inference.likelihood_ratio import LRTResult, lrt
from hierlmm.inference.loo import compare_bayes, loo
from hierlmm.inference.posterior_checks import (
    loo_pit,
    marginal_check,
    predictive_check,
    quantile_residuals,
    residual_summary,
    subject_coverage,
    uniform_qq,
    variogram_check,
)
from hierlmm.inference.posterior_contrasts import contrast, variance_components
from hierlmm.inference.posterior_predictive import add_posterior_predictive, prior_predictive
from hierlmm.inference.prediction import Prediction, trajectories
from hierlmm.inference.shrinkage import Shrinkage, shrinkage
from hierlmm.inference.simulation import simulate, simulate_fit
from hierlmm.inference.variogram import model_variogram, variogram
from hierlmm.report import plots
from hierlmm.report.fit_files import load, save
from hierlmm.report.interpretation_plots import effect_plot, shrinkage_plot
from hierlmm.report.summaries import summary, to_dict
from hierlmm.spec.model_files import load_spec
from hierlmm.spec.model_spec import ModelSpec, RandomTerm, pdBlocked, pdCompSymm, pdDiag, pdIdent, pdSymm
from hierlmm.structures.variance_functions import VarianceFunction, parse_weights, varExp, varIdent, varPower

__version__ = "0.1.0"

__all__ = [
    "BayesFit", "BayesModel", "Diagnostics", "Priors", "build_bayes_model", "compare", "compare_ranef",
    "default_priors", "fit_bayes", "plots", "trajectories", "add_posterior_predictive", "prior_predictive",
    "BoundaryWarning", "ConvergenceWarning", "DataError", "DatasetNotFoundError", "Design", "FormulaError",
    "HierlmmError", "MLFit", "MissingDataWarning", "ModelSpec", "NotSupportedError", "RandomEffects",
    "RandomEffectsBlock", "RandomTerm", "SpecError", "UnsafeExpressionError", "build_design", "datasets", "fit",
    "fit_ml", "load_spec", "model_spec", "new_model_matrices", "pdBlocked", "pdCompSymm", "pdDiag", "pdIdent",
    "pdSymm", "predict", "Prediction", "profiled_deviance", "summary", "to_dict", "ImpliedCovariance", "icc",
    "implied_covariance", "MarginalFit", "fit_marginal", "simulate", "VarianceFunction", "parse_weights", "varExp",
    "varIdent", "varPower", "CorrelatedBayesFit", "fit_bayes_correlated", "FitResult", "BayesResult", "SamplerOptions",
    "CorrelatedFit", "fit_correlated", "CrossedFit", "fit_crossed", "MarginalBayesFit", "fit_design", "anova",
    "loo", "compare_bayes", "contrast", "variance_components", "ParetoKWarning", "lrt", "LRTResult", "compare_models",
    "refit", "simulate_fit", "variogram", "model_variogram",
    "residual_summary", "subject_coverage", "predictive_check", "loo_pit", "quantile_residuals", "uniform_qq",
    "variogram_check", "marginal_check",
    "tvc", "UnusedOutcomesWarning",
    "effects", "Effects", "effect_plot", "shrinkage", "Shrinkage", "shrinkage_plot",
    "save", "load", "FitFileError",
]
