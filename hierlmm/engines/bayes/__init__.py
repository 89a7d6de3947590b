"""The Bayesian engine: PyMC models sampled by NUTS (nutpie), results as ArviZ DataTrees.

- ``hierarchical_model`` + ``bayes_fit``: the hierarchical model (marginalised or joint sampler), ``BayesFit``;
- ``correlated_model`` + ``correlated_fit``: serially correlated and/or heteroscedastic errors;
- ``marginal_model``: the *marginal model* by NUTS (``D`` may be indefinite);
- ``posterior_result``: what every Bayesian result shares (the fit interface from the draws);
- ``priors``, ``random_effects_covariance`` (each block's ``D`` under its LKJ/half-t priors), ``centring`` (centred
  fixed effects), ``parametrisation`` (centred random effects or not), ``sampling`` (nutpie, cached; the
  ``SamplerOptions``), ``posterior_tree`` and ``conditional_effects`` (exact draws of every ``b_i``).
"""
