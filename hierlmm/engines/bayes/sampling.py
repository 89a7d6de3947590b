"""Posterior draws of a PyMC model by nutpie's NUTS, with the log-density compiled once and cached on disk.

``pm.sample`` with nutpie compiles the model's log-density to a Numba C callback every time it is called (about
10 s for the chapter's models, before a single draw). For the marginal sampler's small parameter vector hierlmm
instead compiles the log-density and its gradient with PyTensor (whose compiled pieces are cached on disk, as is
the Numba kernel of :mod:`hierlmm.kernels.marginalised_op`) and lets nutpie call it as a Python function
(``nutpie.compiled_pyfunc.from_pyfunc``). The draws are the same NUTS draws of the same density; only the route
from the PyMC model to the sampler differs. Written here because neither PyMC nor nutpie offers a cached route.

Notation
--------
``x`` is the unconstrained parameter vector (PyMC's value variables, e.g. ``sigma_log__``, raveled and joined);
the posterior holds the constrained values under the PyMC variable names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits


def _joined_functions(model: Any):
    """``x -> (logp, dlogp/dx)`` and ``x -> constrained values`` for the model's free variables."""
    import pytensor
    import pytensor.tensor as pt
    from pymc.pytensorf import join_nonshared_inputs

    value_vars = model.continuous_value_vars
    if len(value_vars) != len(model.value_vars):
        raise ValueError("posterior_draws samples continuous models only")
    point = model.initial_point()
    logp = model.logp()
    grad = pt.concatenate([g.ravel() for g in pt.grad(logp, value_vars)])
    rvs = [model.values_to_rvs[v] for v in value_vars]
    constrained = []
    for v, rv in zip(value_vars, rvs, strict=True):
        transform = model.rvs_to_transforms.get(rv)
        constrained.append(v if transform is None else transform.backward(v, *rv.owner.inputs))
    (logp_j, grad_j, *values_j), x = join_nonshared_inputs(point, [logp, grad, *constrained], value_vars)
    logp_fn = pytensor.function([x], [logp_j, grad_j], mode="NUMBA")  # compiled pieces are cached on disk
    logp_fn.trust_input = True
    values_fn = pytensor.function([x], values_j, mode="NUMBA")
    sizes = [int(np.prod(point[v.name].shape)) for v in value_vars]
    return logp_fn, values_fn, [rv.name for rv in rvs], value_vars, sizes


def sample_posterior(
    model: Any,
    *,
    chains: int,
    draws: int,
    tune: int,
    cores: int,
    seed: int,
    progressbar: bool = False,
    **nuts: Any,
) -> xr.DataTree:
    """Draw from the posterior of a continuous PyMC ``model`` with nutpie (see the module notes).

    Chains start at the model's initial values (``model.set_initval``) jittered by U(-1, 1) on the unconstrained
    scale, as ``pm.sample`` does. ``nuts`` goes to ``nutpie.sample`` (e.g. ``target_accept``,
    ``use_grad_based_mass_matrix``).

    Returns
    -------
    DataTree
        ``posterior`` (every free variable, constrained, with the model's dims) and nutpie's ``sample_stats``.
    """
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc
    from pymc.initial_point import make_initial_point_fn

    logp_fn, values_fn, names, value_vars, sizes = _joined_functions(model)
    n_dim = int(sum(sizes))
    start_fn = make_initial_point_fn(model=model, jitter_rvs=set(model.free_RVs), return_transformed=True)

    def make_logp_fn():  # nutpie calls this once per chain: chains run as threads, each needs its own storage
        fn = logp_fn.copy(share_memory=False)
        fn.trust_input = True

        def logp(x, **_):
            value, grad = fn(np.asarray(x, dtype=np.float64))
            return float(value), grad

        return logp

    def make_expand_fn(*_):
        def expand(x, **_):
            return {"x": np.array(x, dtype=np.float64)}

        return expand

    def initial_point(chain_seed):
        start = start_fn(int(chain_seed) % (2**32))
        return np.concatenate([np.asarray(start[v.name], dtype=np.float64).ravel() for v in value_vars])

    compiled = from_pyfunc(n_dim, make_logp_fn, make_expand_fn, [np.dtype("float64")], [(n_dim,)], ["x"],
                           make_initial_point_fn=initial_point)
    # The log-density is a Python callable holding the GIL, so chains cannot run in parallel: on one thread they take
    # turns without contention (AIDS, 4 x 2000 draws: 3.4 s on one thread, 4.5 s on two). ``cores`` is accepted for
    # the signature's sake and otherwise unused here.
    del cores
    # One BLAS thread: the crossed-factor log-density (hierlmm.kernels.crossed_loglik) multiplies 42 x 42 matrices, and
    # waking OpenBLAS's threads for each cost 3-50x per gradient on glaucoma (0.34 ms against 1.3-17 ms, measured here).
    with threadpool_limits(1, user_api="blas"):
        raw = nutpie.sample(compiled, chains=chains, cores=1, draws=draws, tune=tune, seed=seed,
                            progress_bar=progressbar, save_warmup=False, **nuts)
    x = raw["posterior"]["x"].values  # (chain, draw, n_dim)
    C, D = x.shape[:2]  # noqa: N806
    per_draw = [values_fn(row) for row in x.reshape(C * D, n_dim)]
    post = xr.Dataset(coords={"chain": np.arange(C), "draw": np.arange(D)})
    for k, name in enumerate(names):
        values = np.stack([d[k] for d in per_draw]).reshape(C, D, *np.shape(per_draw[0][k]))
        dims = model.named_vars_to_dims.get(name)
        dims = ("chain", "draw", *(dims or [f"{name}_dim_{i}" for i in range(values.ndim - 2)]))
        coords = {d: list(model.coords[d]) for d in dims[2:] if d in model.coords}
        post[name] = xr.DataArray(values, dims=dims, coords=coords)
    post.attrs = {**raw["posterior"].attrs, "inference_library": "nutpie", "hierlmm_route": "pyfunc"}
    return xr.DataTree.from_dict({"posterior": post, "sample_stats": raw["sample_stats"].to_dataset()})
