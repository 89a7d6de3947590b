"""Bayesian fits with few draws (structure, names, agreement with REML within posterior error), priors, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from simulated import simulate

import hierlmm
from hierlmm.api import fit_bayes
from hierlmm.engines.bayes.bayes_fit import BayesFit
from hierlmm.engines.bayes.priors import default_priors, with_overrides
from hierlmm.inference.bayes_vs_ml import compare, compare_ranef

FORMULA = "y ~ t + x + (t | id)"


@pytest.fixture(scope="module")
def design():
    return hierlmm.build_design(hierlmm.model_spec(FORMULA), simulate(7, n_subjects=60))


@pytest.fixture(scope="module")
def fits(design) -> dict[str, BayesFit]:
    return {s: fit_bayes(design, sampler=s, chains=2, draws=300, tune=300, seed=3, progressbar=False)
            for s in ("marginal", "joint")}


@pytest.mark.parametrize("sampler", ["marginal", "joint"])
def test_tree_layout_and_names(fits, design, sampler):
    fit = fits[sampler]
    tree = fit.tree
    assert {"posterior", "sample_stats", "observed_data", "log_likelihood"} <= set(tree.children)
    np.testing.assert_array_equal(tree["observed_data"]["y"].values, design.y)
    post = tree["posterior"]
    assert post["b_id"].dims == ("chain", "draw", "id__level", "id__effect")
    assert post["b_id"].shape[2:] == (60, 2)
    assert list(post["b_id"]["id__effect"].values) == ["(Intercept)", "t"]
    ll = tree["log_likelihood"]
    assert ll["y"].shape == (2, 300, design.n_obs)
    assert ll["y_subject"].shape == (2, 300, 60)
    table = fit.summary()
    assert list(table.index) == ["beta[(Intercept)]", "beta[t]", "beta[x]", "sd[id:(Intercept)]", "sd[id:t]",
                                 "cor[id:(Intercept),t]", "sigma"]
    assert list(table.columns) == ["mean", "sd", "lower", "upper", "r_hat", "ess_bulk", "ess_tail", "mcse_mean"]
    assert (table["lower"] < table["mean"]).all() and (table["mean"] < table["upper"]).all()
    ranef = fit.ranef()["id"]
    assert ranef.shape == (60, 8)


@pytest.mark.parametrize("sampler", ["marginal", "joint"])
def test_posterior_agrees_with_reml_within_posterior_error(fits, design, sampler):
    reml = hierlmm.fit_ml(design, "REML")
    table = compare(fits[sampler], reml)
    # with 60 subjects the posterior mean sits within a fraction of a posterior SD of the REML estimate
    assert np.all(np.abs(table["z"]) < 1.0), table
    shrink = compare_ranef(fits[sampler], reml)["id"]
    corr = np.corrcoef(shrink[("(Intercept)", "empirical Bayes")], shrink[("(Intercept)", "posterior mean")])[0, 1]
    assert corr > 0.98


def test_marginal_sampler_diagnostics_pass(fits):
    diag = fits["marginal"].diagnostics()
    assert diag.divergences == 0
    assert diag.max_rhat < 1.02
    assert "divergences 0" in str(diag)


def test_divergence_quantiles_point_at_the_tail_the_divergences_sit_in():
    from hierlmm.engines.bayes.bayes_fit import divergence_quantiles

    rng = np.random.default_rng(4)
    draws = {"range": rng.lognormal(size=(4, 500)), "beta[x]": rng.normal(size=(4, 500)),
             "sd[id:t]": rng.gamma(2.0, size=(4, 500))}
    flags = np.zeros((4, 500), dtype=bool)
    flags[np.unravel_index(np.argsort(draws["range"], axis=None)[-5:], flags.shape)] = True  # the 5 longest ranges
    found = divergence_quantiles(draws, flags, top=2)
    assert found[0][0] == "range"
    assert found[0][1] == pytest.approx(np.mean([2000, 1999, 1998, 1997, 1996]) / 2000)
    assert len(found) == 2 and abs(found[1][1] - 0.5) < 0.45
    flags[:] = False
    assert divergence_quantiles(draws, flags) == ()


def test_diagnostics_say_where_divergent_draws_sit(fits):
    """Divergences injected at the draws with the largest sigma: the advice names sigma's upper tail."""
    from dataclasses import replace

    fit = fits["marginal"]
    tree = fit.tree.copy(deep=True)
    sigma = tree["posterior"]["sigma"].values
    flags = sigma >= np.sort(sigma, axis=None)[-3]
    tree["sample_stats"]["diverging"] = tree["sample_stats"]["diverging"].copy(data=flags)
    diag = replace(fit, tree=tree).diagnostics()
    assert diag.divergences == 3
    assert diag.divergent_at[0][0] == "sigma" and diag.divergent_at[0][1] > 0.99
    assert "The divergent draws sit at: sigma at its 99." in str(diag)
    assert "integrated out" in str(diag)  # the marginal sampler samples no random effects: no funnel advice


