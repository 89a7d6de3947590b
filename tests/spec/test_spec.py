"""Tests of hierlmm.spec.model_spec and hierlmm.spec.model_files: the lme4-style and nlme-style front ends and TOML
model files describe the same model the same way, down to identical design matrices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from paths import MODELS

from hierlmm import datasets
from hierlmm.design.design import Design, build_design
from hierlmm.errors import FormulaError, SpecError
from hierlmm.formula.expression import Call, Name, Num
from hierlmm.spec.model_files import load_spec
from hierlmm.spec.model_spec import ModelSpec, PdMat, pdDiag, pdSymm


def aids_like(seed: int = 0) -> pd.DataFrame:
    """A small data set with the AIDS columns: unbalanced visits of 12 patients, two drugs."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(12):
        for t in [0.0, 2.0, 6.0, 12.0, 18.0][: rng.integers(2, 6)]:
            rows.append({"patient": str(i + 1), "obstime": t, "drug": "ddI" if i % 2 else "ddC"})
    df = pd.DataFrame(rows)
    df["CD4"] = 10 - 0.2 * df["obstime"] + rng.normal(size=len(df))
    df["drug"] = pd.Categorical(df["drug"], categories=["ddC", "ddI"])
    df["patient"] = pd.Categorical(df["patient"], categories=[str(i + 1) for i in range(12)])
    return df


def eyes_like(seed: int = 0) -> pd.DataFrame:
    """Two eyes of each of 6 patients, several visits per eye (integer ids, as in glaucoma.csv)."""
    rng = np.random.default_rng(seed)
    rows = [
        {"id": i, "eye": e, "years": float(t)} for i in (3, 1, 2, 6, 5, 4) for e in (1, 2) for t in range(3)
    ]
    df = pd.DataFrame(rows)
    df["thres"] = 20 + rng.normal(size=len(df))
    return df


def assert_same_design(a: Design, b: Design) -> None:
    assert a.fixef_names == b.fixef_names
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert a.assign == b.assign
    assert len(a.blocks) == len(b.blocks)
    for x, y in zip(a.blocks, b.blocks, strict=True):
        assert (x.factor, x.grouping, x.structure, x.levels, x.effect_names) == (
            y.factor,
            y.grouping,
            y.structure,
            y.levels,
            y.effect_names,
        )
        np.testing.assert_array_equal(x.Z, y.Z)
        np.testing.assert_array_equal(x.group_index, y.group_index)


# ------------------------------------------------------------------------------------------ front ends agree
AIDS_FIXED = "CD4 ~ obstime + obstime:drug"
EQUIVALENT = {
    "random intercepts and slopes": [
        ModelSpec.from_formula("CD4 ~ obstime + obstime:drug + (obstime | patient)"),
        ModelSpec.from_formula("CD4 ~ 1 + obstime + obstime:drug + (1 + obstime | patient)"),
        ModelSpec.from_nlme(AIDS_FIXED, random="~ obstime | patient"),
        ModelSpec.from_nlme(AIDS_FIXED, random={"patient": pdSymm("~ obstime")}),
        ModelSpec.from_nlme(AIDS_FIXED, random={"patient": "~ obstime"}),
        ModelSpec.from_nlme(AIDS_FIXED, random=pdSymm("~ obstime | patient")),
    ],
    "diagonal D": [
        ModelSpec.from_formula("CD4 ~ obstime + obstime:drug + (obstime || patient)"),
        ModelSpec.from_nlme(AIDS_FIXED, random={"patient": pdDiag("~ obstime")}),
        ModelSpec.from_nlme(AIDS_FIXED, random=pdDiag("~ obstime | patient")),
    ],
    "random intercepts": [
        ModelSpec.from_formula("CD4 ~ obstime + obstime:drug + (1 | patient)"),
        ModelSpec.from_nlme(AIDS_FIXED, random="~ 1 | patient"),
        ModelSpec.from_nlme(AIDS_FIXED, random={"patient": pdSymm("~ 1")}),
    ],
}


@pytest.mark.parametrize("case", list(EQUIVALENT))
def test_front_ends_give_equal_specs(case: str) -> None:
    first, *others = EQUIVALENT[case]
    for other in others:
        assert other == first
        assert hash(other) == hash(first)


@pytest.mark.parametrize("case", list(EQUIVALENT))
def test_front_ends_give_identical_designs(case: str) -> None:
    data = aids_like()
    first, *others = (build_design(spec, data) for spec in EQUIVALENT[case])
    for other in others:
        assert_same_design(first, other)


