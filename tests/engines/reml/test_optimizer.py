"""The optimiser reaches the optimum from poor starting values, and its convergence checks can say no."""

from __future__ import annotations

import numpy as np
import pytest

import hierlmm
from hierlmm.engines.reml.profiled_likelihood import _minimize, _newton_check, optimize_theta, profiled_deviance


@pytest.fixture(scope="module")
def pbc_design(pbc2_with_basepro):
    spec = hierlmm.model_spec("log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex + (ns(year, 2) | id)")
    return hierlmm.build_design(spec, pbc2_with_basepro)


@pytest.mark.parametrize("scale", [-4.0, 3.0])
def test_far_starting_values_reach_the_same_optimum(pbc_design, scale):
    dev, layout, _ = profiled_deviance(pbc_design, "REML")
    natural = profiled_deviance(pbc_design, "REML", log_diagonal=False)[0]
    theta, _, _, report = optimize_theta(pbc_design, "REML")
    assert report.converged and report.scaled_gradient < 1e-4
    start = np.zeros(layout.size)
    start[layout.diagonal_mask()] = scale  # relative SDs of e^-4 or e^3
    theta_far, _, _, report_far = optimize_theta(pbc_design, "REML", start=start)
    assert report_far.converged
    assert natural(theta_far)[0] == pytest.approx(natural(theta)[0], abs=1e-6)
    # the reason for the safeguards: a single quasi-Newton run from tiny SDs may stall on the flat region
    single = _minimize(dev, start)
    assert single.fun >= natural(theta)[0] - 1e-6


def test_the_newton_check_rejects_a_saddle_point():
    def saddle(x):
        return x[0] ** 2 - x[1] ** 2, np.array([2 * x[0], -2 * x[1]])

    _, positive_definite, scaled, _, _ = _newton_check(saddle, np.zeros(2), np.ones(2, bool))
    assert not positive_definite and scaled == np.inf


def test_the_newton_check_measures_the_remaining_step():
    def bowl(x):
        return float(x @ x), 2 * x

    _, positive_definite, scaled, step, _ = _newton_check(bowl, np.array([0.5, -0.25]), np.ones(2, bool))
    assert positive_definite
    np.testing.assert_allclose(step, [0.5, -0.25], rtol=1e-6)  # one Newton step lands on the minimum
    assert scaled == pytest.approx(0.5, rel=1e-6)


def test_a_non_converged_fit_says_so(pbc_design, monkeypatch):
    import hierlmm.engines.reml.profiled_likelihood as reml

    # cripple the optimiser (one iteration, no Newton polish) and check that the report and warning say so
    monkeypatch.setattr(reml, "_minimize", lambda fun, x0, bounds=None: reml.scipy.optimize.minimize(
        fun, x0, jac=True, method="BFGS", options={"maxiter": 1}))
    monkeypatch.setattr(reml, "_newton_check", lambda f, x, free: (f(x)[0], True, 0.5, np.zeros(int(free.sum())),
                                                                    f(x)[1][free]))
    with pytest.warns(hierlmm.ConvergenceWarning, match="did not pass its convergence checks"):
        fit = hierlmm.fit_ml(pbc_design)
    assert not fit.optimizer.converged
    assert "NOT converged" in fit.summary()