def test_the_two_log_likelihoods_are_consistent(fits):
    # the per-subject marginalised log-likelihood at the posterior mean is larger than -infinity and the per-observation
    # conditional log-likelihoods sum, per subject, to more than the marginal (b fitted to the subject's data)
    ll = fits["marginal"].tree["log_likelihood"]
    assert np.isfinite(ll["y_subject"].values).all()
    assert ll["y"].values.sum(axis=-1).mean() > ll["y_subject"].values.sum(axis=-1).mean()


def test_prior_overrides(design):
    base = default_priors(design)
    assert base.sd_scale["id"][1] < base.sd_scale["id"][0]  # a slope's scale is divided by the RMS of t
    new = with_overrides(base, design, {"beta": {"t": (0, 1)}, "sigma": 3, "sd": {"id:t": 0.5}, "lkj_eta": 2})
    assert new.beta_sigma[1] == 1 and new.sigma_scale == 3 and new.sd_scale["id"][1] == 0.5
    assert new.lkj_eta == {"id": 2.0}
    with pytest.raises(hierlmm.SpecError, match="Fix:"):
        with_overrides(base, design, {"beta": {"nope": (0, 1)}})
    with pytest.raises(hierlmm.SpecError):
        with_overrides(base, design, {"sigma": -1})
    with pytest.raises(hierlmm.SpecError):
        with_overrides(base, design, {"tau": 1})


def test_bad_sampler_arguments(design):
    from hierlmm.engines.bayes.hierarchical_model import build_bayes_model

    with pytest.raises(hierlmm.SpecError, match="sampler"):
        build_bayes_model(design, sampler="gibbs")
    with pytest.raises(hierlmm.SpecError, match="joint sampler only"):
        build_bayes_model(design, sampler="marginal", centered=["id"])


def test_cli_nuts_json_contract(tmp_path, design):
    from hierlmm.cli import main

    csv = tmp_path / "sim.csv"
    simulate(7, n_subjects=60).to_csv(csv, index=False)
    out = tmp_path / "nuts.json"
    code = main(["fit", "--data", str(csv), "--formula", FORMULA, "--method", "nuts", "--chains", "2", "--draws",
                 "200", "--tune", "200", "--quiet", "--json", str(out), "--out", str(tmp_path / "fit")])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["posterior"]) == {"parameter", "mean", "sd", "lower", "upper", "r_hat", "ess_bulk", "ess_tail"}
    assert result["posterior"]["parameter"][0] == "beta[(Intercept)]"
    assert "cor[id:(Intercept),t]" in result["posterior"]["parameter"]
    assert set(result["diagnostics"]) >= {"max_rhat", "min_ess_bulk", "divergences"}
    assert result["seconds"] > 0
    back = xr.open_datatree(tmp_path / "fit" / "posterior.nc", engine="h5netcdf")
    assert set(back["posterior"].data_vars) >= {"beta", "sigma", "sd_id", "cor_id", "b_id"}
    assert back["posterior"]["b_id"].shape[-2:] == (60, 2)


