"""NUTS with serially correlated and/or heteroscedastic errors (hierlmm.engines.bayes.correlated_model,
hierlmm.engines.bayes.correlated_fit, hierlmm.kernels.dense_gaussian_op, hierlmm.kernels.woodbury_op): the likelihood
against dense scipy
normals, the gradients against finite differences, the posterior against REML."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from simulated import simulate

import hierlmm
from hierlmm.engines.bayes.correlated_fit import fit_bayes_correlated, subject_terms
from hierlmm.engines.bayes.correlated_model import build_correlated_bayes_model
from hierlmm.kernels.dense_gaussian_op import gaussian_loglik_and_grad
from hierlmm.kernels.woodbury_op import kernel_for, woodbury_loglik_and_grad
from hierlmm.structures.serial_correlation import parse_correlation

MODEL_I = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (1 | patient)"
CASES = [
    ("corExp(form = ~ t | id, nugget = TRUE)", {"range": 1.3, "nugget": 0.25}),
    ("corGaus(form = ~ t | id)", {"range": 0.8}),
    ("corGaus(form = ~ t | id, nugget = TRUE)", {"range": 0.8, "nugget": 0.4}),
    ("corCAR1(form = ~ t | id)", {"range": 2.0}),
    ("corCAR1(form = ~ t | id, nugget = TRUE)", {"range": 2.0, "nugget": 0.15}),
    ("corAR1(form = ~ 1 | id)", {"phi01": 0.2}),  # phi = -0.6: negative lag-one correlation
    ("corAR1(form = ~ 1 | id, nugget = TRUE)", {"phi01": 0.85, "nugget": 0.3}),
    ("corCompSymm(form = ~ 1 | id)", {"rho01": 0.4}),
    (None, {}),  # independent errors: R_i = I (with the log-SD design: variance functions alone)
]


def _dense_r(text: str, free: dict, times: np.ndarray, n_max: int) -> np.ndarray:
    """R written out independently of hierlmm, from nlme's definitions."""
    n = times.size
    if text is None:
        return np.eye(n)
    s = parse_correlation(text)
    d = np.abs(times[:, None] - times[None, :]) if s.time else np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    if s.kind == "corExp":
        R = np.exp(-d / free["range"])
    elif s.kind == "corGaus":
        R = np.exp(-((d / free["range"]) ** 2))
    elif s.kind == "corCAR1":
        R = np.exp(-1 / free["range"]) ** d
    elif s.kind == "corAR1":
        R = (2 * free["phi01"] - 1) ** d
    else:
        low = -1 / (n_max - 1)
        R = np.full((n, n), low + (1 - low) * free["rho01"])
    if s.nugget:
        R = R * (1 - free["nugget"])
    np.fill_diagonal(R, 1.0)
    return R


def _point(bm, free: dict, omega: np.ndarray | None):
    beta_c = np.array([1.2, 0.4, -0.3])
    L = np.array([[1.1, 0.0], [-0.2, 0.35]])
    point = {"beta_centred": beta_c, "sigma": 0.9, "chol_id": L[np.tril_indices(2)], **free}
    if omega is not None:  # the free variable is the SD at the mean of M; sigma = 0.9 is nlme's
        point["omega"] = omega
        point["sigma_centred"] = 0.9 * np.exp(bm.log_sd_centre @ omega)
        del point["sigma"]
    return point, bm.from_centred(beta_c), L


CASE_IDS = [(c[0] or "independent").split("(")[0] + ("+nugget" if c[0] and "nugget" in c[0] else "") for c in CASES]


