"""Stage 6, inference from fitted models: what the fits imply and how they compare.

- ``implied_covariance``: the *implied* marginal covariance ``V_i`` of any fit, its correlations, the ICC;
- ``error_covariance``: a fit's within-subject error covariance on training or new rows;
- ``posterior_predictive``: posterior (and prior) predictive draws and trajectories of Bayesian fits;
- ``bayes_vs_ml``: posterior summaries beside REML estimates, shrinkage of ``b_i``;
- ``simulation``: responses drawn from either formulation of a spec.
"""
