"""The ML/REML engine: profiled likelihoods optimised over ``theta``, one result type per kind of model.

- ``profiled_likelihood`` + ``ml_fit``: nested random effects with iid errors (per-subject sufficient statistics);
- ``crossed_fit``: crossed grouping factors (lme4's penalised least squares);
- ``correlated_likelihood`` + ``correlated_fit``: serially correlated and/or heteroscedastic errors (dense ``V_i``);
- ``marginal_model``: the *marginal model* (``D`` free to be indefinite, only every ``V_i`` positive definite);
- ``result``: what every ML/REML result shares (the fit interface, AIC/BIC, the printout);
- ``start``: the quiet fit other engines start from; ``t_table``, ``variance_intervals``, ``prediction``,
  ``finite_differences``: what the results use.
"""
