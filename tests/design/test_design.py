"""Tests of hierlmm.design.design and hierlmm.formula.model_matrix: X, Z and their column names as R builds them.

Expected values come from R (the reference fits' coefficient names, and ``model.matrix`` run live in the
``needs_r`` tests) or from first principles (indicator columns, row counts, level bookkeeping).
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hierlmm
from hierlmm import datasets
from hierlmm.design.design import build_design, new_model_matrices, used_columns
from hierlmm.errors import DataError, MissingDataWarning
from hierlmm.formula.evaluation import Evaluator
from hierlmm.formula.model_matrix import model_matrix
from hierlmm.spec.model_spec import ModelSpec, model_spec

HAS_R = shutil.which("Rscript") is not None
needs_r = pytest.mark.skipif(not HAS_R, reason="R (Rscript) is not installed on this machine")



def pbc2_with_basepro() -> pd.DataFrame:
    return datasets.add_baseline(datasets.load("pbc2"), "prothrombin", "id", name="basePro")


# -------------------------------------------------------------------------------------- names as nlme prints
# fixef names (and D's row names) of the reference fits in ../shared/reference/*.json, made by R 4.2.2 / nlme.
REFERENCE_NAMES = {
    "aids_ri_rs_reml.json": (
        "CD4 ~ obstime + obstime:drug + (obstime | patient)",
        ["(Intercept)", "obstime", "obstime:drugddI"], ["(Intercept)", "obstime"],
    ),
    "aids_pddiag_reml.json": (
        "CD4 ~ obstime + obstime:drug + (obstime || patient)",
        ["(Intercept)", "obstime", "obstime:drugddI"], ["(Intercept)", "obstime"],
    ),
    "aids_ri_reml.json": (
        "CD4 ~ obstime + obstime:drug + (1 | patient)", ["(Intercept)", "obstime", "obstime:drugddI"],
        ["(Intercept)"],
    ),
    "aids_corexp_ri.json": (
        "CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug + (1 | patient)",
        ["(Intercept)", "obstime", "I(obstime^2)", "obstime:drugddI", "I(obstime^2):drugddI"],
        ["(Intercept)"],
    ),
    "pbc2_effect_plot.json": (
        "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex + (ns(year, 2) | id)",
        ["(Intercept)", "ns(year, 2)1", "ns(year, 2)2", "sexfemale", "age", "basePro",
         "ns(year, 2)1:sexfemale", "ns(year, 2)2:sexfemale", "sexfemale:age", "sexfemale:basePro"],
        ["(Intercept)", "ns(year, 2)1", "ns(year, 2)2"],
    ),
    "pbc2_tvc_current.json": (
        "log(serBilir) ~ ns(year, 2) + sex + age + prothrombin + (ns(year, 2) || id)",
        ["(Intercept)", "ns(year, 2)1", "ns(year, 2)2", "sexfemale", "age", "prothrombin"],
        ["(Intercept)", "ns(year, 2)1", "ns(year, 2)2"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("file", sorted(REFERENCE_NAMES))
def test_reference_names_are_r_output(file: str, reference) -> None:
    """The names above are copied from R's output files (checked here when those files are around)."""
    ref = reference(file.removesuffix(".json"))
    _, fixef, d_names = REFERENCE_NAMES[file]
    assert ref["fixef"]["names"] == fixef
    if "D" in ref:  # pbc2_tvc_current.json has no D
        names = ref["D"]["names"]
        assert ([names] if isinstance(names, str) else names) == d_names


def _check_names(file: str, data: pd.DataFrame) -> None:
    formula, fixef, d_names = REFERENCE_NAMES[file]
    design = build_design(ModelSpec.from_formula(formula), data)
    assert list(design.fixef_names) == fixef
    assert list(design.blocks[0].effect_names) == d_names
    assert design.X.shape == (len(data), len(fixef))


@pytest.mark.parametrize("file", [f for f in sorted(REFERENCE_NAMES) if f.startswith("pbc2")])
def test_pbc2_names_match_nlme(file: str) -> None:
    _check_names(file, pbc2_with_basepro())


@pytest.mark.parametrize("file", [f for f in sorted(REFERENCE_NAMES) if f.startswith("aids")])
def test_aids_names_match_nlme(file: str, data_folder: Path) -> None:
    _check_names(file, datasets.load("aids"))