@pytest.mark.parametrize("with_m", [False, True], ids=["homoscedastic", "log-sd design"])
@pytest.mark.parametrize("text,free", CASES, ids=CASE_IDS)
def test_log_likelihood_equals_dense_multivariate_normals(text, free, with_m):
    from pymc.model.transform.conditioning import remove_value_transforms

    data = simulate(3, n_subjects=12)
    if text is None:  # rows of subjects interleaved: the Woodbury kernel sorts them by subject
        data = data.sample(frac=1.0, random_state=1).reset_index(drop=True)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), data)
    M, omega = None, None
    if with_m:  # varIdent-like: one log SD ratio for group "b" against "a", and a continuous log-linear term
        g = data["g"].to_numpy()[design.rows]
        M = np.column_stack([(g == "b").astype(float), data["x"].to_numpy()[design.rows]])
        omega = np.array([0.4, -0.2])
    bm = build_correlated_bayes_model(design, data, text, log_sd_design=None if M is None else (M, ("gb", "x")))
    point, beta, L = _point(bm, free, omega)
    model = remove_value_transforms(bm.model)
    value = model.compile_fn(model.replace_rvs_by_values([model["marginalised_loglik"]])[0], inputs=model.value_vars,
                             on_unused_input="ignore")(point)
    block = design.blocks[0]
    dense = np.zeros(block.n_levels)
    for level in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == level)
        times = data["t"].to_numpy()[design.rows[rows]]
        S = np.exp(M[rows] @ omega) if with_m else np.ones(rows.size)
        V = block.Z[rows] @ L @ L.T @ block.Z[rows].T + 0.9**2 * np.outer(S, S) * _dense_r(text, free, times,
                                                                                          bm.n_max)
        dense[level] = scipy.stats.multivariate_normal(design.X[rows] @ beta, V).logpdf(design.y[rows])
    assert value == pytest.approx(dense.sum(), rel=1e-10)
    ll, _ = subject_terms(bm, beta[None], L[None], np.array([0.9]), {k: np.array([v]) for k, v in free.items()},
                          None if omega is None else omega[None])
    np.testing.assert_allclose(ll[0], dense, rtol=1e-10)


def test_kernel_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 4, 4))
    V = A @ np.swapaxes(A, -1, -2) + np.eye(4)
    r = rng.normal(size=(3, 4))
    value, dV, dr = gaussian_loglik_and_grad(V, r)
    assert value == pytest.approx(sum(scipy.stats.multivariate_normal(np.zeros(4), V[i]).logpdf(r[i])
                                      for i in range(3)), rel=1e-12)
    h = 1e-6
    for i, j, k in [(0, 1, 2), (2, 3, 3), (1, 0, 0), (2, 3, 0)]:  # V is symmetric: perturb (j, k) and (k, j)
        E = np.zeros_like(V)
        E[i, j, k] = E[i, k, j] = h
        numeric = (gaussian_loglik_and_grad(V + E, r)[0] - gaussian_loglik_and_grad(V - E, r)[0]) / (2 * h)
        analytic = dV[i, j, k] + (dV[i, k, j] if j != k else 0.0)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    rp, rm = r.copy(), r.copy()
    rp[1, 2] += h
    rm[1, 2] -= h
    assert dr[1, 2] == pytest.approx((gaussian_loglik_and_grad(V, rp)[0] - gaussian_loglik_and_grad(V, rm)[0])
                                     / (2 * h), rel=1e-6)
    V[0, 0, 0] = -1.0  # not positive definite: rejected, not a crash
    assert gaussian_loglik_and_grad(V, r)[0] == -np.inf


@pytest.mark.parametrize("q", [1, 2, 3])
def test_woodbury_kernel_gradient_matches_finite_differences(q):
    """hierlmm.kernels.woodbury_op (R_i = I): the value against dense scipy normals, the gradient with respect to r,
    the log
    error variances and every entry of a full (not triangular) L against central differences, subjects of 1 to 5
    rows; the written-out q = 1 and q = 2 kernels against the general one."""
    rng = np.random.default_rng(q)
    sizes = [1, 3, 2, 5, 1, 4]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = offsets[-1]
    Z, L = rng.normal(size=(n, q)), rng.normal(size=(q, q))
    r, v = rng.normal(size=n), rng.normal(0.0, 0.7, n)
    kernel = kernel_for(q)
    value, dr, dv, dL = kernel(r, v, L, Z, offsets)
    dense = sum(scipy.stats.multivariate_normal(np.zeros(b - a), Z[a:b] @ L @ L.T @ Z[a:b].T
                                                + np.diag(np.exp(v[a:b]))).logpdf(r[a:b])
                for a, b in zip(offsets[:-1], offsets[1:], strict=True))
    assert value == pytest.approx(dense, rel=1e-12)
    for mine, general in zip((value, dr, dv, dL), woodbury_loglik_and_grad(r, v, L, Z, offsets), strict=True):
        np.testing.assert_allclose(mine, general, rtol=1e-12, atol=1e-13)
    h = 1e-6
    for x, analytic, which in ((r, dr, 0), (v, dv, 1), (L, dL, 2)):
        for j in range(x.size):
            args = [r, v, L]
            plus, minus = x.copy(), x.copy()
            plus.flat[j] += h
            minus.flat[j] -= h
            args[which] = plus
            up = kernel(*args, Z, offsets)[0]
            args[which] = minus
            down = kernel(*args, Z, offsets)[0]
            assert analytic.flat[j] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8), (which, j)


