"""The teaching app (notebooks/app_hierarchical_vs_marginal.py) in a real browser: headless Chromium via Playwright.

The page loads, moving a slider changes the figure and the verdict, and the console shows no errors. `.ci/run`
installs Debian's chromium and sets HIERLMM_BROWSER=1, which makes a missing browser a failure; elsewhere the test
skips and says why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from paths import MODELS, NOTEBOOKS

import hierlmm
from hierlmm.report.explorer import effect_plot_grid, implied_structure

APP = NOTEBOOKS / "app_hierarchical_vs_marginal.py"
CHROMIUM = "/usr/bin/chromium"


def test_implied_structure_and_verdicts():
    ok = implied_structure(1.0, 0.3, -0.3, 1.0, 5, 1.0)
    t = np.arange(5.0)
    Z = np.column_stack([np.ones(5), t])
    np.testing.assert_allclose(ok.V, Z @ ok.D @ Z.T + np.eye(5))
    assert ok.min_eigen_D > 0 and "hierarchical" in ok.verdict()
    marginal_only = implied_structure(1.0, 0.3, 1.3, 1.0, 5, 1.0)
    assert marginal_only.min_eigen_D < 0 < marginal_only.min_eigen_V
    assert "no hierarchical one" in marginal_only.verdict()
    neither = implied_structure(1.0, 1.0, 2.0, 0.1, 5, 1.0)
    assert neither.min_eigen_V < 0 and neither.verdict().startswith("Neither")


def test_effect_plot_grid_matches_nlme(pbc2_with_basepro, reference):
    ref = reference("pbc2_effect_plot")
    fit = hierlmm.fit(hierlmm.load_spec(MODELS / "pbc2_effect_plot.toml").spec, pbc2_with_basepro)
    grid = effect_plot_grid(fit, 49.0, 10.6, years=sorted(set(ref["grid"]["year"])))
    want = {(y, s): (p, lo, up) for y, s, p, lo, up in zip(*(ref["grid"][k] for k in ("year", "sex", "pred", "low",
                                                                                          "upp")), strict=True)}
    for row in grid.itertuples():
        p, lo, up = want[(row.year, row.sex)]
        assert row.pred == pytest.approx(p, abs=1e-3) and row.low == pytest.approx(lo, abs=1e-3)
        assert row.upp == pytest.approx(up, abs=1e-3)


def _browser_or_skip():
    required = os.environ.get("HIERLMM_BROWSER") == "1"
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (Debian's chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip)")
    try:
        import marimo  # noqa: F401
    except ImportError:
        missing.append("marimo (pip)")
    if missing:
        message = f"browser test needs {', '.join(missing)}"
        if required:
            pytest.fail(message + " (HIERLMM_BROWSER=1: .ci/run installs them)")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_in_a_headless_browser(tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    port = _free_port()
    log = open(tmp_path / "marimo.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "marimo", "run", str(APP), "--headless", "--port", str(port),
                               "--no-token"], stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.get_by_text("D is positive semi-definite").first.wait_for(timeout=180_000)
            page.get_by_text("PBC: population mean").first.wait_for(timeout=180_000)
            figure = page.locator("img").first
            figure.wait_for(timeout=60_000)
            before = figure.get_attribute("src")
            page.get_by_role("checkbox").first.click()  # allow non-positive-definite D: |correlation| up to 2
            slider = page.get_by_role("slider").nth(2)  # sd(Intercept), sd(slope), correlation
            for _ in range(60):
                if slider.get_attribute("aria-valuemax") == "2":
                    break
                time.sleep(0.5)
            slider.focus()
            slider.press("End")  # correlation 2: D indefinite, V_i still positive definite
            page.get_by_text("valid marginal model").first.wait_for(timeout=60_000)
            for _ in range(60):
                if page.locator("img").first.get_attribute("src") != before:
                    break
                time.sleep(0.5)
            changed = page.locator("img").first.get_attribute("src") != before
            assert changed, "moving the slider left the figure as it was"
            browser.close()
        assert not errors, errors
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()
