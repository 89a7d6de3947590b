"""The corExp range's 95% interval of the chapter's Models I and II (section 3.7, AIDS, REML) against nlme 3.1-162
(tests/fixtures/corexp_interval_reference.json, made by tests/fixtures/make_corexp_interval_reference.R, and
../shared/reference/aids_corexp_ri.json).

nlme's interval is log(range) +- 1.96 sqrt(apVar[range, range]) mapped back by exp, apVar the inverse of minus its
fdHess Hessian of the REML log-likelihood (beta integrated out, sigma not profiled) in pdNatural's parameters of D,
log(range) and log(sigma). hierlmm's is the same interval from the Hessian of the log-likelihood profiled over sigma
in its own parameters (log-Cholesky, log(range)): at the maximum the log(range) element of the inverse Hessian does
not depend on how the other parameters are written, nor on whether sigma is profiled. They agree once nlme's step is
large enough for rounding (``lmeControl(.relStep = 1e-3)``). For Model II nlme's default step (eps^(1/3) ~ 6e-6) is
not: its interval (0.067, 4.07) is rounding noise, moving to (0.044, 6.21) at ``.relStep = 6e-6`` and (0.026, 10.6)
at 1e-5 (docs/serial_correlation.md, "Why Model II's interval differs from nlme's default").
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from paths import FIXTURES

import hierlmm
from hierlmm.engines.reml.correlated_fit import optimiser_theta
from hierlmm.engines.reml.correlated_likelihood import profile, profile_and_gradient
from hierlmm.engines.reml.finite_differences import central_hessian, hessian_from_gradient
from hierlmm.engines.reml.profiled_likelihood import layout_for

REFERENCE = json.loads((FIXTURES / "corexp_interval_reference.json").read_text())
FIXED = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
RANDOM = {"model_I": "(1 | patient)", "model_II": "(obstime | patient)"}
CORRELATION = "corExp(form = ~ obstime | patient)"
STABLE_STEP = "s1e_3"  # lmeControl(.relStep = 1e-3): on the plateau where nlme's interval no longer moves
RTOL = 2e-3  # on the bounds, against nlme's stable-step interval (measured: Model I 1e-4, Model II 7e-4)


@pytest.fixture(scope="module")
def fits(chapter_data):
    data = chapter_data("aids")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both fits converge without a warning
        return {name: hierlmm.fit(f"{FIXED} + {random}", data, correlation=CORRELATION)
                for name, random in RANDOM.items()}


def _var_log_range(fit) -> float:
    return float(fit.cov_theta[fit._slice("correlation"), fit._slice("correlation")][0, 0])


@pytest.mark.parametrize("name", ["model_I", "model_II"])
def test_the_range_interval_matches_nlme_with_a_step_above_rounding(fits, name):
    ref, fit = REFERENCE[name], fits[name]
    assert fit.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.correlation_parameters["range"] == pytest.approx(ref["range"], rel=1e-3)
    stable = ref["steps"][STABLE_STEP]
    np.testing.assert_allclose(fit.correlation_intervals()["range"], stable["range_ci"], rtol=RTOL)
    assert _var_log_range(fit) == pytest.approx(stable["var_log_range"], rel=RTOL)


def test_model_I_matches_the_shared_reference_at_nlmes_default_step(fits, reference):
    """Model I's likelihood is curved enough in log(range) for nlme's default step: the chapter's reference
    (1.6250, 3.2320) is hierlmm's (1.6243, 3.2334) to 5e-4."""
    ref = reference("aids_corexp_ri")
    np.testing.assert_allclose(fits["model_I"].correlation_intervals()["range"], ref["range_ci"], rtol=1e-3)
    assert REFERENCE["model_I"]["steps"]["default"]["range_ci"] == pytest.approx(ref["range_ci"], rel=1e-12)


def test_nlmes_default_step_interval_for_model_II_is_rounding_noise(fits):
    """nlme's apVar for Model II at its default step and its neighbours: var(log range) jumps between 1.09 and 2.36
    for steps 5e-6 ... 1e-5, and settles (within 0.2%) from 3e-4 to 3e-3, where hierlmm's is."""
    steps = REFERENCE["model_II"]["steps"]
    noisy = [steps[s]["var_log_range"] for s in ("default", "s5e_6", "s6e_6", "s7e_6", "s8e_6", "s1e_5")]
    stable = [steps[s]["var_log_range"] for s in ("s3e_4", "s1e_3", "s3e_3")]
    assert max(noisy) / min(noisy) > 2
    assert max(stable) / min(stable) < 1.003
    hierlmm_var = _var_log_range(fits["model_II"])
    assert min(stable) * 0.998 < hierlmm_var < max(stable) * 1.002
    assert hierlmm_var / steps["default"]["var_log_range"] > 2.5  # the (0.018, 15.4) against (0.067, 4.07)


def _natural_full_reml(fit):
    """minus nlme's lmeApVar objective: the REML log-likelihood with sigma free, in (log sd_0, log sd_1,
    log((1 + rho) / (1 - rho)), log(range), log(sigma)), D on the scale of y (pdNatural)."""
    layout, n_minus_p = layout_for(fit.design), fit.design.n_obs - fit.design.p

    def value(x: np.ndarray) -> float:
        sd, rho, sigma = np.exp(x[:2]), np.tanh(x[2] / 2), np.exp(x[4])
        D = np.outer(sd, sd) * np.array([[1.0, rho], [rho, 1.0]])
        theta = np.r_[layout.from_factors([np.linalg.cholesky(D) / sigma]), x[3]]
        loglik, _, sigma2_hat, _ = profile(fit.design, fit.batches, fit.structure, theta, True)
        ratio = sigma2_hat / sigma**2
        return -(loglik + 0.5 * n_minus_p * (np.log(ratio) + 1 - ratio))

    sd = np.sqrt(np.diag(fit.D[0]))
    rho = fit.D[0][0, 1] / (sd[0] * sd[1])
    x = np.r_[np.log(sd), np.log((1 + rho) / (1 - rho)), np.log(fit.correlation_parameters["range"]),
              np.log(fit.sigma)]
    return value, x


def test_model_II_variance_is_that_of_the_exact_hessian_in_nlmes_parameters(fits):
    """The log(range) variance from three Hessians that share no finite-difference step with the fit's: nlme's own
    objective and parameters by central differences at 1e-3 and 3e-3, and the profiled likelihood's analytic
    gradient differenced (2.9742). All within 1e-3 of hierlmm's 2.9735; nlme's default step gives 1.0947."""
    fit = fits["model_II"]
    value, x = _natural_full_reml(fit)
    np.testing.assert_allclose(x, list(REFERENCE["model_II"]["apVar_pars"].values()), rtol=1e-3, atol=1e-4)
    ours = _var_log_range(fit)
    for h in (1e-3, 3e-3):
        assert np.linalg.inv(central_hessian(value, x, h=h))[3, 3] == pytest.approx(ours, rel=1e-3)

    def minus_profile(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loglik, gradient = profile_and_gradient(fit.design, fit.batches, fit.structure, theta, True)
        return -loglik, -gradient

    analytic = np.linalg.inv(hessian_from_gradient(minus_profile, optimiser_theta(fit)))[3, 3]
    assert analytic == pytest.approx(ours, rel=1e-3)