def test_aids_design_from_first_principles(data_folder: Path) -> None:
    aids = datasets.load("aids")
    design = build_design(ModelSpec.from_formula("CD4 ~ obstime + obstime:drug + (obstime | patient)"), aids)
    t = aids["obstime"].to_numpy(float)
    ddi = (aids["drug"] == "ddI").to_numpy(float)
    np.testing.assert_array_equal(design.X, np.column_stack([np.ones(len(aids)), t, t * ddi]))
    np.testing.assert_array_equal(design.y, aids["CD4"].to_numpy(float))
    (block,) = design.blocks
    assert block.n_levels == 467 and design.n_obs == 1405
    np.testing.assert_array_equal(block.Z, np.column_stack([np.ones(len(aids)), t]))
    np.testing.assert_array_equal(np.asarray(block.levels)[block.group_index], aids["patient"].astype(str))
    assert design.assign == (0, 1, 2)


# ------------------------------------------------------------------------------------------ model.matrix in R
MM_FORMULAS = [
    "y ~ f + x", "y ~ f * x", "y ~ f:x", "y ~ x:f", "y ~ x + x:f", "y ~ f:g", "y ~ f * g", "y ~ f + f:g",
    "y ~ g + f:g:x", "y ~ x:g + f:g",
    "y ~ 0 + f", "y ~ 0 + f + g", "y ~ 0 + x + f", "y ~ -1 + f:g", "y ~ 0 + f:x", "y ~ f/x", "y ~ f/g",
    "y ~ (f + g + x)^2", "y ~ f:g:x", "y ~ x + I(x^2)", "y ~ poly(x, 2)", "y ~ poly(x, 3) * f",
    "y ~ poly(x, 2, raw = TRUE)", "y ~ ns(x, 3)", "y ~ ns(x, df = 3):f", "y ~ ns(x, knots = c(-0.5, 0.5))",
    "y ~ bs(x, 3)", "y ~ bs(x, df = 5, degree = 2)", "y ~ I(x > 0)", "y ~ I(x > 0) * f",
    "y ~ log(z) + f:x - 1",
    "y ~ exp(x/2) + sqrt(z)", "y ~ scale(x)", "y ~ h", "y ~ h:x", "y ~ factor(k)", "y ~ factor(k) * x",
    "y ~ relevel(f, \"b\")", "y ~ relevel(f, ref = \"c\") + g", "y ~ as.numeric(f)", "y ~ I(x * z) + I(z^-1)",
    "y ~ pmax(x, 0) + abs(x)", "y ~ log(z, base = 2) + round(x, digits = 1)", "y ~ f:g - 1",
]  # fmt: skip


RANK_DEFICIENT = {"y ~ f:g"}


def mm_data(seed: int = 11, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "z": rng.uniform(0.5, 3.0, n),
        "f": rng.choice(["c", "a", "b"], n),
        "g": rng.choice(["lo", "mid", "hi"], n),
        "h": rng.choice([True, False], n),
        "k": rng.choice([2, 10, 7], n),
    })  # fmt: skip