@pytest.mark.parametrize("text,with_m", [("corExp(form = ~ t | id, nugget = TRUE)", False), (None, True)],
                         ids=["corExp", "independent, log-sd design"])
def test_model_gradient_matches_finite_differences(text, with_m):
    """The gradient NUTS sees (hierlmm.engines.bayes.sampling' compiled function: the dense Op's pullback through
    PyTensor's graph of V, or the Woodbury Op's through r and the log variances with R_i = I) on the unconstrained
    scale, against central differences of the log-density."""
    from hierlmm.engines.bayes.sampling import _joined_functions

    data = simulate(5, n_subjects=10)
    if text is None:
        data = data.sample(frac=1.0, random_state=2).reset_index(drop=True)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), data)
    log_sd = None
    if with_m:
        g = data["g"].to_numpy()[design.rows]
        log_sd = (np.column_stack([(g == "b").astype(float), data["x"].to_numpy()[design.rows]]), ("gb", "x"))
    bm = build_correlated_bayes_model(design, data, text, log_sd_design=log_sd)
    logp_fn, *_ = _joined_functions(bm.model)
    x = np.random.default_rng(2).uniform(-0.5, 0.5, sum(_[-1]))
    _, grad = logp_fn(x)
    h = 1e-6
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = h
        numeric = (logp_fn(x + e)[0] - logp_fn(x - e)[0]) / (2 * h)
        assert grad[j] == pytest.approx(numeric, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("structure", ["pdIdent", "pdCompSymm", "pdDiag"])
def test_structures_of_d_with_correlated_errors(structure):
    """D's structure (hierlmm.engines.bayes.random_effects_covariance) is kept with serially correlated errors: its own
    parameters, the
    likelihood at a point equal to dense normals, and the reported D rebuilt from them."""
    from pymc.model.transform.conditioning import remove_value_transforms

    data = simulate(4, n_subjects=10)
    pd_mat = getattr(hierlmm, structure)("~ t")
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x", random={"id": pd_mat}), data)
    text = "corExp(form = ~ t | id)"
    bm = build_correlated_bayes_model(design, data, text)
    free = {"range": 1.3}
    point = {"beta_centred": np.array([1.2, 0.4, -0.3]), "sigma": 0.9, **free}
    if structure == "pdDiag":
        point["sd_id"] = np.array([1.1, 0.3])
        L = np.diag([1.1, 0.3])
    else:
        point["s_id"] = 0.8
        rho = 0.35 if structure == "pdCompSymm" else 0.0
        if structure == "pdCompSymm":
            point["rho_id"] = rho
        L = 0.8 * np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    assert {k for k in point if k not in ("beta_centred", "sigma", "range")} == \
        {v.name for v in bm.model.free_RVs} - {"beta_centred", "sigma", "range"}
    model = remove_value_transforms(bm.model)
    value = model.compile_fn(model.replace_rvs_by_values([model["marginalised_loglik"]])[0], inputs=model.value_vars,
                             on_unused_input="ignore")(point)
    beta, block = bm.from_centred(point["beta_centred"]), design.blocks[0]
    dense = 0.0
    for level in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == level)
        times = data["t"].to_numpy()[design.rows[rows]]
        V = block.Z[rows] @ L @ L.T @ block.Z[rows].T + 0.81 * _dense_r(text, free, times, bm.n_max)
        dense += scipy.stats.multivariate_normal(design.X[rows] @ beta, V).logpdf(design.y[rows])
    assert value == pytest.approx(dense, rel=1e-10)