def test_spec_contents_from_first_principles() -> None:
    spec = EQUIVALENT["random intercepts and slopes"][0]
    assert spec.response == Name("CD4")
    assert spec.fixed.intercept
    assert [t.variables for t in spec.fixed.terms] == [(Name("obstime"),), (Name("obstime"), Name("drug"))]
    (block,) = spec.random
    assert block.grouping == ("patient",) and block.factor == "patient" and block.structure == "pdSymm"
    assert block.effects.intercept and [t.name for t in block.effects.terms] == ["obstime"]
    assert spec.formula == "CD4 ~ obstime + obstime:drug + (obstime | patient)"
    assert spec.fixed_formula == "CD4 ~ obstime + obstime:drug"
    assert EQUIVALENT["diagonal D"][0].random[0].structure == "pdDiag"
    assert EQUIVALENT["diagonal D"][0].formula == "CD4 ~ obstime + obstime:drug + (obstime || patient)"
    # the canonical formula reads back to the same spec
    for specs in EQUIVALENT.values():
        assert ModelSpec.from_formula(specs[0].formula) == specs[0]


def test_different_models_differ() -> None:
    a = ModelSpec.from_formula("CD4 ~ obstime + (obstime | patient)")
    assert a != ModelSpec.from_formula("CD4 ~ obstime + (obstime || patient)")
    assert a != ModelSpec.from_formula("CD4 ~ obstime + (1 | patient)")
    assert a != ModelSpec.from_formula("CD4 ~ obstime + (0 + obstime | patient)")
    assert a != ModelSpec.from_formula("CD4 ~ obstime + (obstime | patient)", method="ML")
    assert a.with_method("ml") == ModelSpec.from_formula("CD4 ~ obstime + (obstime | patient)", method="ML")
    assert a.with_method("ml").method == "ML"


NESTED = [
    ModelSpec.from_formula("thres ~ years + (1 | id/eye)"),
    ModelSpec.from_formula("thres ~ years + (1 | id) + (1 | id:eye)"),
    ModelSpec.from_nlme("thres ~ years", random="~ 1 | id/eye"),
    ModelSpec.from_nlme("thres ~ years", random={"id": pdSymm("~ 1"), "eye": pdSymm("~ 1")}),
]


def test_nested_front_ends_give_equal_specs() -> None:
    first, *others = NESTED
    assert [b.grouping for b in first.random] == [("id",), ("id", "eye")]
    assert [b.factor for b in first.random] == ["id", "id:eye"]
    for other in others:
        assert other == first


def _check_nested_design(design: Design, data: pd.DataFrame) -> None:
    outer, inner = design.blocks
    ids = data["id"].astype(str).to_numpy()
    eyes = data["eye"].astype(str).to_numpy()
    assert outer.n_levels == data["id"].nunique()
    assert inner.n_levels == data.groupby(["id", "eye"], observed=True).ngroups
    assert np.array_equal(np.asarray(outer.levels)[outer.group_index], ids)
    assert np.array_equal(
        np.asarray(inner.levels)[inner.group_index], np.char.add(np.char.add(ids, ":"), eyes)
    )
    for block in design.blocks:
        assert block.effect_names == ("(Intercept)",)
        np.testing.assert_array_equal(block.Z, np.ones((len(data), 1)))
    # the inner level determines the outer one
    pairs = set(zip(inner.group_index.tolist(), outer.group_index.tolist(), strict=True))
    assert len(pairs) == inner.n_levels


def test_nested_designs_on_synthetic_data() -> None:
    data = eyes_like()
    first, *others = (build_design(spec, data) for spec in NESTED)
    _check_nested_design(first, data)
    for other in others:
        assert_same_design(first, other)


def test_nested_designs_on_glaucoma(data_folder: Path) -> None:
    glaucoma = datasets.load("glaucoma")
    first = build_design(NESTED[0], glaucoma)
    _check_nested_design(first, glaucoma)
    for spec in (NESTED[2], NESTED[3]):
        assert_same_design(first, build_design(spec, glaucoma))


def test_crossed_random_effects() -> None:
    spec = ModelSpec.from_formula("y ~ x + (1 | a) + (x | b)")
    assert [(b.grouping, b.structure) for b in spec.random] == [(("a",), "pdSymm"), (("b",), "pdSymm")]
    rng = np.random.default_rng(3)
    data = pd.DataFrame(
        {"a": np.repeat(list("pqr"), 8), "b": np.tile(list("uvwz"), 6), "x": rng.normal(size=24)}
    )
    data["y"] = rng.normal(size=24)
    design = build_design(spec, data)
    assert [blk.n_levels for blk in design.blocks] == [3, 4]
    np.testing.assert_array_equal(design.blocks[1].Z, np.column_stack([np.ones(24), data["x"]]))


