"""Likelihood-ratio tests and nlme's comparison table (hierlmm.inference.likelihood_ratio) against R: nlme 3.1-162's
anova(m0, m1), RLRsim 3.1-8 and a parametric bootstrap in lme4 1.1-31 (tests/fixtures/model_comparison_reference.json,
made by make_model_comparison_reference.R), the shared reference aids_lrt_random_quadratic.json with the optimum each
R fit reaches (tests/fixtures/aids_quadratic_reference.json), and RLRsim's exact null of a weak random intercept
(``weak_intercept`` of tests/fixtures/boundary_reference.json, made by make_boundary_reference.R).

Tolerances (issue 14): the LRT statistic and p-value 1e-4 relative, AIC/BIC 1e-3 absolute; simulated p-values within
Monte Carlo error (a z-test of the two simulated proportions at 4.5 combined standard deviations)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from montecarlo import within_monte_carlo
from paths import FIXTURES, ROOT
from simulated import simulate

import hierlmm
from hierlmm.engines.bayes.posterior_result import PosteriorResult
from hierlmm.engines.reml.variance_intervals import log_likelihood
from hierlmm.inference.likelihood_ratio import LRTResult, compare_models, linear_model_loglik, lrt

REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "model_comparison_reference.json").read_text())
AIDS_QUADRATIC = json.loads((FIXTURES / "aids_quadratic_reference.json").read_text())
WEAK = json.loads((FIXTURES / "boundary_reference.json").read_text())["weak_intercept"]
AIDS = "CD4 ~ obstime + obstime:drug"
PBC = "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex"


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hierlmm.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def datasets(chapter_data):
    aids = chapter_data("aids")
    aids60 = aids[aids["patient"].astype(str).astype(int) <= 60].copy()
    aids60["patient"] = aids60["patient"].cat.remove_unused_categories()
    pbc2 = hierlmm.datasets.add_baseline(chapter_data("pbc2"), "prothrombin", "id", name="basePro")
    return {"aids": aids, "aids60": aids60, "prothro": chapter_data("prothro"), "pbc2": pbc2}


# every model fitted by REML, as a user would: compare_models refits those whose fixed effects differ by ML
ANOVA_CASES = {
    "aids_fixed": ("aids", ["CD4 ~ obstime + (obstime | patient)", f"{AIDS} + (obstime | patient)"]),
    "aids_random": ("aids", [f"{AIDS} + (1 | patient)", f"{AIDS} + (obstime | patient)"]),
    "aids_chain": ("aids", [f"{AIDS} + (1 | patient)", f"{AIDS} + (obstime || patient)",
                            f"{AIDS} + (obstime | patient)"]),
    "prothro_fixed": ("prothro", ["pro ~ time + (time | id)", "pro ~ time * treat + (time | id)"]),
    "prothro_random": ("prothro", ["pro ~ time * treat + (1 | id)", "pro ~ time * treat + (time | id)"]),
    "pbc2_fixed": ("pbc2", ["log(serBilir) ~ ns(year, 2) + sex + age + basePro + (year | id)", f"{PBC} + (year | id)"]),
    "pbc2_random": ("pbc2", [f"{PBC} + (1 | id)", f"{PBC} + (year | id)"]),
}


@pytest.mark.parametrize("case", list(ANOVA_CASES))
def test_comparison_table_agrees_with_nlme(case, datasets):
    name, formulas = ANOVA_CASES[case]
    fits = [quiet_fit(f, datasets[name]) for f in formulas]
    table = compare_models(*fits)
    ref = REFERENCE["anova"][case]
    r = ref["table"]
    assert list(table.columns) == ["Model", "df", "AIC", "BIC", "logLik", "Test", "L.Ratio", "p-value"]
    assert table["df"].tolist() == r["df"]
    np.testing.assert_allclose(table["AIC"], r["AIC"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(table["BIC"], r["BIC"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(table["logLik"], r["logLik"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(table["L.Ratio"].iloc[1:], r["L.Ratio"][1:], rtol=1e-4)
    assert table["Test"].tolist() == [""] + [f"{k} vs {k + 1}" for k in range(1, len(fits))]
    assert np.isnan(table["L.Ratio"].iloc[0]) and np.isnan(table["p-value"].iloc[0])
    if ref["method"] == "ML":  # fixed effects differ: refitted by ML, chi2
        assert table.attrs["refitted"] and table.attrs["method"] == "ML"
        assert "refitted by ML" in repr(table) and "fixed effects differ" in table.attrs["note"]
        np.testing.assert_allclose(table["p-value"].iloc[1:], r["p"][1:], rtol=1e-4)
        assert table.attrs["nulls"][1:] == ["chisq"] * (len(fits) - 1)
    else:  # random effects differ, same fixed effects: REML kept; the mixture where a variance is added
        assert not table.attrs["refitted"] and table.attrs["method"] == "REML"
        for k in range(1, len(fits)):
            expected = ref["p_mixture"][k] if ref["p_mixture"][k] is not None else r["p"][k]
            assert table.attrs["nulls"][k] == ("mixture" if ref["p_mixture"][k] is not None else "chisq")
            np.testing.assert_allclose(table["p-value"].iloc[k], expected, rtol=1e-4)
        assert "50:50 mixture" in repr(table)


def test_refit_false_refuses_reml_fits_with_different_fixed_effects(datasets):
    fits = [quiet_fit(f, datasets["aids"]) for f in ANOVA_CASES["aids_fixed"][1]]
    with pytest.raises(hierlmm.SpecError, match="not comparable") as info:
        compare_models(*fits, refit=False)
    assert "refit='auto'" in str(info.value)
    with pytest.raises(hierlmm.SpecError, match="residual contrasts"):
        lrt(*fits, refit=False)
    result = lrt(*fits)  # refit="auto": both refitted by ML, and the result says so
    ref = REFERENCE["anova"]["aids_fixed"]["table"]
    assert result.refitted and result.method == "ML" and "refitted by ML" in str(result)
    np.testing.assert_allclose([result.statistic, result.p_value], [ref["L.Ratio"][1], ref["p"][1]], rtol=1e-4)
    np.testing.assert_allclose(result.loglik, ref["logLik"], atol=1e-3)


def test_refit_true_compares_every_fit_by_ml(datasets):
    fits = [quiet_fit(f, datasets["aids"]) for f in ANOVA_CASES["aids_random"][1]]
    table = compare_models(*fits, refit=True, names=["ri", "rs"])
    assert table.attrs["refitted"] and table.attrs["method"] == "ML" and list(table.index) == ["ri", "rs"]
    ml = [quiet_fit(f, datasets["aids"], method="ML") for f in ANOVA_CASES["aids_random"][1]]
    np.testing.assert_allclose(table["logLik"], [f.loglik for f in ml], atol=1e-6)
    result = lrt(*fits, refit=True)
    assert result.refitted and "refitted by ML: refit=True" in result.notes
    np.testing.assert_allclose(result.loglik, [f.loglik for f in ml], atol=1e-6)


def test_aids_random_quadratic_slope_reference(reference, datasets):
    """nlme 3.1-162 stops at a lower REML optimum of the quadratic model than lme4 (Nelder-Mead) and hierlmm
    (tests/fixtures/aids_quadratic_reference.json, made by make_aids_quadratic_reference.R): the shared reference's
    statistic and mixture p follow from nlme's logLik values; hierlmm reaches at least lme4's optimum, and its own
    likelihood evaluated at nlme's (and lme4's) D and sigma is theirs, so the two differ by the optimum reached, not
    by the likelihood."""
    ref = reference("aids_lrt_random_quadratic")
    nlme0, nlme1 = AIDS_QUADRATIC["nlme_linear"], AIDS_QUADRATIC["nlme_quadratic"]
    lme4_nm = AIDS_QUADRATIC["lme4_quadratic_nelder_mead"]
    np.testing.assert_allclose(ref["logLik"], [nlme0["logLik"], nlme1["logLik"]], rtol=0, atol=1e-6)
    statistic = 2 * (nlme1["logLik"] - nlme0["logLik"])
    np.testing.assert_allclose(statistic, ref["L.Ratio"], rtol=1e-8)
    df = ref["df"][1] - ref["df"][0]
    assert df == 3
    mixture = 0.5 * scipy.stats.chi2.sf(statistic, df - 1) + 0.5 * scipy.stats.chi2.sf(statistic, df)
    np.testing.assert_allclose(mixture, ref["p_mixture"], rtol=1e-6)
    model = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
    m0 = quiet_fit(f"{model} + (obstime | patient)", datasets["aids"])
    m1 = quiet_fit(f"{model} + (obstime + I(obstime^2) | patient)", datasets["aids"])
    assert list(m1.design.blocks[0].effect_names) == ["(Intercept)", "obstime", "I(obstime^2)"]
    assert list(m1.design.fixef_names) == nlme1["fixef_names"]
    np.testing.assert_allclose(m0.loglik, nlme0["logLik"], atol=1e-3)  # the smaller model: the same optimum
    # the quadratic model: hierlmm's optimum is lme4's (or higher), well above nlme's
    assert m1.loglik >= lme4_nm["logLik"] - 1e-3
    assert m1.loglik > nlme1["logLik"] + 1.0
    # hierlmm's REML likelihood at nlme's and at lme4's estimates is nlme's and lme4's logLik
    for other in (nlme1, lme4_nm):
        at_other = log_likelihood(m1, [np.asarray(other["D"])], other["sigma"])
        np.testing.assert_allclose(at_other, other["logLik"], atol=1e-3)
    result = lrt(m0, m1)
    assert result.null == "mixture" and result.df == 3 and "chi2(2) and chi2(3)" in result.null_description
    np.testing.assert_allclose(result.statistic, 2 * (m1.loglik - m0.loglik), rtol=1e-10)
    np.testing.assert_allclose(result.p_value, 0.5 * scipy.stats.chi2.sf(result.statistic, 2)
                               + 0.5 * scipy.stats.chi2.sf(result.statistic, 3), rtol=1e-12)
    assert result.p_value < ref["p_mixture"]  # the higher optimum: a larger statistic, a smaller p


def test_exact_null_of_a_pddiag_slope_agrees_with_rlrsim(datasets):
    ref = REFERENCE["exact"]["aids60_pddiag_slope"]
    m0 = quiet_fit(f"{AIDS} + (1 | patient)", datasets["aids60"])
    mA = quiet_fit(f"{AIDS} + (obstime || patient)", datasets["aids60"])
    result = lrt(m0, mA, null="exact", nsim=20_000, seed=5)
    np.testing.assert_allclose(result.statistic, ref["statistic"], rtol=1e-4)
    assert result.null == "exact" and result.nsim == 20_000 and result.simulated.shape == (20_000,)
    assert within_monte_carlo(result.p_value, 20_000, ref["p"], ref["nsim"]), (result.p_value, ref["p"])
    again = lrt(mA, m0, null="exact", nsim=20_000, seed=5)  # either order; the seed reproduces the draws
    assert again.p_value == result.p_value


@pytest.mark.parametrize("case, method", [("prothro_ri", "REML"), ("aids_ri", "REML"), ("prothro_ri_ml", "ML")])
def test_one_variance_component_against_the_linear_model(case, method, datasets):
    """exactRLRT(m) / exactLRT(m, lm): the statistic needs the linear model's REML/ML log-likelihood; the p-values
    are 0 in R and here (the null distributions themselves are checked in test_exact_null.py)."""
    ref = REFERENCE["exact"][case]
    data, formula = (("prothro", "pro ~ time * treat + (1 | id)") if case.startswith("prothro")
                     else ("aids", f"{AIDS} + (1 | patient)"))
    fit = quiet_fit(formula, datasets[data], method=method)
    result = lrt(fit, null="exact", nsim=2000, seed=1)
    np.testing.assert_allclose(result.statistic, ref["statistic"], rtol=1e-4)
    assert result.p_value == ref["p"] == 0 and result.method == method
    mixture = lrt(fit)
    assert mixture.null == "mixture" and mixture.df == 1 and mixture.n_params == (fit.design.p + 1, fit.n_params)


WEAK_NSIM = 50_000


@pytest.fixture(scope="module")
def weak_fit():
    """A weak random intercept (tests/fixtures/weak_intercept.csv: 10 subjects x 8 visits, SD 0.25 against a residual
    SD of 1.09): RLRsim's exact p is 0.20, the 50:50 mixture's 0.24."""
    data = pd.read_csv(FIXTURES / WEAK["data"]["file"])
    assert len(data) == WEAK["data"]["rows"]
    return quiet_fit(WEAK["hierlmm"]["formula"], data, method=WEAK["hierlmm"]["method"])


def test_exact_null_of_a_weak_random_intercept_agrees_with_rlrsim(weak_fit):
    """exactRLRT(m) where the p-value is neither 0 nor 1: the statistic to 1e-4; the p-value and the simulated null
    (its mass at 0, its upper tail at RLRsim's quantiles) within Monte Carlo error. With these draws the mixture's p is
    far outside that error, so the test tells the exact null from the mixture; the mixture and chi2 p-values of
    lrt(fit, null=...) to 1e-4."""
    ref = WEAK["exactRLRT"]
    assert 0.05 < ref["p"] < 0.5
    np.testing.assert_allclose(weak_fit.loglik, WEAK["logLik"], atol=1e-5)
    result = lrt(weak_fit, null="exact", nsim=WEAK_NSIM, seed=7)
    assert result.null == "exact" and result.nsim == WEAK_NSIM and result.method == "REML" and result.df == 1
    np.testing.assert_allclose(result.loglik, [WEAK["logLik_lm_REML"], WEAK["logLik"]], rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.statistic, ref["statistic"], rtol=1e-4)
    assert within_monte_carlo(result.p_value, WEAK_NSIM, ref["p"], ref["nsim"]), (result.p_value, ref["p"])
    assert not within_monte_carlo(WEAK["p_mixture"], WEAK_NSIM, ref["p"], ref["nsim"])
    sims = result.simulated
    assert within_monte_carlo(np.mean(sims == 0), WEAK_NSIM, ref["mass_at_zero"], ref["nsim"]), \
        (np.mean(sims == 0), ref["mass_at_zero"])
    for threshold, upper in zip(ref["thresholds"], ref["upper"], strict=True):
        ours = np.mean(sims > threshold)
        assert within_monte_carlo(ours, WEAK_NSIM, upper, ref["nsim"]), (threshold, ours, upper)
    assert lrt(weak_fit, null="exact", nsim=WEAK_NSIM, seed=7).p_value == result.p_value  # the seed reproduces it
    mixture, chisq = lrt(weak_fit), lrt(weak_fit, null="chisq")
    assert mixture.null == "mixture" and mixture.df == 1
    np.testing.assert_allclose([mixture.p_value, chisq.p_value], [WEAK["p_mixture"], WEAK["p_chisq"]], rtol=1e-4)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_linear_model_loglik_against_a_dense_gaussian(method):
    rng = np.random.default_rng(4)
    X = np.column_stack([np.ones(30), rng.normal(size=30), rng.normal(size=30)])
    y = X @ [1.0, 2.0, -1.0] + rng.normal(size=30)
    loglik, beta, sigma = linear_model_loglik(X, y, method)
    np.testing.assert_allclose(beta, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-10)
    dense = scipy.stats.multivariate_normal(X @ beta, sigma**2 * np.eye(30)).logpdf(y)
    if method == "ML":
        np.testing.assert_allclose(loglik, dense, rtol=1e-12)
        np.testing.assert_allclose(sigma**2, np.sum((y - X @ beta) ** 2) / 30)
    else:  # nlme's REML form: l_ML(beta, sigma) - 1/2 log|X'X / sigma^2| + p/2 log(2 pi), sigma^2 = RSS / (N - p)
        np.testing.assert_allclose(sigma**2, np.sum((y - X @ beta) ** 2) / 27)
        expected = dense - 0.5 * np.linalg.slogdet(X.T @ X / sigma**2)[1] + 1.5 * np.log(2 * np.pi)
        np.testing.assert_allclose(loglik, expected, rtol=1e-12)


def test_parametric_bootstrap_is_reproducible_and_agrees_with_lme4(datasets, capsys):
    ref = REFERENCE["bootstrap"]
    m0 = quiet_fit(f"{AIDS} + (1 | patient)", datasets["aids60"])
    m1 = quiet_fit(f"{AIDS} + (obstime | patient)", datasets["aids60"])
    np.testing.assert_allclose([m0.loglik, m1.loglik], ref["logLik"], atol=1e-3)
    small = [lrt(m0, m1, null="bootstrap", nsim=6, seed=3, progressbar=False) for _ in range(2)]
    np.testing.assert_array_equal(small[0].simulated, small[1].simulated)
    assert small[0].p_value == small[1].p_value and small[0].seed == 3
    assert capsys.readouterr().err == ""  # progressbar=False: nothing printed
    result = lrt(m0, m1, null="bootstrap", nsim=250, seed=11)
    assert "bootstrap: 250/250" in capsys.readouterr().err
    np.testing.assert_allclose(result.statistic, ref["statistic"], rtol=1e-4)
    assert result.null == "bootstrap" and result.nsim == 250
    assert result.p_value == (1 + np.sum(result.simulated >= result.statistic)) / 251
    assert within_monte_carlo(result.p_value, 250, ref["p"], ref["nsim"]), (result.p_value, ref["p"])


# ---- the rules, on small simulated data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim():
    return simulate(21, n_subjects=40, nested=True)


def test_auto_null_follows_what_differs(sim):
    ri = quiet_fit("y ~ t + x + (1 | id)", sim)
    diag = quiet_fit("y ~ t + x + (t || id)", sim)
    symm = quiet_fit("y ~ t + x + (t | id)", sim)
    both = quiet_fit("y ~ t + x + (t + x | id)", sim)
    nested = quiet_fit("y ~ t + x + (1 | id/eye)", sim)
    assert lrt(ri, diag).null == "mixture" and lrt(ri, diag).df == 1
    assert lrt(ri, symm).null_description == "50:50 mixture of chi2(1) and chi2(2)"
    assert lrt(diag, symm).null == "chisq"  # a covariance: no boundary
    assert lrt(ri, nested).null == "mixture"  # a new grouping factor's intercept
    several = lrt(ri, both)
    assert several.null == "chisq" and any("conservative" in n for n in several.notes)
    with pytest.raises(hierlmm.NotSupportedError, match="bootstrap"):
        lrt(ri, both, null="mixture")
    with pytest.raises(hierlmm.NotSupportedError, match="No random effect is added"):
        lrt(diag, symm, null="mixture")
    with pytest.raises(hierlmm.NotSupportedError, match="one independent variance"):
        lrt(ri, symm, null="exact")
    exact = lrt(ri, nested, null="exact", nsim=500, seed=1)
    assert exact.null == "exact" and "id:eye:(Intercept)" in exact.null_description
    fixed = lrt(quiet_fit("y ~ t + (t | id)", sim), symm)
    assert fixed.null == "chisq" and fixed.refitted and fixed.method == "ML"
    with pytest.raises(hierlmm.NotSupportedError, match="REML fits with the same fixed effects"):
        lrt(quiet_fit("y ~ t + (t || id)", sim), symm, null="exact")
    marginal = lrt(quiet_fit("y ~ t + x + (1 | id)", sim, kind="marginal"),
                   quiet_fit("y ~ t + x + (t | id)", sim, kind="marginal"))
    assert marginal.null == "chisq" and "indefinite" in marginal.notes[0]


def test_mismatched_inputs_say_what_differs(sim):
    ri = quiet_fit("y ~ t + x + (1 | id)", sim)
    with pytest.raises(hierlmm.DataError, match="different data rows"):
        lrt(ri, quiet_fit("y ~ t + x + (t | id)", sim.iloc[5:]))
    with pytest.raises(hierlmm.DataError, match="different responses"):
        lrt(ri, quiet_fit("I(2 * y) ~ t + x + (t | id)", sim))
    with pytest.raises(hierlmm.SpecError, match="fixed effects of fit0 are not within"):
        lrt(quiet_fit("y ~ t + (1 | id)", sim), quiet_fit("y ~ x + g + (1 | id)", sim))
    with pytest.raises(hierlmm.SpecError, match="not a special case"):
        lrt(quiet_fit("y ~ t + x + (t | id)", sim), quiet_fit("y ~ t + x + (t + x || id) + (1 | id:eye)", sim))
    with pytest.raises(hierlmm.SpecError, match="same number of parameters"):
        lrt(ri, quiet_fit("y ~ t + g + (1 | id)", sim))
    with pytest.raises(hierlmm.NotSupportedError, match="different error structures"):
        lrt(ri, quiet_fit("y ~ t + x + (1 | id)", sim, correlation="corExp(form = ~ t | id)"))
    with pytest.raises(hierlmm.SpecError, match="marginal"):
        lrt(ri, quiet_fit("y ~ t + x + (t | id)", sim, kind="marginal"))
    with pytest.raises(hierlmm.SpecError, match="simulated nulls only"):
        lrt(ri, quiet_fit("y ~ t + x + (t | id)", sim), nsim=100)
    with pytest.raises(hierlmm.SpecError, match="Unknown null"):
        lrt(ri, quiet_fit("y ~ t + x + (t | id)", sim), null="F")
    with pytest.raises(hierlmm.SpecError, match="two or more"):
        compare_models(ri)
    with pytest.raises(hierlmm.NotSupportedError, match="several|only variance"):
        lrt(quiet_fit("y ~ t + x + (t | id)", sim))


def test_bayesian_fits_are_pointed_to_loo(sim):
    class Posterior(PosteriorResult):  # any Bayesian result: refused before anything is read from it
        pass

    ri = quiet_fit("y ~ t + x + (1 | id)", sim)
    for call in (lambda: lrt(Posterior()), lambda: lrt(ri, Posterior()), lambda: compare_models(ri, Posterior())):
        with pytest.raises(hierlmm.NotSupportedError, match="no maximised likelihood") as info:
            call()
        assert "hierlmm.loo" in str(info.value) and "compare_models" in str(info.value)


def test_correlated_fits_are_compared_and_bootstrapped(sim):
    """The bootstrap's statistics are those of both models refitted (hierlmm.refit) to the responses
    hierlmm.simulate(m0, nsim, seed) draws from the null fit, 2 (l1* - l0*) clipped at 0, and p = (1 + #{L* >= L}) /
    (nsim + 1). Each refit is at least as good as a fresh fit to the same data, and the larger model's is at least the
    smaller's."""
    structure = "corExp(form = ~ t | id)"
    small, large = "y ~ t + x + (1 | id)", "y ~ t + x + (t | id)"
    m0 = quiet_fit(small, sim, correlation=structure)
    m1 = quiet_fit(large, sim, correlation=structure)
    nsim = 4
    result = lrt(m0, m1, null="bootstrap", nsim=nsim, seed=2, progressbar=False)
    assert result.null == "bootstrap" and result.nsim == nsim and result.seed == 2 and not result.refitted
    assert np.array_equal(m0.design.y, sim["y"].to_numpy())  # the design keeps the data's row order
    Y = hierlmm.simulate(m0, nsim, seed=2)
    by_hand = []
    for y in Y:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            l0, l1 = hierlmm.refit(m0, y=y).loglik, hierlmm.refit(m1, y=y).loglik
        assert l1 >= l0 - 1e-6
        frame = sim.assign(y=y)
        assert l0 >= quiet_fit(small, frame, correlation=structure).loglik - 1e-6
        assert l1 >= quiet_fit(large, frame, correlation=structure).loglik - 1e-6
        by_hand.append(max(2 * (l1 - l0), 0.0))
    np.testing.assert_allclose(result.simulated, by_hand, rtol=1e-6, atol=1e-8)
    assert np.unique(np.round(by_hand, 6)).size > 1  # not all at the boundary: the comparison sees the statistic
    assert result.p_value == (1 + np.sum(np.asarray(by_hand) >= result.statistic)) / (nsim + 1)
    with pytest.raises(hierlmm.NotSupportedError, match="independent errors"):
        lrt(m0, quiet_fit("y ~ t + x + (t || id)", sim, correlation=structure), null="exact")


def test_a_fresh_correlated_fit_reaches_at_least_the_nested_models_likelihood(sim):
    """On this draw the default start of (t | id) with corExp led to a local optimum with var(intercept) = 0 (logLik
    -355.52, below the nested model's -337.77); a boundary optimum now gets a second look from other starts."""
    structure = "corExp(form = ~ t | id)"
    m0 = quiet_fit("y ~ t + x + (1 | id)", sim, correlation=structure)
    frame = sim.assign(y=hierlmm.simulate(m0, 4, seed=2)[1])
    l0 = quiet_fit("y ~ t + x + (1 | id)", frame, correlation=structure).loglik
    l1 = quiet_fit("y ~ t + x + (t | id)", frame, correlation=structure).loglik
    assert l0 == pytest.approx(-337.7693, abs=1e-3)  # nlme 3.1-162's logLik of both models on these data
    assert l1 >= l0 - 1e-6


def test_single_fit_bootstrap_agrees_with_the_exact_null(weak_fit):
    """The REML LRT of a model's only variance component is pivotal under the null (its distribution does not
    depend on beta or sigma), so the parametric bootstrap from the linear model has RLRsim's exact null: on the weak
    random intercept its p-value and its simulated null (the mass at 0, the upper tail at RLRsim's quantiles) agree
    with exactRLRT's within Monte Carlo error."""
    ref = WEAK["exactRLRT"]
    nsim = 300
    result = lrt(weak_fit, null="bootstrap", nsim=nsim, seed=1, progressbar=False)
    design = weak_fit.design
    loglik0 = linear_model_loglik(design.X, design.y, "REML")[0]
    assert result.loglik == (loglik0, weak_fit.loglik) and result.nsim == nsim and result.null == "bootstrap"
    np.testing.assert_allclose(result.statistic, ref["statistic"], rtol=1e-4)
    sims = result.simulated
    assert result.p_value == (1 + np.sum(sims >= result.statistic)) / (nsim + 1)
    assert within_monte_carlo(result.p_value, nsim, ref["p"], ref["nsim"]), (result.p_value, ref["p"])
    at_zero = np.mean(sims < 1e-6)  # a refit on the boundary: 0 to the optimiser's tolerance (about 1e-13 here)
    assert within_monte_carlo(at_zero, nsim, ref["mass_at_zero"], ref["nsim"]), (at_zero, ref["mass_at_zero"])
    for threshold, upper in zip(ref["thresholds"][1:], ref["upper"][1:], strict=True):
        ours = np.mean(sims > threshold)
        assert within_monte_carlo(ours, nsim, upper, ref["nsim"]), (threshold, ours, upper)


def test_result_prints_what_it_is(sim):
    result = lrt(quiet_fit("y ~ t + x + (1 | id)", sim), quiet_fit("y ~ t + x + (t | id)", sim))
    assert isinstance(result, LRTResult)
    text = str(result)
    assert "L.Ratio" in text and "50:50 mixture of chi2(1) and chi2(2)" in text and "REML" in text
    assert repr(result).startswith("<LRTResult L.Ratio=") and "null='mixture'" in repr(result)
    with pytest.raises(AttributeError):
        result.p_value = 0.5  # frozen
    table = compare_models(quiet_fit("y ~ t + x + (1 | id)", sim), quiet_fit("y ~ t + x + (t | id)", sim))
    assert isinstance(table, pd.DataFrame) and repr(table).splitlines()[-1].startswith("Test 1 vs 2: p-value from")