def test_save_fit_writes_netcdf_or_zarr_that_reads_back(fits, tmp_path):
    from hierlmm.errors import SpecError
    from hierlmm.report.summaries import save_fit

    fit = fits["marginal"]
    for fmt, name in [("netcdf", "posterior.nc"), ("zarr", "posterior.zarr")]:
        saved = save_fit(fit, tmp_path / fmt, tree_format=fmt)
        assert tmp_path / fmt / name in saved
        back = xr.open_datatree(tmp_path / fmt / name)
        np.testing.assert_array_equal(back["posterior"]["sigma"].values, fit.tree["posterior"]["sigma"].values)
        np.testing.assert_array_equal(back["log_likelihood"]["y_subject"].values,
                                      fit.tree["log_likelihood"]["y_subject"].values)
    with pytest.raises(SpecError, match="netcdf"):
        save_fit(fit, tmp_path / "bad", tree_format="pickle")


def test_trajectories_population_and_subject(fits, design):
    from hierlmm.engines.bayes.posterior_result import mean_draws
    from hierlmm.inference.prediction import trajectories

    fit = fits["marginal"]
    data = simulate(7, n_subjects=60)
    grid = pd.DataFrame({"t": np.linspace(0, 5, 11), "x": 0.0, "id": "s0"})
    pop = trajectories(fit, grid, level=0)
    X, _ = hierlmm.new_model_matrices(design, grid)
    np.testing.assert_allclose(pop["mean"], X @ fit.tree["posterior"]["beta"].values.reshape(-1, 3).mean(0))
    assert (pop["lower"] < pop["mean"]).all() and (pop["mean"] < pop["upper"]).all()
    subject = trajectories(fit, grid, level=1)
    new_subject = trajectories(fit, grid.assign(id="someone new"), level=1)
    # a known subject's band is narrower than a new subject's (which includes the between-subject variation)
    assert ((subject["upper"] - subject["lower"]) < (new_subject["upper"] - new_subject["lower"])).all()
    predictive = trajectories(fit, grid, level=1, predictive=True)
    assert ((predictive["upper"] - predictive["lower"]) > (subject["upper"] - subject["lower"])).all()
    # level-1 means on the training rows are the posterior means of the fitted values
    rows = data.iloc[:25]
    draws = mean_draws(fit, rows, level=1)
    reml = hierlmm.fit_ml(design)
    assert np.corrcoef(draws.mean(0), reml.fitted(1)[:25])[0, 1] > 0.99


def test_posterior_and_prior_predictive(fits, design):
    from hierlmm.inference.posterior_predictive import add_posterior_predictive, prior_predictive

    tree = add_posterior_predictive(fits["marginal"])
    y_rep = tree["posterior_predictive"]["y"].values
    assert y_rep.shape == (2, 300, design.n_obs)
    assert abs(y_rep.mean() - design.y.mean()) < 0.1 * design.y.std()
    prior = prior_predictive(design, draws=200)
    y_prior = prior["prior_predictive"]["y"].values
    assert y_prior.shape[-1] == design.n_obs
    assert y_prior.std() > design.y.std()  # weakly informative: wider than the data


def test_plots_are_drawn_and_saved(fits, design, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from hierlmm import plots

    fit = fits["marginal"]
    data = simulate(7, n_subjects=60)
    reml = hierlmm.fit_ml(design)
    figures = {
        "panel": plots.subject_panel(fit, data, "t", n_subjects=4),
        "forest": plots.forest(fit, reml),
    }
    for name, fig in figures.items():
        fig.savefig(tmp_path / f"{name}.png", dpi=60)
    for name, pc in {"rank": plots.rank_plot(fit), "ppc": plots.ppc_plot(fit)}.items():
        pc.savefig(tmp_path / f"{name}.png", dpi=60)
    for name in ("panel", "forest", "rank", "ppc"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
    assert len([ax for ax in figures["panel"].axes if ax.get_visible()]) == 4
    with pytest.raises(hierlmm.DataError, match="time axis"):
        plots.subject_panel(fit, data, "not_a_column")
