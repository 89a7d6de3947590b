"""Execute every notebook in notebooks/ from top to bottom; any cell error fails the test.

The notebooks read the chapter's data through ``HIERLMM_DATA`` (and the R reference fits next to it) when it is set,
and fall back to the embedded ``pbc2`` otherwise, so they run in both cases. The kernel is the ``python3`` kernel
spec that ipykernel installs into this environment (``<prefix>/share/jupyter/kernels/python3``); its command is
``python -m ipykernel_launcher``, which jupyter_client runs with this interpreter (``sys.executable``), so the
notebooks see the same installed hierlmm as the tests. The executed notebooks are not written back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from paths import NOTEBOOKS

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_exist() -> None:
    assert PATHS, f"no notebooks found in {NOTEBOOKS}"


def test_python3_kernel_is_registered() -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    assert "python3" in specs, (
        f"no 'python3' Jupyter kernel spec is visible (found {sorted(specs)}); ipykernel installs one into this "
        "environment: reinstall the dev extras with `make test` (pip install -e '.[dev]')."
    )


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("HIERLMM_DATA"):  # the kernel runs in notebooks/: a relative folder must not change meaning
        monkeypatch.setenv("HIERLMM_DATA", str(Path(os.environ["HIERLMM_DATA"]).resolve()))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell and the traceback, on the first failing cell
    errors = [
        output
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