# ------------------------------------------------------------------------------------------ spec errors
@pytest.mark.parametrize(
    ("fixed", "random"),
    [("CD4 ~ obstime + (1 | patient)", "~ 1 | patient"), (AIDS_FIXED, 3), (AIDS_FIXED, ["~ 1 | patient"])],
)
def test_nlme_spec_errors(fixed: str, random: object) -> None:
    with pytest.raises(SpecError, match="Fix:"):
        ModelSpec.from_nlme(fixed, random)  # type: ignore[arg-type]


def test_unknown_structure_and_method() -> None:
    with pytest.raises(SpecError, match="pdFoo"):
        ModelSpec.from_nlme(AIDS_FIXED, random={"patient": PdMat("pdFoo", "~ 1")})  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="REML"):
        ModelSpec.from_formula("CD4 ~ obstime + (1 | patient)", method="Bayes")


@pytest.mark.parametrize(
    "formula",
    ["CD4 ~ obstime + (1 | patient) + (obstime | patient)", "CD4 ~ obstime + (0 | patient)", "~ obstime",
     "CD4 ~ obstime + (1 | id/eye) + (1 | id)", "CD4 ~ obstime + (1 | patient) - (1 | patient)"],
)  # fmt: skip
def test_formula_spec_errors(formula: str) -> None:
    with pytest.raises(FormulaError, match="Fix:"):
        ModelSpec.from_formula(formula)


def test_nlme_random_needs_a_bar() -> None:
    with pytest.raises(FormulaError):
        ModelSpec.from_nlme(AIDS_FIXED, random="~ obstime")


# ------------------------------------------------------------------------------------------ TOML files
PYTHON_SPECS = {
    "aids_corexp_ri": ModelSpec.from_nlme("CD4 ~ obstime + I(obstime^2) + (obstime + I(obstime^2)):drug",
                                          random="~ 1 | patient"),
    "aids_pddiag": ModelSpec.from_nlme(AIDS_FIXED, random={"patient": pdDiag("~ obstime")}),
    "aids_ri": ModelSpec.from_nlme(AIDS_FIXED, random="~ 1 | patient"),
    "aids_ri_rs": ModelSpec.from_nlme(AIDS_FIXED, random="~ obstime | patient"),
    "pbc2_effect_plot": ModelSpec.from_nlme(
        "log(serBilir) ~ ns(year, 2) * sex + (age + basePro) * sex", random="~ ns(year, 2) | id"
    ),
    "pbc2_tvc_current": ModelSpec.from_nlme(
        "log(serBilir) ~ ns(year, 2) + sex + age + prothrombin", random={"id": pdDiag("~ ns(year, 2)")}
    ),
}


def test_every_model_file_is_known() -> None:
    files = sorted(p.stem for p in MODELS.glob("*.toml"))
    assert files, f"no model files in {MODELS}"
    assert files == sorted(PYTHON_SPECS)


@pytest.mark.parametrize("name", sorted(PYTHON_SPECS))
def test_model_file_loads_to_the_python_spec(name: str) -> None:
    model = load_spec(MODELS / f"{name}.toml")
    assert model.name == name
    assert model.spec == PYTHON_SPECS[name]
    assert model.title
    assert model.reference == f"{name}.json" or model.reference.startswith(name.split("_")[0])
    assert model.data in ("aids", "pbc2")


def test_pbc2_model_file_derives_baseline_and_builds() -> None:
    model = load_spec(MODELS / "pbc2_effect_plot.toml")
    (derive,) = model.derive
    assert (derive.name, derive.kind, derive.column, derive.by) == (
        "basePro",
        "baseline",
        "prothrombin",
        "id",
    )
    data = model.load_data()  # pbc2 is embedded: no HIERLMM_DATA needed
    expected = datasets.add_baseline(datasets.load("pbc2"), "prothrombin", "id", name="basePro")
    pd.testing.assert_frame_equal(data, expected)
    design = build_design(model.spec, data)
    assert design.spec.random[0].effects.terms[0].variables == (Call("ns", (Name("year"), Num(2.0))),)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(text)
    return path


GOOD_MODEL = '[model]\nformula = "CD4 ~ obstime + (1 | patient)"\n'
GOOD_DATA = '[data]\nname = "aids"\n'


