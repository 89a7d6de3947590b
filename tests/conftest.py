"""Shared fixtures: the chapter's data (through HIERLMM_DATA) and the R reference fits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import hierlmm


def data_dir() -> Path | None:
    value = os.environ.get("HIERLMM_DATA")
    return Path(value) if value else None


def reference_dir() -> Path | None:
    explicit = os.environ.get("HIERLMM_REFERENCE")
    if explicit:
        return Path(explicit)
    folder = data_dir()
    return folder.parent / "reference" if folder is not None else None


@pytest.fixture
def data_folder() -> Path:
    """The folder of the chapter's CSV files; skip when HIERLMM_DATA is unset (a missing file then fails)."""
    folder = data_dir()
    if folder is None:
        pytest.skip("HIERLMM_DATA not set: the chapter's CSV files are not available")
    return folder


@pytest.fixture(scope="session")
def chapter_data():
    """Load one of the chapter's CSV data sets; skip (with the reason) when HIERLMM_DATA is not set.

    When HIERLMM_DATA is set, a missing file is a failure, not a skip.
    """
    if data_dir() is None:
        pytest.skip("HIERLMM_DATA not set: the chapter's CSV files are not available")

    def load(name: str):
        return hierlmm.datasets.load(name)

    return load


@pytest.fixture(scope="session")
def reference():
    """Read a reference JSON from ../shared/reference (next to HIERLMM_DATA)."""
    folder = reference_dir()
    if folder is None:
        pytest.skip("HIERLMM_DATA not set: the reference fits are found next to the chapter's data")

    def read(name: str) -> dict:
        path = folder / f"{name}.json"
        assert path.is_file(), f"reference file {path} is missing"
        return json.loads(path.read_text())

    return read


@pytest.fixture(scope="session")
def pbc2_with_basepro():
    """The embedded pbc2 with basePro = each patient's first prothrombin (the effect-plot model)."""
    pbc2 = hierlmm.datasets.load("pbc2")
    return hierlmm.datasets.add_baseline(pbc2, "prothrombin", "id", name="basePro")
