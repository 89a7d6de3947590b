"""hierlmm.engines.bayes.sampling: nutpie on a PyTensor-compiled log-density gives the right posterior and constrained
values."""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytest

from hierlmm.engines.bayes.sampling import SamplerOptions, sample_posterior


def test_sample_posterior_matches_a_conjugate_posterior_and_transforms_back():
    rng = np.random.default_rng(4)
    y = rng.normal(1.5, 1.0, size=25)
    with pm.Model(coords={"k": ["a", "b"]}) as model:
        mu = pm.Normal("mu", 0.0, 1.0, dims="k")
        pm.Normal("y", mu[0], 1.0, observed=y)
        pm.HalfNormal("s", 2.0)  # no data: its posterior is its prior, through the log transform and Jacobian
    tree = sample_posterior(model, SamplerOptions(chains=4, draws=1000, tune=500, seed=3, progressbar=False))
    post = tree["posterior"]
    assert post["mu"].dims == ("chain", "draw", "k") and list(post["k"].values) == ["a", "b"]
    mu_a = post["mu"].sel(k="a").values.ravel()
    n = y.size
    exact_mean, exact_sd = y.sum() / (n + 1), 1 / np.sqrt(n + 1)
    # Monte Carlo error of the mean with >= 1000 effective draws: well under 0.1 sd
    assert abs(mu_a.mean() - exact_mean) < 0.1 * exact_sd
    assert mu_a.std() == pytest.approx(exact_sd, rel=0.1)
    s = post["s"].values.ravel()
    assert s.min() > 0
    assert s.mean() == pytest.approx(2.0 * np.sqrt(2 / np.pi), rel=0.1)
    assert post.sizes["chain"] == 4 and post.sizes["draw"] == 1000
    assert "diverging" in tree["sample_stats"]


def test_sample_posterior_is_reproducible_with_a_seed():
    with pm.Model() as model:
        pm.Normal("a", 0.0, 1.0)
    options = SamplerOptions(chains=2, draws=50, tune=50, seed=11, progressbar=False)
    first = sample_posterior(model, options)["posterior"]["a"].values
    again = sample_posterior(model, options)["posterior"]["a"].values
    np.testing.assert_array_equal(first, again)
