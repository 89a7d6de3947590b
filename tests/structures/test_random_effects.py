"""Structures of D (pdIdent, pdCompSymm, pdBlocked; pdSymm and pdDiag elsewhere): the parametrisation, the spec
front ends, REML/ML against nlme (tests/fixtures/pd_structures_reference.json, made by
make_pd_structures_reference.R) and the Bayesian engine."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import FIXTURES

import hierlmm
from hierlmm import pdBlocked, pdCompSymm, pdDiag, pdIdent, pdSymm
from hierlmm.cli import main
from hierlmm.engines.bayes.random_effects_covariance import factor_draws
from hierlmm.engines.reml.finite_differences import central_gradient
from hierlmm.engines.reml.profiled_likelihood import profiled_deviance
from hierlmm.errors import FormulaError, NotSupportedError, SpecError
from hierlmm.spec.model_files import load_spec
from hierlmm.structures.random_effects import ThetaLayout, correlated_pairs, sd_corr

REFERENCE = json.loads((FIXTURES / "pd_structures_reference.json").read_text())
BLOCKED = {"id": pdBlocked([pdSymm("~ year"), pdSymm("~ 0 + I(year^2)")])}


def _models(chapter_data):
    glaucoma = chapter_data("glaucoma")
    glaucoma = glaucoma[glaucoma["id"].astype(int) <= 30].reset_index(drop=True)  # as the R script
    return {
        "glaucoma_cs": ("thres ~ years", {"id": pdCompSymm("~ 0 + eye")}, glaucoma),
        "aids_ident": ("CD4 ~ obstime + obstime:drug", {"patient": pdIdent("~ obstime")}, chapter_data("aids")),
        "pbc2_blocked": ("log(serBilir) ~ year + sex", BLOCKED, chapter_data("pbc2")),
    }


# ---- the parametrisation -----------------------------------------------------------------------------------------
structures = st.sampled_from(["pdSymm", "pdDiag", "pdIdent", "pdCompSymm", "pdBlocked"])


@settings(max_examples=60, deadline=None)
@given(structure=structures, q=st.integers(1, 4), seed=st.integers(0, 10_000), log_diagonal=st.booleans())
def test_factor_jacobian_matches_finite_differences_and_from_factor_inverts(structure, q, seed, log_diagonal):
    if structure == "pdBlocked":
        q = max(q, 2)
        parts = (("pdCompSymm", q - 1), ("pdSymm", 1)) if seed % 2 else (("pdSymm", 1), ("pdIdent", q - 1))
    else:
        parts = ()
    layout = ThetaLayout.for_blocks([structure], [q], [parts])
    rng = np.random.default_rng(seed)
    theta = 0.4 * rng.normal(size=layout.size)
    scale = layout.diagonal_mask()
    if not log_diagonal:
        theta[scale] = 0.3 + np.abs(theta[scale])
    block = layout.blocks[0]
    L, J = block.factor_and_jacobian(theta, log_diagonal)
    assert np.allclose(np.triu(L, 1), 0)  # lower triangular: every engine takes a Cholesky-like factor
    for k in range(layout.size):
        step = np.zeros(layout.size)
        step[k] = 1e-6
        numeric = (block.factor(theta + step, log_diagonal) - block.factor(theta - step, log_diagonal)) / 2e-6
        np.testing.assert_allclose(J[k], numeric, atol=1e-6)
    back = block.from_factor(L, log_diagonal)
    L2 = block.factor(back, log_diagonal)
    np.testing.assert_allclose(L2 @ L2.T, L @ L.T, atol=1e-10)


def test_compound_symmetry_reaches_negative_correlations_down_to_minus_one_over_q_minus_one():
    block = ThetaLayout.for_blocks(["pdCompSymm"], [3]).blocks[0]
    for t in (-8.0, 0.0, 8.0):
        L = block.factor(np.array([0.0, t]))
        D = L @ L.T
        rho = D[0, 1]
        assert np.allclose(np.diag(D), 1.0) and np.allclose(D[~np.eye(3, dtype=bool)], rho)
        assert -0.5 < rho < 1.0
    assert block.factor(np.array([0.0, -8.0]))[1, 0] < -0.49


def test_profiled_gradient_of_structured_blocks_is_the_derivative(chapter_data):
    design = hierlmm.build_design(hierlmm.model_spec(fixed="log(serBilir) ~ year", random={
        "id": pdBlocked([pdCompSymm("~ year"), pdIdent("~ 0 + I(year^2)")])}), chapter_data("pbc2"))
    for method in ("REML", "ML"):
        deviance, layout, _ = profiled_deviance(design, method)
        theta = np.array([-0.3, 0.4, -2.5])
        assert layout.size == 3
        np.testing.assert_allclose(deviance(theta)[1], central_gradient(lambda t, f=deviance: f(t)[0], theta),
                                   rtol=1e-5, atol=1e-5)


# ---- specs ---------------------------------------------------------------------------------------------------------
def test_lme4_terms_on_one_factor_are_nlme_pdblocked():
    nlme = hierlmm.model_spec(fixed="y ~ t", random={"id": pdBlocked([pdSymm("~ t"), pdSymm("~ 0 + I(t^2)")])})
    lme4 = hierlmm.ModelSpec.from_formula("y ~ t + (t | id) + (0 + I(t^2) | id)")
    assert nlme == lme4
    assert lme4.random[0].structure == "pdBlocked"
    assert hierlmm.ModelSpec.from_formula(lme4.formula) == lme4
    nested = hierlmm.ModelSpec.from_formula("y ~ t + (1 | id/eye) + (0 + t | id)")
    assert [b.factor for b in nested.random] == ["id", "id:eye"]
    assert nested.random[0].structure == "pdBlocked"


def test_toml_pdblocked_and_structures(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[model]\nfixed = "y ~ t"\n[model.random.id]\nstructure = "pdBlocked"\nblocks = [\n'
                    '  { formula = "~ t" },\n  { structure = "pdIdent", formula = "~ 0 + a + b" },\n]\n'
                    '[data]\nname = "aids"\n')
    spec = load_spec(path).spec
    assert spec == hierlmm.model_spec(fixed="y ~ t", random={"id": pdBlocked([pdSymm("~ t"),
                                                                              pdIdent("~ 0 + a + b")])})
    assert [s for s, _ in spec.random[0].parts] == ["pdSymm", "pdIdent"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: pdBlocked([pdSymm("~ 1")]), "two or more"),
    (lambda: pdBlocked([pdSymm("~ 1"), pdBlocked([pdSymm("~ 1"), pdSymm("~ 0 + t")])]), "two or more"),
    (lambda: hierlmm.model_spec(fixed="y ~ t", random=pdBlocked([pdSymm("~ 1 | g"), pdDiag("~ 0 + t | g")])),
     "dict"),
    (lambda: hierlmm.ModelSpec.from_formula("y ~ t + (1 | g) + (t | g)"), "intercept in two terms"),
    (lambda: hierlmm.model_spec(fixed="y ~ t", random={"g": hierlmm.spec.model_spec.PdMat("pdUnknown", "~ t")}),
     "Unknown covariance structure"),
])
def test_spec_mistakes_are_explained(call, message):
    with pytest.raises((SpecError, FormulaError), match=message):
        call()


def test_an_effect_in_two_blocks_is_refused():
    data = pd.DataFrame({"y": np.arange(8.0), "t": np.tile([0.0, 1.0], 4), "g": np.repeat(["a", "b"], 4)})
    with pytest.raises(FormulaError, match="share a random effect"):
        hierlmm.build_design(hierlmm.ModelSpec.from_formula("y ~ t + (t | g) + (0 + t | g)"), data)


# ---- REML / ML against nlme ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("name", ["glaucoma_cs", "aids_ident", "pbc2_blocked"])
def test_structured_fits_agree_with_nlme(name, method, chapter_data):
    fixed, random, data = _models(chapter_data)[name]
    ref = REFERENCE[method][name]
    fit = hierlmm.fit(fixed, data, random=random, method=method)
    assert fit.optimizer.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-4)
    assert list(fit.design.fixef_names) == ref["names"]
    np.testing.assert_allclose(fit.beta, ref["beta"], rtol=1e-4, atol=1e-8)
    se = np.array(ref["se"])
    if method == "ML":  # Debian's nlme 3.1-162 (which made these references) scales ML SEs by the ML sigma^2; the
        # shared references (aids_ri_rs_ml.json, a newer nlme) and hierlmm by r'W^-1 r / (N - p): sqrt(N / (N - p))
        se = se * np.sqrt(fit.design.n_obs / (fit.design.n_obs - fit.design.p))
    np.testing.assert_allclose(fit.fixef()["Std.Error"], se, rtol=1e-3)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    np.testing.assert_allclose(fit.D[0], np.array(ref["D"]), rtol=1e-3, atol=1e-8)
    if "nested_lme4_logLik" in ref:  # compound symmetry of the two eyes is lme4's (1 | id/eye) when rho > 0
        assert fit.loglik == pytest.approx(ref["nested_lme4_logLik"], abs=1e-4)
    if "lme4_logLik" in ref:  # lme4 spells pdBlocked as two terms on id: the same fit
        lme4 = hierlmm.fit("log(serBilir) ~ year + sex + (year | id) + (0 + I(year^2) | id)", data, method=method)
        assert lme4.loglik == pytest.approx(fit.loglik, abs=1e-6)
        assert fit.loglik >= ref["lme4_logLik"] - 1e-4


def test_a_compound_symmetry_correlation_at_its_end_is_a_boundary_fit(chapter_data):
    """Intercept and slope with equal variances: the correlation runs to +1. nlme (optim) stops short of it."""
    with pytest.warns(hierlmm.BoundaryWarning, match="cor\\(patient\\) at the end of its range"):
        fit = hierlmm.fit("CD4 ~ obstime", chapter_data("aids"), random={"patient": pdCompSymm("~ obstime")})
    assert fit.optimizer.converged
    sd, corr = sd_corr(fit.D[0])
    assert corr[0, 1] > 0.9999 and sd[0] == pytest.approx(sd[1])
    assert fit.loglik >= REFERENCE["REML"]["aids_cs_edge"]["logLik"] - 1e-6
    with pytest.raises(hierlmm.errors.NumericalError, match="not positive definite"):
        fit.varcorr_intervals()  # a flat direction: nlme's "Non-positive definite approximate variance-covariance"


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("name", ["aids_ident", "pbc2_blocked"])
def test_variance_component_intervals_agree_with_nlme(name, method, chapter_data):
    fixed, random, data = _models(chapter_data)[name]
    ref = REFERENCE[method][name]["intervals"]
    table = hierlmm.fit(fixed, data, random=random, method=method).varcorr_intervals()
    ours = table.drop(index="sigma")
    assert len(ours) == len(np.atleast_1d(ref["est"]))
    # estimates: measured gaps <= 1.5e-5; nlme's fdHess interval ends: <= 2.7e-4 (aids_ident), <= 5.8e-3 (pbc2_blocked)
    bounds_rtol = 1e-3 if name == "aids_ident" else 1e-2
    for column, key, rtol in (("lower", "lower", bounds_rtol), ("est.", "est", 2e-4), ("upper", "upper", bounds_rtol)):
        np.testing.assert_allclose(ours[column], np.atleast_1d(ref[key]), rtol=rtol)
    assert table.loc["sigma", "lower"] < table.loc["sigma", "est."] < table.loc["sigma", "upper"]


def test_intervals_of_compound_symmetry_do_not_depend_on_the_difference_step(chapter_data):
    """nlme's fdHess (relative step 6e-6) is not reliable at this log-likelihood (-1.9e5): its intervals of the
    glaucoma model are wider than the curvature. Ours are stable over two orders of magnitude of the step."""
    from hierlmm.engines.reml.finite_differences import central_hessian
    from hierlmm.engines.reml.variance_intervals import _matrices, _natural, log_likelihood

    fixed, random, data = _models(chapter_data)["glaucoma_cs"]
    fit = hierlmm.fit(fixed, data, random=random)
    eta, sizes, _ = _natural(fit)

    def f(x):
        return -log_likelihood(fit, _matrices(fit, sizes, x[:-1]), float(np.exp(x[-1])))

    se = [np.sqrt(np.diag(np.linalg.inv(central_hessian(f, eta, h)))) for h in (1e-2, 1e-3, 1e-4)]
    np.testing.assert_allclose(se[0], se[2], rtol=1e-3)
    rho = fit.varcorr_intervals().loc["cor(id:eye1,eye2)", "est."]
    assert rho == pytest.approx(REFERENCE["REML"]["glaucoma_cs"]["intervals"]["est"][1], rel=1e-4)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_a_structured_d_with_serial_correlation_agrees_with_nlme(method, chapter_data):
    ref = REFERENCE[method]["aids_pddiag_corexp"]
    fit = hierlmm.fit("CD4 ~ obstime + obstime:drug", chapter_data("aids"), random={"patient": pdDiag("~ obstime")},
                      correlation="corExp(form = ~ obstime | patient)", method=method)
    assert fit.D[0][0, 1] == 0.0  # the dense engine keeps the block's structure
    assert fit.loglik >= ref["logLik"] - 1e-4  # nlme (optim) stops a little short of the maximum here
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    np.testing.assert_allclose(np.diag(fit.D[0]), np.diag(np.array(ref["D"])), rtol=2e-2)
    np.testing.assert_allclose(fit.beta, ref["beta"], rtol=2e-3)


def test_structured_ml_loglik_is_the_dense_multivariate_normal(chapter_data):
    fixed, random, data = _models(chapter_data)["aids_ident"]
    fit = hierlmm.fit(fixed, data, random=random, method="ML")
    design = fit.design
    block = design.blocks[0]
    total = 0.0
    for level in range(block.n_levels):
        rows = block.group_index == level
        Z = block.Z[rows]
        V = Z @ fit.D[0] @ Z.T + fit.sigma**2 * np.eye(rows.sum())
        total += scipy.stats.multivariate_normal(design.X[rows] @ fit.beta, V).logpdf(design.y[rows])
    assert np.allclose(fit.D[0], fit.D[0][0, 0] * np.eye(2))  # pdIdent: s^2 I
    assert fit.loglik == pytest.approx(total, abs=1e-6)


def test_summary_names_the_structures(chapter_data):
    fixed, random, data = _models(chapter_data)["pbc2_blocked"]
    text = hierlmm.summary(hierlmm.fit(fixed, data, random=random))
    assert "Structure: Blocked: General positive-definite" in text
    fixed, random, data = _models(chapter_data)["glaucoma_cs"]
    text = hierlmm.summary(hierlmm.fit(fixed, data, random=random))
    assert "Structure: Compound Symmetry" in text and "Corr" in text


def test_cli_takes_pdident(tmp_path, chapter_data):
    out = tmp_path / "fit.json"
    assert main(["fit", "--data", "aids", "--formula", "CD4 ~ obstime + obstime:drug", "--random",
                 "pdIdent(~ obstime | patient)", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["loglik"] == pytest.approx(REFERENCE["REML"]["aids_ident"]["logLik"], abs=1e-4)
    assert result["random"]["patient"]["structure"] == "pdIdent"


def test_json_lists_the_blocks_of_a_pdblocked_d(tmp_path, chapter_data):
    out = tmp_path / "fit.json"
    formula = "log(serBilir) ~ year + sex + (year | id) + (0 + I(year^2) | id)"
    assert main(["fit", "--data", "pbc2", "--formula", formula, "--json", str(out)]) == 0
    random = json.loads(out.read_text())["random"]["id"]
    assert random["structure"] == "pdBlocked"
    assert random["blocks"] == [{"structure": "pdSymm", "names": ["(Intercept)", "year"]},
                                {"structure": "pdSymm", "names": ["I(year^2)"]}]
    assert random["cov"][2][0] == 0.0


def test_the_marginal_model_refuses_a_structured_d(chapter_data):
    with pytest.raises(NotSupportedError, match="unstructured D"):
        hierlmm.fit("CD4 ~ obstime", chapter_data("aids"), random={"patient": pdIdent("~ obstime")},
                    kind="marginal")


# ---- the Bayesian engine -------------------------------------------------------------------------------------------
def test_bayesian_factors_from_draws_are_the_model_factors(chapter_data):
    import pymc as pm
    import pytensor.tensor as pt

    from hierlmm.engines.bayes.priors import default_priors
    from hierlmm.engines.bayes.random_effects_covariance import block_factor, coords

    design = hierlmm.build_design(hierlmm.model_spec(fixed="log(serBilir) ~ year", random={
        "id": pdBlocked([pdCompSymm("~ year"), pdIdent("~ 0 + I(year^2) + I(year^3)")])}), chapter_data("pbc2"))
    block, priors = design.blocks[0], default_priors(design)
    with pm.Model(coords={"id__effect": list(block.effect_names), **coords(block)}) as model:
        L = pm.Deterministic("L", block_factor(pm, pt, block, priors))
    names = [v.name for v in model.free_RVs]
    assert names == ["s_id__1", "rho_id__1", "s_id__2"]
    draws = pm.draw([L, *model.free_RVs], draws=50, random_seed=1)
    post = {name: type("Values", (), {"values": value[None]}) for name, value in zip(names, draws[1:], strict=True)}
    np.testing.assert_allclose(factor_draws(block, post, priors)[0], draws[0], rtol=1e-10, atol=1e-12)
    assert correlated_pairs(block) == [(1, 0)]


def test_nuts_of_a_blocked_d_is_near_reml(chapter_data):
    fixed, random, data = _models(chapter_data)["pbc2_blocked"]
    design = hierlmm.build_design(hierlmm.model_spec(fixed=fixed, random=random), data)
    reml = hierlmm.fit_ml(design)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hierlmm.fit_bayes(design, chains=2, draws=150, tune=200, progressbar=False, seed=3)
    table = hierlmm.compare(fit, reml)
    assert "cor[id:(Intercept),I(year^2)]" not in table.index  # 0 by the structure: not a parameter
    assert "cor[id:(Intercept),year]" in table.index
    assert np.all(np.abs(table["z"].dropna()) < 4), table
    b = fit.tree["posterior"]["b_id"]
    assert b.shape[-2:] == (design.blocks[0].n_levels, 3)