def test_input_errors_are_hierlmm_errors():
    data = simulate(1, n_subjects=6)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    with pytest.raises(hierlmm.SpecError, match="Unknown correlation"):
        build_correlated_bayes_model(design, data, "corSpher(form = ~ t | id)")
    with pytest.raises(hierlmm.DataError, match="time column"):
        build_correlated_bayes_model(design, data, "corExp(form = ~ when | id)")
    with pytest.raises(hierlmm.NotSupportedError, match="grouping"):
        build_correlated_bayes_model(design, data, "corExp(form = ~ t | g)")
    with pytest.raises(hierlmm.SpecError, match="one row per observation"):
        build_correlated_bayes_model(design, data, "corExp(form = ~ t | id)", log_sd_design=(np.ones((3, 1)), ("a",)))
    with pytest.raises(hierlmm.SpecError, match="prior"):
        build_correlated_bayes_model(design, data, "corExp(form = ~ t | id)", priors={"range": (-1, 1)})
    with pytest.raises(hierlmm.SpecError, match="Unknown prior"):
        build_correlated_bayes_model(design, data, "corExp(form = ~ t | id)", priors={"phi": 1})
    bm = build_correlated_bayes_model(design, data, "corExp(form = ~ t | id, nugget = TRUE)",
                                      priors={"range": (3.0, 0.5), "nugget": (1, 4), "sigma": 2.0})
    cp = bm.correlation_priors
    assert (cp.range_median, cp.range_log_sd, cp.nugget, bm.priors.sigma_scale) == (3.0, 0.5, (1.0, 4.0), 2.0)


def test_model_I_posterior_agrees_with_reml(chapter_data, reference):
    """A quick NUTS fit of the chapter's Model I: posterior means of beta within a loose band of REML (nlme), the
    posterior median of the range inside nlme's 95% interval; every b drawn and every subject's log-likelihood."""
    ref = reference("aids_corexp_ri")
    aids = chapter_data("aids")
    design = hierlmm.build_design(hierlmm.model_spec(MODEL_I), aids)
    fit = fit_bayes_correlated(design, aids, "corExp(form = ~ obstime | patient)", chains=2, draws=300, tune=300,
                               seed=3, progressbar=False)
    table = fit.fixef()
    # posterior mean - REML is a small fraction of the posterior SD here (flat priors, 1405 rows), plus MC error
    z = (table["mean"].to_numpy() - np.array(ref["fixef"]["value"])) / table["sd"].to_numpy()
    assert np.all(np.abs(z) < 0.5), z
    rng_draws = fit.tree["posterior"]["range"].values
    assert ref["range_ci"][0] < np.median(rng_draws) < ref["range_ci"][1]
    assert np.median(rng_draws) == pytest.approx(ref["range"], rel=0.2)
    assert fit.summary().loc["sigma", "mean"] == pytest.approx(ref["sigma"], rel=0.05)
    assert fit.tree["posterior"]["b_patient"].shape[2:] == (467, 1)
    ll = fit.tree["log_likelihood"]["y_subject"]
    assert ll.shape[2] == 467 and np.isfinite(ll.values).all()
    assert fit.diagnostics().divergences == 0


def test_fit_bayes_routes_correlation_and_checks_its_arguments():
    data = simulate(2, n_subjects=6)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    with pytest.raises(hierlmm.SpecError, match="marginal sampler"):
        hierlmm.fit_bayes(design, correlation="corExp(form = ~ t | id)")  # no data
    with pytest.raises(hierlmm.SpecError, match="marginal sampler"):
        hierlmm.fit_bayes(design, correlation="corExp(form = ~ t | id)", data=data, sampler="joint")
    with pytest.raises(hierlmm.SpecError, match="need the data"):
        hierlmm.fit_bayes(design, weights="varIdent(form = ~ 1 | g)")  # no data
    with pytest.raises(hierlmm.SpecError, match="plain hierarchical model"):
        fit_bayes_correlated(design, data, None)
    with pytest.raises(hierlmm.SpecError, match="both set"):
        fit_bayes_correlated(design, data, None, weights="varIdent(form = ~ 1 | g)",
                             log_sd_design=(np.ones((design.n_obs, 1)), ("a",)))


