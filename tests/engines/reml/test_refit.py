"""hierlmm.engines.reml.refit.refit: the same model again with another method and/or response, by the engine that
made the fit, without the data frame. A refit must reach the optimum a fit from scratch reaches (log-likelihood to
1e-6 absolute): with the other method, with a new response (against a fit to data holding that response), and
unchanged with neither."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from simulated import simulate

import hierlmm
from hierlmm.engines.reml.refit import refit
from hierlmm.inference.simulation import simulate_fit

FIXED = "y ~ t + x"
KINDS = {
    "plain": (f"{FIXED} + (t | id)", {}),
    "pddiag": (f"{FIXED} + (t || id)", {}),
    "nested": (f"{FIXED} + (1 | id/eye)", {}),
    "crossed": (f"{FIXED} + (1 | id) + (1 | rater)", {}),
    "correlated": (f"{FIXED} + (1 | id)", {"correlation": "corExp(form = ~ t | id)"}),
    "heteroscedastic": (f"{FIXED} + (t | id)", {"weights": "varIdent(form = ~ 1 | g)"}),
    "variance_covariate": (f"{FIXED} + (1 | id)", {"weights": "varExp(form = ~ t)"}),
    "marginal": (f"{FIXED} + (t | id)", {"kind": "marginal"}),
}


@pytest.fixture(scope="module")
def data():
    frame = simulate(21, n_subjects=40, nested=True)
    frame["rater"] = [f"r{k % 5}" for k in range(len(frame))]
    return frame


def quiet(call, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args, **kwargs)


@pytest.mark.parametrize("kind", list(KINDS))
def test_refit_reaches_a_fresh_fits_optimum(kind, data):
    formula, options = KINDS[kind]
    fit = quiet(hierlmm.fit, formula, data, **options)
    same = quiet(refit, fit)
    assert type(same) is type(fit) and same.method == "REML"
    np.testing.assert_allclose(same.loglik, fit.loglik, atol=1e-6)
    ml = quiet(refit, fit, method="ML")
    assert ml.method == "ML"
    np.testing.assert_allclose(ml.loglik, quiet(hierlmm.fit, formula, data, method="ML", **options).loglik, atol=1e-6)
    y = simulate_fit(fit, 1, seed=8)[0]
    new = quiet(refit, fit, y=y)
    frame = data.copy()
    frame.loc[frame.index[fit.design.rows], "y"] = y
    np.testing.assert_allclose(new.loglik, quiet(hierlmm.fit, formula, frame, **options).loglik, atol=1e-6)
    np.testing.assert_array_equal(new.design.y, y)
    np.testing.assert_array_equal(fit.design.y, data["y"].to_numpy()[fit.design.rows])  # the fit is left as it was
    both = quiet(refit, fit, method="ml", y=y)
    np.testing.assert_allclose(both.loglik, quiet(hierlmm.fit, formula, frame, method="ML", **options).loglik,
                               atol=1e-6)


def test_refit_refuses_what_it_cannot_use(data):
    fit = quiet(hierlmm.fit, f"{FIXED} + (1 | id)", data)
    with pytest.raises(hierlmm.SpecError, match="Unknown estimation method"):
        refit(fit, method="Bayes")
    with pytest.raises(hierlmm.DataError, match="one value per row"):
        refit(fit, y=np.zeros(3))
    y = fit.design.y.copy()
    y[0] = np.nan
    with pytest.raises(hierlmm.DataError, match="missing or infinite"):
        refit(fit, y=y)
    with pytest.raises(hierlmm.NotSupportedError, match="ML/REML result"):
        refit(object())
