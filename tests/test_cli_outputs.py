"""The command line checks what it was given before it works: output paths (one helper for every command), NUTS
settings and a model file's priors are refused before any data are fitted or sampled; ``--json`` is strict JSON
(NaN and inf as null)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from simulated import simulate

from hierlmm import cli
from hierlmm.cli import main
from hierlmm.report.summaries import json_ready, json_text

FORMULA = "y ~ t + (t | id)"


@pytest.fixture
def csv(tmp_path) -> Path:
    path = tmp_path / "sim.csv"
    simulate(7, n_subjects=12).to_csv(path, index=False)
    return path


@pytest.fixture
def no_work(monkeypatch):
    """Fitting, sampling and reading a model become tripwires: a refusal must come before them."""

    def tripwire(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    for name in ("fit_design", "fit_bayes", "predict", "write_diagnostics", "save_fit"):
        monkeypatch.setattr(cli, name, tripwire)


def _refused(argv: list[str], capsys, *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hierlmm: error:"), err
    for word in words:
        assert word in err, (word, err)
    return err


def _outputs(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {"file": a_file, "below": a_file / "sub" / "x", "folder": folder}


# command arguments, the output option, which kind of bad path, and the words of the refusal
OUTPUT_CASES = [
    (["fit", "--method", "reml"], "--json", "below", "is a file, so nothing can be created below it"),
    (["fit", "--method", "reml"], "--json", "folder", "names a file to write, but"),
    (["fit", "--method", "nuts"], "--out", "below", "is a file, so nothing can be created below it"),
    (["fit", "--method", "nuts"], "--out", "file", "names a folder to write into, but"),
    (["anova"], "--json", "below", "is a file"),
    (["compare"], "--json", "below", "is a file"),
    (["residuals"], "--out", "file", "names a folder to write into"),
    (["residuals"], "--out", "below", "is a file"),
    (["predict", "--newdata", "NEWDATA"], "--out", "below", "is a file"),
    (["predict", "--newdata", "NEWDATA"], "--out", "folder", "names a file to write"),
    (["predict", "--newdata", "NEWDATA", "--method", "nuts", "--out", "OUT.csv"], "--tree", "below", "is a file"),
]


@pytest.mark.parametrize(("command", "option", "where", "words"), OUTPUT_CASES)
def test_outputs_are_checked_before_any_work(tmp_path, csv, capsys, no_work, command, option, where, words):
    paths = _outputs(tmp_path)
    bad = paths[where]
    if option == "--tree" and where == "below":
        bad = paths["file"] / "draws.nc"
    argv = [str(csv) if a == "NEWDATA" else str(tmp_path / "out.csv") if a == "OUT.csv" else a for a in command]
    model = ["--data", str(csv), "--formula", FORMULA]
    _refused([*argv, *model, option, str(bad)], capsys, option, str(bad), words)


def test_demo_out_below_a_file_is_refused_first(tmp_path, capsys, no_work):
    bad = _outputs(tmp_path)["file"]
    _refused(["demo", "--out", str(bad)], capsys, "--out", str(bad), "names a folder to write into")


def test_an_unwritable_folder_is_refused_first(tmp_path, csv, capsys, no_work, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real = cli.os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    _refused(["fit", "--data", str(csv), "--formula", FORMULA, "--json", str(locked / "new" / "fit.json")], capsys,
             "--json", str(locked), "is not writable")
    _refused(["residuals", "--data", str(csv), "--formula", FORMULA, "--out", str(locked)], capsys,
             "--out", "is not writable")


def test_good_outputs_pass_the_check(tmp_path):
    cli._check_outputs(files={"--json": str(tmp_path / "new" / "deeper" / "fit.json"), "--tree": None},
                       folders={"--out": str(tmp_path / "new_folder"), "--other": str(tmp_path)})
    assert not (tmp_path / "new").exists() and not (tmp_path / "new_folder").exists()  # nothing is created


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--chains", "0", ["chains", ">= 1"]),
    ("--draws", "0", ["draws", ">= 1"]),
    ("--draws", "-3", ["draws", ">= 1"]),
    ("--tune", "-1", ["tune", ">= 0"]),
    ("--cores", "0", ["cores", ">= 1"]),
    ("--seed", "-1", ["seed", "from 0 to 4294967295"]),
    ("--seed", str(2**32), ["seed", "from 0 to 4294967295"]),
])
@pytest.mark.parametrize("command", ["fit both", "fit nuts", "predict nuts", "compare nuts"])
def test_nuts_settings_are_refused_before_any_fit(tmp_path, csv, capsys, no_work, command, option, value, words):
    name, method = command.split()
    if name == "compare" and option == "--seed" and value == "-1":
        pytest.skip("compare's --seed is also the simulated null's; checked by the fit")
    extra = ["--newdata", str(csv), "--out", str(tmp_path / "p.csv")] if name == "predict" else []
    _refused([name, "--data", str(csv), "--formula", FORMULA, "--method", method, *extra, option, value, "--quiet"],
             capsys, *words)


def _model_file(tmp_path: Path, csv: Path, priors: str, formula: str = FORMULA, method: str = "REML") -> Path:
    path = tmp_path / "m.toml"
    path.write_text(f'[model]\nformula = "{formula}"\n[data]\nname = "{csv.name}"\n[fit]\nmethod = "{method}"\n'
                    f"[priors]\n{priors}\n")
    return path


@pytest.mark.parametrize(("priors", "words"), [
    ("sigma = -1.0", ["[priors] of m.toml", "sigma", "finite positive number"]),
    ("sigma = inf", ["sigma", "finite positive number", "inf"]),
    ("sigma = nan", ["sigma", "finite positive number", "nan"]),
    ('sigma = "3"', ["sigma", "'3' (str)"]),
    ("beta = 2.5", ["'beta'", "must be a table, not a float", "[mean, sd]"]),
    ('sd = "big"', ["'sd'", "must be a table, not a str"]),
    ("beta = { t = [0.0, -1.0] }", ["beta[t] sd", "finite positive"]),
    ('sd = { "id:t" = 0.0 }', ["sd[id:t]", "finite positive"]),
    ("lkj_eta = -inf", ["lkj_eta", "finite positive"]),
])
@pytest.mark.parametrize("method", ["REML", "ML", "NUTS", "BOTH"])
def test_model_file_priors_are_checked_whatever_the_method(tmp_path, csv, capsys, no_work, priors, words, method):
    path = _model_file(tmp_path, csv, priors, method=method)
    _refused(["fit", str(path)], capsys, *words)


@pytest.mark.parametrize(("priors", "formula", "words"), [
    ("lkj_eta = 2.0", "y ~ t + (1 | id)", ["Unknown prior(s) ['lkj_eta']", "LKJ prior", "beta, sigma, sd"]),
    ("beta = { z = [0.0, 1.0] }", FORMULA, ["No fixed effect 'z'"]),
    ('sd = { "g" = 1.0 }', FORMULA, ["No grouping factor", "sd[g]"]),
])
@pytest.mark.parametrize("command", ["fit", "anova", "residuals", "predict"])
def test_model_file_priors_that_do_not_fit_the_model_are_refused_before_fitting(tmp_path, csv, capsys, no_work,
                                                                                priors, formula, words, command):
    path = _model_file(tmp_path, csv, priors, formula=formula)
    extra = {"residuals": ["--out", str(tmp_path / "res")],
             "predict": ["--newdata", str(csv), "--out", str(tmp_path / "p.csv")]}.get(command, [])
    _refused([command, str(path), *extra], capsys, *words)


def test_json_ready_turns_non_finite_numbers_into_null():
    value = {"a": math.nan, "b": [np.float64(np.inf), -math.inf, np.int64(3), np.bool_(True)],
             "c": np.array([[1.0, np.nan]]), "d": (np.float32(0.5), None), 4: Path("x")}
    assert json_ready(value) == {"a": None, "b": [None, None, 3, True], "c": [[1.0, None]], "d": [0.5, None],
                                 "4": "x"}
    text = json_text(value)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict token {token}"))["a"] is None


def test_fit_json_is_strict_with_a_non_finite_value(tmp_path, csv, monkeypatch):
    """A REML fit whose summary holds NaN and inf (as R-hat of one chain does) is written as strict JSON."""
    real = cli.to_dict
    monkeypatch.setattr(cli, "to_dict", lambda fit: {**real(fit), "odd": [math.nan, math.inf, 1.0]})
    out = tmp_path / "fit.json"
    assert main(["fit", "--data", str(csv), "--formula", FORMULA, "--json", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["odd"] == [None, None, 1.0]


def test_nuts_json_with_one_chain_is_strict(tmp_path, csv):
    """One chain has no R-hat (NaN): the file must still parse as strict JSON, R-hat as null. (Real NUTS: small.)"""
    out = tmp_path / "nuts.json"
    assert main(["fit", "--data", str(csv), "--formula", "y ~ t + (1 | id)", "--method", "nuts", "--chains", "1",
                 "--draws", "30", "--tune", "30", "--quiet", "--json", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    result = json.loads(text, parse_constant=lambda token: pytest.fail(f"non-strict token {token}"))
    assert all(r is None for r in result["posterior"]["r_hat"])