@pytest.mark.slow
def test_model_II_converges_with_nuts(chapter_data):
    """Issue 5: the chapter's Model II with corExp, where REML's interval of the range spans three orders of
    magnitude, converges by NUTS: R-hat <= 1.01, no divergences, bulk and tail ESS >= 400. Its posterior has a thin
    lobe (slope SD near 0, longer range, larger sigma) that the defaults (4 x 1000 draws, target_accept 0.9) sample
    with a divergence in about one fit in four; smaller steps and 3000 draws per chain sample it cleanly
    (seeds 1-5, docs/serial_correlation.md)."""
    aids = chapter_data("aids")
    formula = "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (obstime | patient)"
    design = hierlmm.build_design(hierlmm.model_spec(formula), aids)
    fit = fit_bayes_correlated(design, aids, "corExp(form = ~ obstime | patient)", draws=3000, target_accept=0.95,
                               progressbar=False)
    diag = fit.diagnostics()
    assert diag.divergences == 0, str(diag)
    assert diag.max_rhat <= 1.01, str(diag)
    assert min(diag.min_ess_bulk, diag.min_ess_tail) >= 400, str(diag)
    assert "range" in fit.correlation().index


@pytest.mark.slow
def test_model_III_converges_with_nuts_at_the_defaults(chapter_data):
    """Issue 5: Model III (random intercepts, slopes and quadratic slopes) with corExp, whose REML Hessian is not
    positive definite, by NUTS at the defaults (4 x 1000 draws, 2000 tuning steps, target_accept 0.9): R-hat <= 1.01,
    no divergences, and a posterior of the range (notebook 04: R-hat 1.006)."""
    aids = chapter_data("aids")
    formula = ("CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug"
               " + (obstime + I(obstime^2) | patient)")
    design = hierlmm.build_design(hierlmm.model_spec(formula), aids)
    fit = fit_bayes_correlated(design, aids, "corExp(form = ~ obstime | patient)", progressbar=False)
    diag = fit.diagnostics()
    assert diag.divergences == 0, str(diag)
    assert diag.max_rhat <= 1.01, str(diag)
    assert min(diag.min_ess_bulk, diag.min_ess_tail) >= 400, str(diag)
    low, high = np.quantile(fit.tree["posterior"]["range"].values, [0.025, 0.975])
    assert 0 < low < high < 50


