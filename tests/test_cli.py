"""The command-line contract: `hierlmm fit` (formula or model file), `hierlmm demo`, --json keys, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from paths import MODELS

from hierlmm.cli import main

JSON_KEYS = {"method", "n_obs", "n_dropped", "groups", "fixef", "random", "sigma", "loglik", "aic", "bic", "seconds"}


def test_fit_formula_writes_the_json_contract(tmp_path, capsys, reference, chapter_data):
    out = tmp_path / "fit.json"
    code = main(["fit", "--data", "aids", "--formula", "CD4 ~ obstime + obstime:drug + (obstime | patient)",
                 "--method", "reml", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Linear mixed-effects model fit by REML" in printed
    assert "obstime:drugddI" in printed
    result = json.loads(out.read_text())
    assert JSON_KEYS <= set(result)
    ref = reference("aids_ri_rs_reml")
    assert result["method"] == "REML"
    assert result["n_obs"] == 1405 and result["n_dropped"] == 0
    assert result["groups"] == {"patient": 467}
    assert set(result["fixef"]) == {"names", "estimate", "se", "df", "t", "p"}
    assert result["fixef"]["names"] == ref["fixef"]["names"]
    assert result["fixef"]["df"] == ref["fixef"]["df"]
    assert result["loglik"] == pytest.approx(ref["logLik"], abs=1e-3)
    patient = result["random"]["patient"]
    assert patient["names"] == ["(Intercept)", "obstime"]
    assert patient["cov"][0][1] == pytest.approx(ref["D"]["D"][0][1], rel=1e-3)
    assert patient["sd"][0] == pytest.approx(ref["D"]["D"][0][0] ** 0.5, rel=1e-3)
    assert result["seconds"] > 0


def test_fit_nlme_random_argument_with_pddiag(tmp_path, reference, chapter_data):
    out = tmp_path / "fit.json"
    code = main(["fit", "--data", "aids", "--formula", "CD4 ~ obstime + obstime:drug",
                 "--random", "pdDiag(~ obstime | patient)", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["loglik"] == pytest.approx(reference("aids_pddiag_reml")["logLik"], abs=1e-3)
    assert result["random"]["patient"]["cov"][0][1] == 0.0


def test_fit_model_file_and_ml(tmp_path, reference):
    out = tmp_path / "fit.json"
    assert main(["fit", "models/pbc2_tvc_current.toml", "--method", "ml", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["method"] == "ML"
    ref = reference("pbc2_tvc_current")  # REML reference: ML differs, but names and df match
    assert result["fixef"]["names"] == ref["fixef"]["names"]
    assert result["fixef"]["df"] == ref["fixef"]["df"]
    assert result["loglik"] > ref["logLik"]  # ML's log-likelihood is not penalised by log|X'V^-1X|


def test_csv_data(tmp_path, pbc2_with_basepro):
    csv = tmp_path / "pbc.csv"
    pbc2_with_basepro.to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    code = main(["fit", "--data", str(csv), "--formula", "log(serBilir) ~ year + (year | id)", "--json", str(out)])
    assert code == 0
    assert json.loads(out.read_text())["groups"] == {"id": 312}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--data", "pbc2", "--formula", "log(serBilir) ~ year + (year | idd)"], "Did you mean 'id'"),
        (["fit", "--data", "pbc2", "--formula", "log(serBilir) ~ year +"], "Fix:"),
        (["fit", "--data", "nosuchdata", "--formula", "y ~ x + (1 | g)"], "nosuchdata"),
        (["fit", "--data", "pbc2", "--formula", "sex ~ year + (1 | id)"], "not a single numeric column"),
        (["fit", "--data", "pbc2", "--formula", "serBilir ~ year + (1 | id)", "--random", "~ 1 | id"],
         "random-effects terms"),
        (["fit"], "needs a model file"),
        # arguments that do not go together are refused, never ignored
        (["fit", "--data", "pbc2", "--formula", "log(serBilir) ~ year + (1 | id)", "--kind", "marginal",
          "--correlation", "corExp(form = ~ year | id)"], "hierarchical model's random effects only"),
        (["fit", "--data", "pbc2", "--formula", "log(serBilir) ~ year + (1 | id)", "--kind", "marginal",
          "--method", "both"], "not BOTH"),
        (["fit", "--data", "pbc2", "--formula", "log(serBilir) ~ year + (1 | id)", "--kind", "marginal",
          "--method", "nuts", "--sampler", "joint"], "sampler, centered and pointwise do not apply"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hierlmm: error:")
    assert message in err
    assert "Traceback" not in err


def test_demo_runs_as_a_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hierlmm.cli", "demo", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "sexfemale:basePro" in proc.stdout
    result = json.loads((tmp_path / "demo_pbc2_effect_plot.json").read_text())
    assert JSON_KEYS <= set(result)
    png = tmp_path / "demo_pbc2_effect_plot.png"  # the chapter's effect plot, from the REML fit
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_anova_command_prints_and_writes_the_table(tmp_path, capsys, reference):
    out = tmp_path / "anova.json"
    code = main(["anova", str(MODELS / "aids_ri_rs.toml"), "--type", "marginal", "--ddf", "kenward-roger",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Kenward-Roger" in printed and "obstime:drug" in printed
    result = json.loads(out.read_text())
    assert result["anova"]["index"] == ["(Intercept)", "obstime", "obstime:drug"]
    assert result["anova"]["columns"] == ["numDF", "denDF", "F-value", "p-value", "F-scaling"]
    ref = reference("aids_ri_rs_reml")["fixef"]
    # a one-column term's marginal F is its t statistic squared (the KR-adjusted SE enlarges it slightly)
    assert result["anova"]["rows"][2][2] == pytest.approx(ref["t"][2] ** 2, rel=2e-2)
    assert main(["anova", "--data", "aids", "--formula", "CD4 ~ obstime + obstime:drug + (obstime | patient)",
                 "--terms", "obstime", "obstime:drug"]) == 0
    assert "F-test for: obstime, obstime:drug" in capsys.readouterr().out


def test_compare_command_tables_and_single_model_test(tmp_path, capsys, reference):
    out = tmp_path / "compare.json"
    assert main(["compare", str(MODELS / "aids_ri.toml"), str(MODELS / "aids_ri_rs.toml"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "50:50 mixture of chi2(1) and chi2(2)" in printed
    result = json.loads(out.read_text())
    assert result["models"] == ["aids_ri", "aids_ri_rs"]
    rows = result["anova"]["rows"]
    assert rows[0][-1] is None  # the first model has no test: null, not NaN, in strict JSON
    loglik = result["anova"]["columns"].index("logLik")
    assert rows[1][loglik] == pytest.approx(reference("aids_ri_rs_reml")["logLik"], abs=1e-3)
    assert rows[0][loglik] == pytest.approx(reference("aids_ri_reml")["logLik"], abs=1e-3)
    assert main(["compare", str(MODELS / "aids_ri.toml"), "--null", "exact", "--nsim", "500", "--seed", "2"]) == 0
    assert "exactRLRT" in capsys.readouterr().out
    assert main(["compare", str(MODELS / "aids_ri.toml"), "--formula", "CD4 ~ obstime"]) == 2
    assert "Model files and --formula" in capsys.readouterr().err


def test_predict_command_writes_dynamic_predictions(tmp_path, capsys, chapter_data):
    """hierlmm predict: the new data with the prediction's columns, equal to hierlmm.predict on the same fit."""
    import numpy as np
    import pandas as pd

    import hierlmm

    aids = chapter_data("aids")
    later = pd.DataFrame({"patient": ["n1", "n1", "n2"], "obstime": [12.0, 18.0, 12.0],
                          "drug": ["ddI", "ddI", "ddC"]})
    first = pd.DataFrame({"patient": ["n1", "n1", "n2"], "obstime": [0.0, 2.0, 0.0], "drug": ["ddI", "ddI", "ddC"],
                          "CD4": [10.0, 9.0, 4.0]})
    later.to_csv(tmp_path / "later.csv", index=False)
    first.to_csv(tmp_path / "first.csv", index=False)
    out = tmp_path / "sub" / "pred.csv"
    formula = "CD4 ~ obstime + obstime:drug + (obstime | patient)"
    assert main(["predict", "--data", "aids", "--formula", formula, "--newdata", str(tmp_path / "later.csv"),
                 "--history", str(tmp_path / "first.csv"), "--level", "1", "--interval", "prediction",
                 "--ci-prob", "0.9", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 subject-specific predictions" in printed and "plug-in" in printed
    written = pd.read_csv(out)
    assert list(written.columns) == ["patient", "obstime", "drug", "fit", "se", "y_fit", "y_se", "lower", "upper"]
    expected = hierlmm.predict(hierlmm.fit(formula, aids), later, level=1, interval="prediction", ci_prob=0.9,
                               history=first)
    np.testing.assert_allclose(written[["fit", "se", "lower", "upper"]].to_numpy(),
                               expected.table[["fit", "se", "lower", "upper"]].to_numpy(), rtol=1e-10)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tree", "draws.nc"], "an ML/REML fit has none"),
        (["--tree", "draws.txt"], "netCDF"),
        (["--interval", "prediction", "--level", "0", "--history", "HISTORY"], "level=1"),
    ],
)
def test_predict_command_refuses_what_it_cannot_honour(tmp_path, capsys, extra, message):
    import pandas as pd

    rows = pd.DataFrame({"id": [1, 1], "year": [1.0, 2.0], "sex": ["male", "male"], "serBilir": [1.0, 1.2]})
    rows.to_csv(tmp_path / "rows.csv", index=False)
    extra = [str(tmp_path / "rows.csv") if a == "HISTORY" else a for a in extra]
    args = ["predict", "--data", "pbc2", "--formula", "log(serBilir) ~ year + sex + (1 | id)", "--newdata",
            str(tmp_path / "rows.csv"), "--out", str(tmp_path / "p.csv"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "p.csv").exists()


def test_predict_command_refuses_sampler_options_for_reml(tmp_path, capsys):
    import pandas as pd

    pd.DataFrame({"id": [1], "year": [1.0], "sex": ["male"]}).to_csv(tmp_path / "new.csv", index=False)
    args = ["predict", "--data", "pbc2", "--formula", "log(serBilir) ~ year + sex + (1 | id)", "--newdata",
            str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv"), "--chains", "2", "--draws", "50"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "NUTS sampler" in err and "--chains" in err and not (tmp_path / "p.csv").exists()
