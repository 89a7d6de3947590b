"""Stage 4, the likelihood kernels: the *marginalised likelihood* (``b`` integrated out) of a design, in NumPy and
as compiled PyTensor Ops with analytic gradients (Numba), and the small-matrix algebra they share.

- ``marginalised_loglik``: per-subject marginalised log-likelihood from sufficient statistics (NumPy, PyTensor);
- ``marginalised_op``: the same as one Numba kernel and Op (iid errors);
- ``woodbury_op``: heteroscedastic independent errors, by the Woodbury identity;
- ``dense_gaussian_op``: stacked dense Gaussians (serially correlated errors);
- ``crossed_loglik``, ``crossed_op``: crossed grouping factors;
- ``small_linalg``, ``numba_cache``: the kernels' shared Cholesky/inverse helpers and their cache key.
"""
