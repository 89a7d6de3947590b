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

import numbers
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytensor
import pytensor.tensor as pt
import xarray as xr
from pymc.initial_point import make_initial_point_fn
from pymc.pytensorf import join_nonshared_inputs
from threadpoolctl import threadpool_limits

from hierlmm.errors import SpecError


@dataclass(frozen=True)
class SamplerOptions:
    """NUTS settings, the same for every Bayesian engine (:func:`hierlmm.fit_bayes` and the drivers behind it).

    Every value is checked when the options are made (a :class:`~hierlmm.errors.SpecError` names the option, the
    value and what is allowed). Counts are whole numbers: a Python or NumPy integer, never a bool, and never a float,
    even ``2.0`` (``draws=1e3`` is refused with the fix ``draws=1000``), so that a float computed by mistake is not
    silently truncated.

    Attributes
    ----------
    chains, draws
        Chains (>= 1), and draws kept per chain after tuning (>= 1).
    tune
        Tuning steps per chain (>= 0); None: the engine's default (1000; 2000 with a correlation structure, whose
        posteriors need the longer adaptation: docs/serial_correlation.md).
    cores
        Chains run in parallel by the joint sampler (``pm.sample``; >= 1). The marginalised samplers' log-density is a
        Python callable holding the GIL, so their chains take turns on one thread whatever ``cores`` says.
    seed
        Seed of the chains and of the exact draws of ``b``: a whole number from 0 to 2**32 - 1.
    target_accept
        NUTS' target acceptance rate, strictly between 0 and 1; None: the engine's default (nutpie's 0.8; 0.9 for
        the joint sampler and for serially correlated or heteroscedastic errors).
    progressbar
        Show sampling progress: True or False.
    """

    chains: int = 4
    draws: int = 1000
    tune: int | None = None
    cores: int = 2
    seed: int = 1
    target_accept: float | None = None
    progressbar: bool = True

    def __post_init__(self) -> None:
        """The one check of NUTS settings: every route to a sampler (:func:`hierlmm.fit_bayes`, the engines' drivers,
        the command line, ``dataclasses.replace``) builds a ``SamplerOptions``, so a bad value is refused here, before
        any model is compiled or sampled, and never reaches nutpie or PyMC as a bare traceback."""
        for name, (low, high, example) in _WHOLE_NUMBERS.items():
            value = getattr(self, name)
            if name == "tune" and value is None:
                continue
            object.__setattr__(self, name, _whole_number(name, value, low, high, example))
        if self.target_accept is not None:
            object.__setattr__(self, "target_accept", _acceptance(self.target_accept))
        if not isinstance(self.progressbar, bool | np.bool_):
            raise SpecError("progressbar must be True or False.", given=_shown(self.progressbar),
                            fix="Pass progressbar=False (no progress bar) or progressbar=True.")
        object.__setattr__(self, "progressbar", bool(self.progressbar))

    def with_default_tune(self, tune: int) -> SamplerOptions:
        """These options with ``tune`` filled in when it was left to the engine."""
        return self if self.tune is not None else replace(self, tune=tune)

    def nuts_settings(self, **defaults: Any) -> dict[str, Any]:
        """Keywords for nutpie: an engine's ``defaults`` (e.g. its adaptation), with ``target_accept`` when given."""
        return {**defaults, **({} if self.target_accept is None else {"target_accept": self.target_accept})}

    @classmethod
    def resolve(cls, options: SamplerOptions | None, **settings: Any) -> SamplerOptions:
        """``options``, or options from individual keyword ``settings`` (None: not given); both is refused."""
        given = {k: v for k, v in settings.items() if v is not None}
        if options is None:
            return cls(**given)
        if not isinstance(options, SamplerOptions):
            raise SpecError("options must be a hierlmm SamplerOptions.", given=type(options).__name__,
                            fix="Pass options=hierlmm.SamplerOptions(chains=4, draws=1000), or the keywords alone.")
        if given:
            raise SpecError("NUTS settings were given twice: as options= and as keywords.", given=sorted(given),
                            fix=f"Put them in the options: dataclasses.replace(options, {', '.join(given)}=...).")
        return options