def _r_model_matrices(csv: Path, formulas: list[str], folder: Path) -> list[pd.DataFrame]:
    code = f"""
    suppressPackageStartupMessages(library(splines))
    d <- read.csv("{csv}", stringsAsFactors = TRUE)
    fs <- readLines(file("stdin"))
    for (i in seq_along(fs)) {{
      mm <- model.matrix(as.formula(fs[i]), d)
      attr(mm, "assign") <- NULL; attr(mm, "contrasts") <- NULL
      out <- format(as.data.frame(mm), digits = 17, scientific = TRUE)
      names(out) <- colnames(mm)
      write.table(out, file.path("{folder}", paste0(i, ".tsv")), sep = "\\t", quote = TRUE,
                  qmethod = "double",
                  row.names = FALSE)
    }}
    """
    subprocess.run(["Rscript", "--vanilla", "-e", code], input="\n".join(formulas) + "\n", text=True,
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    return [pd.read_csv(folder / f"{i + 1}.tsv", sep="\t", dtype=float) for i in range(len(formulas))]


@pytest.mark.needs_r
@needs_r
def test_model_matrix_agrees_with_r(tmp_path: Path) -> None:
    data = mm_data()
    csv = tmp_path / "d.csv"
    data.assign(h=data["h"].map({True: "TRUE", False: "FALSE"})).to_csv(csv, index=False)  # R's logicals
    ours_data = datasets.read_csv(csv)  # the same file, read as R reads it
    assert ours_data["h"].dtype == bool
    r_mats = _r_model_matrices(csv, MM_FORMULAS, tmp_path)
    problems = []
    for formula, r_mm in zip(MM_FORMULAS, r_mats, strict=True):
        spec = ModelSpec.from_formula(formula)
        if formula in RANK_DEFICIENT:  # R builds X anyway (lm then reports NA); hierlmm refuses, by name
            with pytest.raises(DataError, match="rank deficient"):
                build_design(spec, ours_data)
            ev = Evaluator(ours_data)
            X, names, _ = model_matrix(
                spec.fixed, {v: ev.variable(v) for v in spec.fixed.variables}, len(data)
            )
        else:
            design = build_design(spec, ours_data)
            X, names = design.X, design.fixef_names
        if list(names) != list(r_mm.columns):
            problems.append((formula, list(names), list(r_mm.columns)))
        elif not np.allclose(X, r_mm.to_numpy(), rtol=1e-10, atol=1e-10):
            problems.append((formula, float(np.max(np.abs(X - r_mm.to_numpy())))))
    assert not problems, problems


@pytest.mark.needs_r
@needs_r
def test_pbc2_model_matrix_agrees_with_r(data_folder: Path, tmp_path: Path) -> None:
    """The chapter's effect-plot model on the real data: ns() knots, sex coding and interactions as in R."""
    formula = "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex"
    code = f"""
    suppressPackageStartupMessages(library(splines))
    d <- read.csv("{data_folder / "pbc2.csv"}")
    d$sex <- factor(d$sex, levels = c("male", "female"))
    d$basePro <- ave(d$prothrombin, d$id, FUN = function(v) v[!is.na(v)][1])
    mm <- model.matrix({formula}, d)
    write.table(format(as.data.frame(mm), digits = 17), "{tmp_path / "pbc2.tsv"}", sep = "\\t",
                row.names = FALSE, col.names = colnames(mm))
    """
    subprocess.run(
        ["Rscript", "--vanilla", "-e", code], capture_output=True, text=True, timeout=120, check=True
    )
    r_mm = pd.read_csv(tmp_path / "pbc2.tsv", sep="\t", dtype=float)
    design = build_design(ModelSpec.from_formula(formula + " + (1 | id)"), pbc2_with_basepro())
    assert list(design.fixef_names) == list(r_mm.columns)
    np.testing.assert_allclose(design.X, r_mm.to_numpy(), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------ coding of factors
def test_reference_level_is_first_category() -> None:
    data = mm_data()
    data["f"] = pd.Categorical(data["f"], categories=["c", "a", "b"])  # not sorted: "c" is the reference
    design = build_design(ModelSpec.from_formula("y ~ f"), data)
    assert design.fixef_names == ("(Intercept)", "fa", "fb")
    np.testing.assert_array_equal(design.X[:, 1], (data["f"] == "a").to_numpy(float))
    np.testing.assert_array_equal(design.X[:, 2], (data["f"] == "b").to_numpy(float))
    assert design.levels["f"] == ("c", "a", "b")


def test_strings_are_factors_with_sorted_levels() -> None:
    data = mm_data()  # f: object column of "c", "a", "b"
    design = build_design(ModelSpec.from_formula("y ~ f + g"), data)
    assert design.fixef_names == ("(Intercept)", "fb", "fc", "glo", "gmid")  # references "a" and "hi"
    assert design.levels == {"f": ("a", "b", "c"), "g": ("hi", "lo", "mid")}


def test_no_intercept_codes_first_factor_by_indicators() -> None:
    data = mm_data()
    design = build_design(ModelSpec.from_formula("y ~ 0 + f + g"), data)
    assert design.fixef_names == ("fa", "fb", "fc", "glo", "gmid")
    np.testing.assert_array_equal(design.X[:, :3].sum(axis=1), np.ones(len(data)))


def test_interaction_without_main_effect_uses_all_levels() -> None:
    data = mm_data()
    design = build_design(ModelSpec.from_formula("y ~ x + x:f"), data)
    assert design.fixef_names == ("(Intercept)", "x", "x:fb", "x:fc")
    design = build_design(ModelSpec.from_formula("y ~ f:x"), data)
    assert design.fixef_names == ("(Intercept)", "fa:x", "fb:x", "fc:x")
    x = data["x"].to_numpy()
    for j, level in enumerate("abc", start=1):
        np.testing.assert_array_equal(design.X[:, j], x * (data["f"] == level))


def test_logical_constants_in_arguments() -> None:
    data = mm_data()
    design = build_design(ModelSpec.from_formula("y ~ poly(x, 2, raw = TRUE)"), data)
    assert design.fixef_names == ("(Intercept)", "poly(x, 2, raw = TRUE)1", "poly(x, 2, raw = TRUE)2")
    x = data["x"].to_numpy()
    np.testing.assert_allclose(design.X[:, 1:], np.column_stack([x, x**2]), rtol=1e-14)


def test_unused_levels_are_dropped() -> None:
    data = mm_data()
    data["f"] = pd.Categorical(data["f"], categories=["a", "b", "c", "zzz"])
    design = build_design(ModelSpec.from_formula("y ~ f"), data)
    assert design.fixef_names == ("(Intercept)", "fb", "fc")


# ------------------------------------------------------------------------------------------ missing values
def test_missing_rows_are_dropped_and_reported() -> None:
    data = mm_data()
    data.loc[[1, 5], "x"] = np.nan
    data.loc[[5, 7, 9], "y"] = np.nan
    data.loc[[2], "f"] = None
    data.loc[[3, 4], "z"] = np.nan  # not used by the model: keeps its rows
    with pytest.warns(MissingDataWarning, match="5 rows"):
        design = build_design(ModelSpec.from_formula("y ~ x + f + (1 | g)"), data)
    expected_rows = np.setdiff1d(np.arange(len(data)), [1, 2, 5, 7, 9])
    np.testing.assert_array_equal(design.rows, expected_rows)
    assert design.missing.n_dropped == 5
    assert dict(design.missing.by_column) == {"y": 3, "x": 2, "f": 1}
    assert design.n_obs == len(data) - 5 == design.X.shape[0] == design.blocks[0].Z.shape[0]
    np.testing.assert_array_equal(design.y, data["y"].to_numpy()[expected_rows])
    np.testing.assert_array_equal(design.X[:, 1], data["x"].to_numpy()[expected_rows])


def test_no_warning_without_missing_values() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        design = build_design(ModelSpec.from_formula("y ~ x + (1 | g)"), mm_data())
    assert design.missing.n_dropped == 0 and not design.missing.by_column
    assert str(design.missing) == "no rows dropped"


def test_missing_in_transformed_column_and_quiet_mode() -> None:
    data = mm_data()
    data.loc[[0, 3], "x"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        design = build_design(ModelSpec.from_formula("y ~ ns(x, 2) + (1 | g)"), data, warn=False)
    assert design.missing.n_dropped == 2 and design.missing.by_column == {"x": 2}
    assert np.isfinite(design.X).all()


# ------------------------------------------------------------------------------------------ stateful ns()
def test_new_model_matrices_reuse_training_knots() -> None:
    rng = np.random.default_rng(5)
    train = pd.DataFrame({"x": rng.uniform(0, 10, 60), "g": np.repeat(list("abcdef"), 10),
                          "f": rng.choice(["p", "q"], 60)})  # fmt: skip
    train["y"] = rng.normal(size=60)
    train["z"] = rng.normal(size=60)
    spec = ModelSpec.from_formula("y ~ ns(x, 3) * f + poly(z, 2) + (ns(x, 2) | g)")
    design = build_design(spec, train)
    # the training rows, evaluated again (in another order), give the training X and Z
    order = rng.permutation(60)
    X_new, (Z_new,) = new_model_matrices(design, train.iloc[order])
    np.testing.assert_allclose(X_new, design.X[order], rtol=0, atol=1e-12)
    np.testing.assert_allclose(Z_new, design.blocks[0].Z[order], rtol=0, atol=1e-12)
    # new data on a narrower range: the training basis, not one refitted on the new data (other knots)
    new = pd.DataFrame({"x": rng.uniform(2, 6, 40), "f": rng.choice(["p", "q"], 40),
                        "g": np.repeat(list("abcd"), 10),
                        "z": rng.normal(size=40), "y": 0.0})  # fmt: skip
    X_pred, _ = new_model_matrices(design, new)
    refit = build_design(spec, new).X
    assert X_pred.shape == refit.shape == (40, design.p)
    ns_cols = [
        j for j, name in enumerate(design.fixef_names) if name.startswith("ns(x, 3)") and ":" not in name
    ]
    assert len(ns_cols) == 3
    assert not np.allclose(X_pred[:, ns_cols], refit[:, ns_cols], atol=1e-3)
    # the basis is a function of x alone: a training x gives its training row, whatever the other rows are
    at = new.assign(x=np.r_[train["x"].iloc[:4], new["x"].iloc[4:]])
    np.testing.assert_allclose(
        new_model_matrices(design, at)[0][:4, ns_cols], design.X[:4, ns_cols], atol=1e-12
    )


def test_new_data_with_unknown_level_is_refused() -> None:
    data = mm_data()
    design = build_design(ModelSpec.from_formula("y ~ f + (1 | g)"), data)
    with pytest.raises(DataError, match="not fitted on"):
        new_model_matrices(design, data.assign(f=["zzz"] * len(data)))
    X, _ = new_model_matrices(design, data[data["f"] == "b"])  # a subset of levels keeps the coding
    assert X.shape[1] == 3
    np.testing.assert_array_equal(X[:, 1], np.ones(len(X)))


def test_used_columns() -> None:
    spec = ModelSpec.from_formula("log(y) ~ ns(x, df = 2) * f + (z | g) + (1 | g:h)")
    assert used_columns(spec) == ["y", "x", "f", "z", "g", "h"]


# ------------------------------------------------------------------------------------------ property test
@st.composite
def grouped_frames(draw: st.DrawFn) -> pd.DataFrame:
    sizes = draw(st.lists(st.integers(1, 6), min_size=2, max_size=8).filter(lambda v: sum(v) >= 4))
    n = sum(sizes)
    x = draw(st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=n, max_size=n, unique=True))
    k = draw(st.integers(2, min(3, n // 2)))  # every level of f on at least two rows
    fac = draw(st.permutations(["uvw"[i % k] for i in range(n)]))
    y = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n))
    group = [f"s{i:02d}" for i, size in enumerate(sizes) for _ in range(size)]
    return pd.DataFrame({"y": y, "x": x, "f": fac, "grp": group})


@settings(database=None, deadline=None, max_examples=200)
@given(frame=grouped_frames(), which=st.sampled_from([
    ("y ~ x + (1 | grp)", 2, 1), ("y ~ x * f + (x | grp)", None, 2), ("y ~ f + (x || grp)", None, 2),
    ("y ~ 0 + f + x + (1 | grp)", None, 1), ("y ~ x + x:f + (0 + x | grp)", None, 1),
]))  # fmt: skip
def test_design_invariants(frame: pd.DataFrame, which: tuple[str, int | None, int]) -> None:
    formula, p, q = which
    k = frame["f"].nunique()
    expected_p = {
        "y ~ x * f + (x | grp)": 2 * k, "y ~ f + (x || grp)": k, "y ~ 0 + f + x + (1 | grp)": k + 1,
        "y ~ x + x:f + (0 + x | grp)": 2 + (k - 1),
    }.get(formula, p)  # fmt: skip
    try:
        design = build_design(ModelSpec.from_formula(formula), frame)
    except DataError as exc:  # collinear draws (e.g. x constant within a level) are refused by name
        assert "rank deficient" in str(exc)
        return
    n = len(frame)
    assert design.X.shape == (n, expected_p)
    assert design.y.shape == (n,)
    np.testing.assert_array_equal(design.y, frame["y"].to_numpy())
    (block,) = design.blocks
    assert block.Z.shape == (n, q) and block.q == q
    assert block.group_index.shape == (n,)
    assert block.group_index.min() >= 0 and block.group_index.max() < block.n_levels
    assert block.n_levels == frame["grp"].nunique()
    assert list(block.levels) == sorted(frame["grp"].unique())
    np.testing.assert_array_equal(np.asarray(block.levels)[block.group_index], frame["grp"].to_numpy())
    if "x" in block.effect_names:
        np.testing.assert_array_equal(block.Z[:, block.effect_names.index("x")], frame["x"].to_numpy())


def test_a_constant_response_is_named_as_the_cause():
    data = pd.DataFrame({"g": np.repeat(list("abcdef"), 4), "t": np.tile(np.arange(4.0), 6), "y": 3.0})
    design = build_design(model_spec("y ~ t + (1 | g)"), data)  # a design may carry one (simulation templates)
    with pytest.raises(DataError, match="constant"):
        hierlmm.fit("y ~ t + (1 | g)", data)
    with pytest.raises(DataError, match="constant"):
        hierlmm.fit_design(design, method="ML")
    with pytest.raises(DataError, match="constant"):
        hierlmm.fit_bayes(design, draws=10, tune=10, chains=1)
