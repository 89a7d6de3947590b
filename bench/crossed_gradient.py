"""Crossed factors: the cost of one marginalised log-likelihood value and gradient, two ways.

On the full glaucoma data's ``thres ~ years + (1 | id) + (1 | field)`` (hierlmm.kernels.crossed_loglik): the PyTensor
expression differentiated automatically against the hand-written Numba kernel of hierlmm.kernels.crossed_op. Prints, for
each, the seconds to compile the model's log-density and gradient the way the sampler does
(hierlmm.engines.bayes.sampling, PyTensor's Numba backend; disk caches warm after the first run) and the microseconds
per call (fastest of 15 batches), with one BLAS thread as while sampling. Run twice for warm caches.

Usage: python bench/crossed_gradient.py [--calls 4500]
"""

from __future__ import annotations

import argparse
import time
import warnings
from unittest import mock

import numpy as np
from threadpoolctl import threadpool_limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4500)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import hierlmm
    from hierlmm.engines.bayes import hierarchical_model
    from hierlmm.engines.bayes.sampling import _joined_functions
    from hierlmm.kernels import crossed_loglik

    design = hierlmm.build_design(hierlmm.model_spec("thres ~ years + (1 | id) + (1 | field)"),
                                  hierlmm.datasets.load("glaucoma"))
    print(f"{'route':40s} {'compile s':>9s} {'us per value+gradient':>22s}")
    values = []
    original = crossed_loglik.crossed_loglik
    for label, kernel in (("PyTensor expression, autodiff", False), ("Numba kernel, analytic gradient", True)):
        def loglik(*a, kernel=kernel, **k):
            return original(*a, kernel=kernel, **k)

        with mock.patch.object(hierarchical_model, "crossed_loglik", loglik):  # the name build_bayes_model calls
            bm = hierarchical_model.build_bayes_model(design)
        t0 = time.perf_counter()
        logp_fn, _, _, _, sizes = _joined_functions(bm.model)
        compile_s = time.perf_counter() - t0
        x = np.full(sum(sizes), 0.1)
        values.append(logp_fn(x))
        with threadpool_limits(1, user_api="blas"):
            batches = []
            for _ in range(15):  # the fastest of 15 batches: the machine is shared, contention only adds time
                t0 = time.perf_counter()
                for _ in range(args.calls // 15):
                    logp_fn(x)
                batches.append((time.perf_counter() - t0) / (args.calls // 15) * 1e6)
            per_call = min(batches)
        print(f"{label:40s} {compile_s:9.1f} {per_call:22.0f}")
    print(f"largest difference in value and gradient between the two: "
          f"{max(abs(float(values[0][0] - values[1][0])), float(np.max(np.abs(values[0][1] - values[1][1])))):.2e}")


if __name__ == "__main__":
    main()
