"""Full-length Bayesian checks on the chapter's AIDS model (marked slow: `make bench` runs them, CI does not).

Targets from the issue: posterior means within 0.2 posterior SD of brms 2.18 (4 chains x 1000 draws), R-hat <= 1.01
and no divergences; both samplers agree within Monte Carlo error.
"""

from __future__ import annotations

import numpy as np
import pytest

import hierlmm

pytestmark = pytest.mark.slow

BRMS = {  # posterior mean, sd (brms 2.18, 4 chains x 1000 draws; from the issue)
    "beta[(Intercept)]": (7.189, 0.223), "beta[obstime]": (-0.1632, 0.0210), "beta[obstime:drugddI]": (0.0280, 0.0299),
    "sd[patient:(Intercept)]": (4.588, 0.164), "sd[patient:obstime]": (0.173, 0.0185),
    "cor[patient:(Intercept),obstime]": (-0.148, 0.085), "sigma": (1.758, 0.049),
}


@pytest.fixture(scope="module")
def aids_design(chapter_data):
    return hierlmm.build_design(hierlmm.model_spec("CD4 ~ obstime + obstime:drug + (obstime | patient)"),
                                chapter_data("aids"))


@pytest.fixture(scope="module")
def fits(aids_design):
    # the joint sampler with the parametrisation hierlmm chooses (intercepts centred on AIDS; docs/bayes.md)
    return {"marginal": hierlmm.fit_bayes(aids_design, sampler="marginal", progressbar=False),
            "joint": hierlmm.fit_bayes(aids_design, sampler="joint", centered="auto", progressbar=False)}


def test_auto_centres_the_aids_intercepts_only(fits):
    assert fits["joint"].bayes_model.centered == ("patient:(Intercept)",)


@pytest.mark.parametrize("sampler", ["marginal", "joint"])
def test_aids_posterior_matches_brms_and_diagnostics_pass(fits, sampler):
    table = fits[sampler].summary()
    for name, (mean, sd) in BRMS.items():
        assert abs(table.loc[name, "mean"] - mean) < 0.2 * sd, (name, table.loc[name, "mean"], mean)
    diag = fits[sampler].diagnostics()
    assert diag.divergences == 0
    assert diag.max_rhat <= 1.01, str(diag)


def test_both_samplers_agree_within_monte_carlo_error(fits):
    a, b = fits["marginal"].summary(), fits["joint"].summary()
    z = (a["mean"] - b["mean"]) / np.sqrt(a["mcse_mean"] ** 2 + b["mcse_mean"] ** 2)
    assert np.all(np.abs(z) < 4), z
    ra, rb = fits["marginal"].ranef()["patient"], fits["joint"].ranef()["patient"]
    diff = (ra[("(Intercept)", "mean")] - rb[("(Intercept)", "mean")]) / ra[("(Intercept)", "sd")]
    assert np.abs(diff).max() < 0.3


def test_posterior_of_v_of_patient_450_centres_on_nlme(fits, reference):
    """Issue 4: V_450's posterior mean is within Monte Carlo error plus the posterior-mean-versus-REML gap, which
    with 467 patients is a small fraction of the posterior SD."""
    ref = np.array(reference("aids_ri_rs_reml")["V_patient450"])
    post = hierlmm.implied_covariance(fits["marginal"], subject="450")
    mean, sd = post.V.mean(axis=0), post.V.std(axis=0)
    assert np.all(np.abs(mean - ref) < 0.5 * sd), (mean - ref) / sd
