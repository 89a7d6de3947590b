"""Stage 6, inference from fitted models: what the fits imply and how they compare.

- ``implied_covariance``: the *implied* marginal covariance ``V_i`` of any fit, its correlations, the ICC;
- ``error_covariance``: a fit's within-subject error covariance on training or new rows;
- ``posterior_predictive``: posterior (and prior) predictive draws and trajectories of Bayesian fits;
- ``bayes_vs_ml``: posterior summaries beside REML estimates, shrinkage of ``b_i``;
- ``simulation``: responses drawn from a fit, or from either formulation of a spec with given parameters;
- ``hypotheses``: the contrast matrix ``L`` of hypotheses about ``beta`` that tests and contrasts read;
- ``fixed_effect_tests``: F tests of the fixed effects (nlme's ``anova``; nlme, Satterthwaite, Kenward-Roger DF);
- ``likelihood_ratio``: likelihood-ratio tests of nested fits and nlme's comparison table (``lrt``,
  ``compare_models``), with ``exact_null``: the finite-sample null of a variance component (RLRsim's);
- ``loo``: PSIS-LOO of Bayesian fits per subject or per observation, and their comparison;
- ``variogram``: the semi-variogram of a fit's residuals (nlme's ``Variogram``) and the one its correlation implies;
- ``posterior_checks``: posterior predictive checks (per subject, of a statistic), LOO-PIT, and DHARMa's
  simulation-based quantile residuals of any fit;
- ``posterior_contrasts``: posteriors of contrasts ``L beta`` and of variance components near zero;
- ``effects``: effect plots' data, the population mean over one covariate with the others held at stated values;
- ``shrinkage``: subjects' least-squares against empirical-Bayes (or posterior-mean) coefficients: partial pooling.
"""
