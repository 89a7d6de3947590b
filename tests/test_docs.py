"""The documentation builds (mkdocs --strict: broken links and API references fail), documents every module in the
API reference, and names every package on the Architecture page."""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import re
import subprocess
import sys

import pytest
from paths import ROOT

import hierlmm

DOCS = ROOT / "docs"


def _modules() -> set[str]:
    return {m.name for m in pkgutil.walk_packages(hierlmm.__path__, "hierlmm.") if not m.ispkg}


def test_api_reference_documents_every_module() -> None:
    listed = set(re.findall(r"^::: (hierlmm[\w.]*)", (DOCS / "api.md").read_text(), flags=re.M))
    missing = sorted(_modules() - listed)
    assert not missing, f"docs/api.md has no ::: entry for {missing}"
    unknown = sorted(m for m in listed if importlib.util.find_spec(m) is None)
    assert not unknown, f"docs/api.md documents modules that do not exist: {unknown}"


def test_architecture_page_names_every_package() -> None:
    text = (DOCS / "architecture.md").read_text()
    packages = {m.name.split(".")[1] for m in pkgutil.iter_modules(hierlmm.__path__, "hierlmm.") if m.ispkg}
    missing = sorted(p for p in packages if f"{p}/" not in text)
    assert not missing, f"docs/architecture.md does not name the package(s) {missing}"


def test_docs_build_strict(tmp_path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]') is not installed")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