# option: (smallest, largest or None, example) of the whole-number settings
_WHOLE_NUMBERS: dict[str, tuple[int, int | None, int]] = {
    "chains": (1, None, 4), "draws": (1, None, 1000), "tune": (0, None, 1000), "cores": (1, None, 2),
    "seed": (0, 2**32 - 1, 1),
}


def _shown(value: Any) -> str:
    """A value quoted back with its type: ``2.5 (float)``, ``'abc' (str)``."""
    return f"{value!r} ({type(value).__name__})"


def _whole_number(name: str, value: Any, low: int, high: int | None, example: int) -> int:
    """``value`` as an int if it is a whole number (a Python or NumPy integer, not a bool and not a float, even
    2.0) within ``[low, high]``; else a SpecError naming the option, the value and the allowed range."""
    allowed = f"a whole number >= {low}" if high is None else f"a whole number from {low} to {high} (2**32 - 1)"
    if name == "tune":
        allowed += ", or None for the engine's default"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        whole = isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer()
        fix = f"Pass {name}={int(value)} (an int, not a float)." if whole else f"Pass e.g. {name}={example}."
        raise SpecError(f"{name} must be {allowed}.", given=_shown(value), fix=fix)
    if value < low or (high is not None and value > high):
        raise SpecError(f"{name} must be {allowed}.", given=_shown(value), fix=f"Pass e.g. {name}={example}.")
    return int(value)


def _acceptance(value: Any) -> float:
    """``target_accept`` as a float strictly between 0 and 1, else a SpecError (at 1.5 nutpie's adaptation drove the
    step size to 4e-18: the chains never moved)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_) and 0 < float(value) < 1
    if not ok:
        raise SpecError("target_accept must be a number strictly between 0 and 1.", given=_shown(value),
                        fix="Pass e.g. target_accept=0.9 (higher: smaller steps, fewer divergences), or leave it None "
                            "for the engine's default.")
    return float(value)


def _joined_functions(model: Any):
    """``x -> (logp, dlogp/dx)`` and ``x -> constrained values`` for the model's free variables."""

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


def sample_posterior(model: Any, options: SamplerOptions, **nuts: Any) -> xr.DataTree:
    """Draw from the posterior of a continuous PyMC ``model`` with nutpie (see the module notes).

    Chains start at the model's initial values (``model.set_initval``) jittered by U(-1, 1) on the unconstrained
    scale, as ``pm.sample`` does. ``options`` are the chains, draws, tuning steps (required here), seed and progress
    bar; ``nuts`` goes to ``nutpie.sample`` (e.g. ``target_accept``, ``adaptation``).

    Returns
    -------
    DataTree
        ``posterior`` (every free variable, constrained, with the model's dims) and nutpie's ``sample_stats``.
    """
    import nutpie  # lazy: nutpie: ~1 s to import, needed only when sampling
    from nutpie.compiled_pyfunc import from_pyfunc  # lazy: nutpie: ~1 s to import, needed only when sampling

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
    # turns without contention (AIDS, 4 x 2000 draws: 3.4 s on one thread, 4.5 s on two); SamplerOptions.cores says so.
    if options.tune is None:
        raise SpecError("sample_posterior needs the number of tuning steps.", given="tune=None",
                        fix="Pass options.with_default_tune(1000).")
    # One BLAS thread: the crossed-factor log-density (hierlmm.kernels.crossed_loglik) multiplies 42 x 42 matrices, and
    # waking OpenBLAS's threads for each cost 3-50x per gradient on glaucoma (0.34 ms against 1.3-17 ms, measured here).
    with threadpool_limits(1, user_api="blas"):
        raw = nutpie.sample(compiled, chains=options.chains, cores=1, draws=options.draws, tune=options.tune,
                            seed=options.seed, progress_bar=options.progressbar, save_warmup=False, **nuts)
    x = raw["posterior"]["x"].values  # (chain, draw, n_dim)
    C, D = x.shape[:2]
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
