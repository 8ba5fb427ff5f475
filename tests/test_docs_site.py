"""The documentation site: `mkdocs build --strict` (README as home, docs/design.md, every method plugin's README, the
leaderboards, the API reference from the docstrings) builds without a warning, every page of the navigation exists,
and the API page renders in a real Chromium; its screenshot is kept as a test artefact (``docs-api.png``)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from browser import ARTIFACTS, CHROMIUM, FLAGS, NO_CHROMIUM, REPO

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                        "-d", str(out)], capture_output=True, text=True, cwd=REPO,
                       env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]
    return out


def test_site_builds_strict_with_every_page(site):
    nav = (REPO / "mkdocs.yml").read_text()
    for page in re.findall(r":\s+(\S+\.md)\s*$", nav, flags=re.M):
        html = site / (page[:-3].removesuffix("index").removesuffix("README") or "") / "index.html"
        if page == "index.md":
            html = site / "index.html"
        elif page.endswith("README.md"):
            html = site / page[: -len("README.md")] / "index.html"
        assert html.is_file(), page
    home = (site / "index.html").read_text()
    assert "crowd-harness" in home and 'href="docs/design/"' in home  # README's links point at the site's pages
    ldm = (site / "plugins" / "harness-ldm" / "index.html").read_text()
    assert 'href="../../docs/design/"' in ldm  # a plugin README's link into the design doc resolves on the site


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_api_page_in_a_real_browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((site / "api" / "index.html").as_uri())
            headings = page.locator("h2").all_inner_texts()
            assert any("harness.runner.run" in h for h in headings), headings[:10]
            assert any("harness.rundir.RunDir" in h for h in headings)
            # the docstrings' Google sections are rendered as tables (Parameters / Raises), never left as raw "Args:"
            body = page.locator("article").inner_text()
            assert "Args:" not in body and "Parameters:" in body and "Raises:" in body
            assert page.locator("table").count() >= 5
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "docs-api.png"))
        finally:
            browser.close()
    assert (ARTIFACTS / "docs-api.png").stat().st_size > 10_000