def test_minimal_toml_file(tmp_path: Path) -> None:
    model = load_spec(_write(tmp_path, GOOD_MODEL + GOOD_DATA))
    assert model.name == "model" and model.reference is None and model.derive == ()
    assert model.spec == ModelSpec.from_formula("CD4 ~ obstime + (1 | patient)")
    model = load_spec(_write(tmp_path, GOOD_MODEL + GOOD_DATA + '[fit]\nmethod = "ML"\n'))
    assert model.spec.method == "ML"


def test_toml_with_csv_data(tmp_path: Path) -> None:
    aids_like().to_csv(tmp_path / "small.csv", index=False)
    model = load_spec(
        _write(
            tmp_path, '[model]\nformula = "CD4 ~ obstime + (obstime | patient)"\n[data]\nname = "small.csv"\n'
        )
    )
    design = build_design(model.spec, model.load_data())
    assert design.n_obs == len(aids_like())
    assert design.blocks[0].n_levels == 12


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD_MODEL + GOOD_DATA + "[extra]\nx = 1\n", "extra"),
        (GOOD_MODEL + 'formla = "y ~ x"\n' + GOOD_DATA, "formla"),
        (GOOD_MODEL + GOOD_DATA + 'path = "x"\n', "path"),
        (GOOD_MODEL + GOOD_DATA + '[fit]\nmethod = "REML"\nmaxiter = 3\n', "maxiter"),
        ('[model]\nformula = "CD4 ~ obstime + (1 | patient)"\nfixed = "CD4 ~ obstime"\n' + GOOD_DATA,
         "exactly one"),
        ('[model]\nrandom = "~ 1 | patient"\n' + GOOD_DATA, "exactly one"),
        (GOOD_MODEL, "name"),
        (GOOD_MODEL + "[data]\n", "name"),
        (GOOD_MODEL + GOOD_DATA + '[fit]\nmethod = "Bayes"\n', "REML"),
        ('[model]\nfixed = "CD4 ~ obstime"\nrandom = 3\n' + GOOD_DATA, "random"),
        ('[model]\nfixed = "CD4 ~ obstime"\n[model.random.patient]\nstructure = "pdDiag"\n' + GOOD_DATA,
         "formula"),
        ('[model]\nfixed = "CD4 ~ obstime"\n[model.random.patient]\nformula = "~ 1"\nstructure = "pdFoo"\n'
         + GOOD_DATA, "pdFoo"),
        (GOOD_MODEL + GOOD_DATA + '[[data.derive]]\nname = "b"\nbaseline = "CD4"\n', "derive"),
        ("[model\nformula = 1", "TOML"),
    ],
)  # fmt: skip
def test_bad_toml_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(SpecError, match=match) as info:
        load_spec(_write(tmp_path, text))
    assert "Fix:" in str(info.value)


def test_missing_toml_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.toml")


def test_model_file_priors_and_bayesian_fit_options(tmp_path):
    import hierlmm

    path = tmp_path / "m.toml"
    path.write_text(
        '[model]\nformula = "y ~ t + (t | id)"\n[data]\nname = "x.csv"\n'
        '[fit]\nmethod = "nuts"\nsampler = "joint"\ncentered = ["id:(Intercept)"]\n'
        '[priors]\nsigma = 3.0\nlkj_eta = 2.0\nbeta = { t = [0.0, 1.0] }\nsd = { "id:t" = 0.5 }\n'
    )
    model_file = hierlmm.load_spec(path)
    assert model_file.run == "NUTS" and model_file.sampler == "joint"
    assert model_file.centered == ("id:(Intercept)",)
    assert model_file.priors == {"sigma": 3.0, "lkj_eta": 2.0, "beta": {"t": [0.0, 1.0]}, "sd": {"id:t": 0.5}}
    assert model_file.spec.method == "REML"  # the ML/REML default stays REML
    path.write_text('[model]\nformula = "y ~ t + (t | id)"\n[data]\nname = "x.csv"\n[fit]\nmethod = "gibbs"\n')
    with pytest.raises(hierlmm.SpecError, match="REML, ML, NUTS or BOTH"):
        hierlmm.load_spec(path)
    path.write_text('[model]\nformula = "y ~ t + (t | id)"\n[data]\nname = "x.csv"\n[fit]\ncentered = 3\n')
    with pytest.raises(hierlmm.SpecError, match="centered"):
        hierlmm.load_spec(path)
    path.write_text('[model]\nformula = "y ~ t + (t | id)"\n[data]\nname = "x.csv"\n[priors]\ntau = 1\n')
    with pytest.raises(hierlmm.SpecError, match="Unknown key"):
        hierlmm.load_spec(path)