def test_cli_nuts_with_correlation(tmp_path):
    import json

    from hierlmm.cli import main

    csv = tmp_path / "sim.csv"
    simulate(4, n_subjects=15).to_csv(csv, index=False)
    out = tmp_path / "nuts.json"
    assert main(["fit", "--data", str(csv), "--formula", "y ~ t + (1 | id)", "--correlation",
                 "corExp(form = ~ t | id, nugget = TRUE)", "--weights", "varIdent(form = ~ 1 | g)", "--method",
                 "nuts", "--chains", "2", "--draws", "60", "--tune", "60", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "nuts"
    assert "range" in result["posterior"]["parameter"]
    # the REML --json's correlation and variance_function blocks, with posterior medians and 95% intervals
    corr, variance = result["correlation"], result["variance_function"]
    assert (corr["type"], corr["form"], corr["nugget"]) == ("corExp", "~ t | id", True)
    assert (variance["type"], variance["form"]) == ("varIdent", "~1 | g")
    row = result["posterior"]["parameter"].index("range")
    for block, name in ((corr, "range"), (corr, "nugget"), (variance, "sd_ratio[b]")):
        lower, upper = block["intervals"][name]
        assert lower < block["parameters"][name] < upper
    assert corr["intervals"]["range"] == pytest.approx([result["posterior"]["lower"][row],
                                                        result["posterior"]["upper"][row]], rel=1e-3)
    assert main(["fit", "--data", str(csv), "--formula", "y ~ t + (1 | id)", "--correlation",
                 "corExp(form = ~ t | id)", "--method", "nuts", "--sampler", "joint", "--quiet"]) == 2
    # both engines, a variance function, and the saved tree, summary and plots (--out)
    folder = tmp_path / "saved"
    assert main(["fit", "--data", str(csv), "--formula", "y ~ t + (1 | id)", "--correlation",
                 "corExp(form = ~ t | id)", "--weights", "varIdent(form = ~ 1 | g)", "--method", "both",
                 "--chains", "2", "--draws", "60", "--tune", "60", "--quiet", "--out", str(folder)]) == 0
    assert {p.name for p in folder.iterdir()} == {"summary.csv", "rank.png", "ppc.png", "forest.png", "posterior.nc"}
    saved = pd.read_csv(folder / "summary.csv", index_col=0)
    assert {"range", "sd_ratio[b]"} <= set(saved.index)


def test_random_effects_draws_follow_their_gaussian_conditional():
    """b_i | y_i ~ N(D Z_i' V_i^-1 r_i, D - D Z_i' V_i^-1 Z_i D), written out densely, against many exact draws."""
    data = simulate(7, n_subjects=5)
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), data)
    text, free = "corExp(form = ~ t | id)", {"range": 1.5}
    bm = build_correlated_bayes_model(design, data, text)
    _, beta, L = _point(bm, free, None)
    S = 20_000
    _, b = subject_terms(bm, np.tile(beta, (S, 1)), np.tile(L, (S, 1, 1)), np.full(S, 0.9),
                         {"range": np.full(S, 1.5)}, None, np.random.default_rng(1))
    block = design.blocks[0]
    D = L @ L.T
    for level in range(block.n_levels):
        rows = np.flatnonzero(block.group_index == level)
        times = data["t"].to_numpy()[design.rows[rows]]
        Z = block.Z[rows]
        V = Z @ D @ Z.T + 0.81 * _dense_r(text, free, times, bm.n_max)
        K = D @ Z.T @ np.linalg.inv(V)
        mean, cov = K @ (design.y[rows] - design.X[rows] @ beta), D - K @ Z @ D
        se = np.sqrt(np.diag(cov) / S)
        assert np.all(np.abs(b[:, level].mean(axis=0) - mean) < 5 * se)
        np.testing.assert_allclose(np.cov(b[:, level].T), cov, rtol=0.06, atol=1e-3 * np.abs(cov).max())


def test_range_prior_is_centred_on_the_median_gap_between_visits():
    import pandas as pd

    from hierlmm.engines.bayes.correlated_model import median_gap, stack_batches

    # visits out of time order; gaps 2, 4 | 1, 1, 1 | 5 -> median 1.5 (no gap for a single visit)
    data = pd.DataFrame({"id": list("aaabbbbcdd"), "t": [6, 0, 2, 3, 1, 0, 2, 7, 5, 10],
                         "y": np.arange(10.0)})
    design = hierlmm.build_design(hierlmm.model_spec("y ~ t + (1 | id)"), data)
    batches, n_max = stack_batches(design, data, parse_correlation("corExp(form = ~ t | id)"), None)
    assert n_max == 4
    assert median_gap(batches) == pytest.approx(1.5)


def test_nuts_with_a_variance_function_is_near_reml(chapter_data):
    """weights= (nlme's varIdent) through the log-SD hook: the posterior SD ratio of ddI sits near REML's."""
    import warnings

    import hierlmm

    aids = chapter_data("aids")
    spec = hierlmm.model_spec("CD4 ~ obstime + obstime:drug + (1 | patient)")
    corr, weights = "corExp(form = ~ obstime | patient)", "varIdent(form = ~ 1 | drug)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reml = hierlmm.fit(spec, aids, correlation=corr, weights=weights)
        fit = hierlmm.fit_bayes(hierlmm.build_design(spec, aids), correlation=corr, data=aids, weights=weights,
                                chains=2, draws=150, tune=200, progressbar=False)
    omega = fit.tree["posterior"]["omega"].values.ravel()
    ratio = reml.variance_parameters["ddI"]
    assert abs(np.log(ratio) - omega.mean()) < 3 * omega.std()
    assert fit.diagnostics().divergences == 0
