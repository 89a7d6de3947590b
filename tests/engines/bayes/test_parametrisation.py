"""Centred, non-centred and mixed parametrisations of the joint sampler (hierlmm.engines.bayes.parametrisation)."""

from __future__ import annotations

import numpy as np
import pytest
from simulated import simulate

import hierlmm
from hierlmm.api import fit_bayes
from hierlmm.engines.bayes.hierarchical_model import build_bayes_model
from hierlmm.engines.bayes.parametrisation import AUTO_THRESHOLD, parametrisation, shrinkage


@pytest.fixture(scope="module")
def design():
    return hierlmm.build_design(hierlmm.model_spec("y ~ t + x + (t | id)"), simulate(7, n_subjects=60))


def test_names_resolve_to_leading_effects_and_absorbed_fixed_effects(design):
    whole = parametrisation(design, ["id"])
    assert whole.centred == {"id": 2}
    assert whole.absorbed == {"id": (0, 1)}  # (Intercept) and t are columns 0 and 1 of X
    assert whole.names(design) == ["id:(Intercept)", "id:t"]
    first = parametrisation(design, ["id:(Intercept)"])
    assert first.centred == {"id": 1} and first.absorbed == {"id": (0,)}
    assert parametrisation(design, ["id:t"]).centred == {"id": 2}  # an effect brings those before it
    assert parametrisation(design, ()).centred == {}


def test_a_random_effect_without_a_fixed_effect_is_centred_at_zero():
    design = hierlmm.build_design(hierlmm.model_spec("y ~ x + (t | id)"), simulate(1, n_subjects=20))
    assert parametrisation(design, ["id"]).absorbed == {"id": (0, -1)}


def test_bad_centred_names_say_what_to_use(design):
    with pytest.raises(hierlmm.SpecError, match="unknown grouping factor"):
        parametrisation(design, ["patient"])
    with pytest.raises(hierlmm.SpecError, match="no random effect"):
        parametrisation(design, ["id:x"])


def test_auto_centres_the_effects_the_data_pin_down(design):
    reml = hierlmm.fit_ml(design, "REML")
    ratio = shrinkage(design, reml)["id"]
    # the rule by hand: conditional variance of b_l given its own rows over the prior variance, averaged
    block, D, s2 = design.blocks[0], reml.D[0], reml.sigma**2
    by_hand = []
    for level in range(block.n_levels):
        Z = block.Z[block.group_index == level]
        by_hand.append(np.diag(np.linalg.inv(np.linalg.inv(D) + Z.T @ Z / s2)) / np.diag(D))
    np.testing.assert_allclose(ratio, np.mean(by_hand, axis=0), rtol=1e-10)
    expected = 0
    while expected < 2 and ratio[expected] < AUTO_THRESHOLD:
        expected += 1
    assert parametrisation(design, "auto", reml).centred.get("id", 0) == expected


def test_mixed_parametrisation_samples_the_same_posterior_as_the_marginal_sampler(design):
    mixed = fit_bayes(design, sampler="joint", centered=["id:(Intercept)"], chains=2, draws=300, tune=300, seed=5,
                      progressbar=False)
    post = mixed.tree["posterior"]
    assert post["c_id"].dims == ("chain", "draw", "id__level", "id__centred")
    assert post["z_id"].dims == ("chain", "draw", "id__level", "id__noncentred")
    # b reconstructed from c and z: its intercept column is c - beta_0 draw by draw
    np.testing.assert_allclose(post["b_id"].values[..., 0],
                               post["c_id"].values[..., 0] - post["beta"].values[:, :, None, 0], atol=1e-10)
    marginal = fit_bayes(design, sampler="marginal", chains=2, draws=300, tune=300, seed=5, progressbar=False)
    a, b = mixed.summary(), marginal.summary()
    assert np.all(np.abs(a["mean"] - b["mean"]) < 0.3 * b["sd"]), (a, b)
    ra = mixed.ranef()["id"]
    rb = marginal.ranef()["id"]
    assert np.corrcoef(ra.iloc[:, 0], rb.iloc[:, 0])[0, 1] > 0.99
    assert mixed.bayes_model.centered == ("id:(Intercept)",)


def test_marginal_sampler_refuses_centring(design):
    with pytest.raises(hierlmm.SpecError, match="joint sampler only"):
        build_bayes_model(design, sampler="marginal", centered="auto")


def test_cli_joint_sampler_with_centred_intercepts(tmp_path):
    import json

    from hierlmm.cli import main

    csv = tmp_path / "sim.csv"
    simulate(7, n_subjects=40).to_csv(csv, index=False)
    out = tmp_path / "joint.json"
    code = main(["fit", "--data", str(csv), "--formula", "y ~ t + x + (t | id)", "--method", "nuts", "--sampler",
                 "joint", "--centered", "id:(Intercept)", "--chains", "2", "--draws", "100", "--tune", "100",
                 "--quiet", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["sampler"] == "joint" and result["centered"] == ["id:(Intercept)"]
