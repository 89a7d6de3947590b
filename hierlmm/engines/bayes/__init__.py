"""The Bayesian engine: PyMC models sampled by NUTS (nutpie), results as ArviZ DataTrees.

- ``hierarchical_model`` + ``bayes_fit``: the hierarchical model (marginalised or joint sampler), ``BayesFit``;
- ``correlated_model`` + ``correlated_fit``: serially correlated and/or heteroscedastic errors;
- ``marginal_model``: the *marginal model* by NUTS (``D`` may be indefinite);
- ``priors``, ``random_effects_covariance`` (each block's ``D`` under its LKJ/half-t priors),
  ``parametrisation`` (centred or not), ``sampling`` (nutpie, cached), ``posterior_tree`` and
  ``conditional_effects`` (exact draws of every ``b_i``).
"""
