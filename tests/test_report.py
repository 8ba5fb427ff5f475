"""`harness report`: the static HTML report, checked in a real headless Chromium (Debian's, driven by playwright with
``executable_path``; never ``playwright install``): a header click reorders the rows, every link resolves, the cell
pages carry their figures, and a screenshot is kept as a test artefact (``test-artifacts/report-index.png``)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import MethodSpec, hookimpl
from harness.cli import main

from browser import ARTIFACTS, CHROMIUM, FLAGS, NO_CHROMIUM


class RandomMCNN:
    @hookimpl
    def harness_register_methods(self, register):
        opts = {"counter": "mcnn-sha", "pretrained": True, "counter_options": {"weights": "random"}}
        register(MethodSpec("mcnn-random", "source-only", {"smoke": opts}))


@pytest.fixture(scope="module")
def report(tmp_path_factory, monkeypatch_module):
    import harness.plugins
    from harness.plugins import build_registries

    monkeypatch_module.setattr(harness.plugins, "_REGISTRIES", build_registries(extra_plugins=[RandomMCNN()]))
    tmp = tmp_path_factory.mktemp("report")
    r = CliRunner().invoke(main, ["run", "--matrix", "SYN-SPARSE→SYN-DENSE,SYN-DENSE→SYN-SPARSE,SYN-SPARSE→SYN-SPARSE",
                                  "--methods", "zero,source-mean,mcnn-random", "--limit-test", "6",
                                  "--device", "cpu", "--out", str(tmp / "run")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["report", str(tmp / "run"), "-o", str(tmp / "html")])
    assert r.exit_code == 0, r.output
    return tmp / "html"


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_report_files_are_self_contained(report):
    index = (report / "index.html").read_text()
    pages = sorted((report / "cells").glob("*.html"))
    assert len(pages) == 9  # 3 methods x 3 cells
    for text in [index] + [p.read_text() for p in pages]:
        assert "http://" not in text and "https://" not in text  # no CDN: works offline
    page = next(p for p in pages if p.name.startswith("mcnn-random__SYN-SPARSE-SYN-DENSE")).read_text()
    assert page.count("data:image/png;base64,") >= 2  # scatter, histogram
    assert page.count("data:image/jpeg;base64,") >= 4  # 2 best + 2 worst overlays (JPEG)
    assert "harness run" in page and "SYN-SPARSE→SYN-DENSE" in page and "labels_used" in page
    # metrics as the leaderboard prints them, not raw floats
    mae = re.search(r"<td>mae</td><td>([^<]*)</td>", page).group(1)
    assert re.fullmatch(r"\d+\.\d{2}", mae), mae
    # the picture first: one forest plot per cell (baselines as lines), then (more than two cells) one source × target
    # heat map per trained method, above the table
    assert index.count("alt='forest plot of MAE") == 3 and index.index("forest plot") < index.index("<table")
    assert index.count("alt='heat map of MAE") == 1 and "alt='heat map of MAE, mcnn-random'" in index
    assert index.index("heat map") < index.index("<table")
    # grouped headers: each cell once over its metrics
    head = index[index.index("<thead>"):index.index("</thead>")]
    assert head.count("class='group'") == 3 and head.count(">SYN-SPARSE→SYN-DENSE [n=6]<") == 1
    assert head.count(">MAE↓<") == 3 and head.count(">mAP↑<") == 3


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_in_a_real_browser(report):
    from playwright.sync_api import sync_playwright

    col = "SYN-SPARSE→SYN-DENSE [n=6] MAE↓"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 700})
            page.goto((report / "index.html").as_uri())

            def header(name):  # the column a sortable header sorts (grouped headers: the cell over its metrics)
                return int(page.locator(f"thead th[data-name='{name}']").get_attribute("data-col"))

            def column(name):
                return page.locator(f"tbody tr td:nth-child({header(name) + 1})").all_inner_texts()

            def click(name):
                page.locator(f"thead th[data-name='{name}']").click()

            def values(name):
                return [float(m.group()) if (m := re.match(r"-?\d+(\.\d+)?", t)) else float("inf") for t in column(name)]

            methods_before = column("method")
            click(col)
            ascending = values(col)
            assert ascending == sorted(ascending)
            click(col)
            descending = values(col)
            assert descending == sorted(descending, reverse=True) and column("method") != methods_before
            click("method")
            assert column("method") == sorted(column("method"))
            assert page.locator("tbody b").count() >= 1  # the best value of a column in bold
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report-index.png"), full_page=True)
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
            assert len(hrefs) >= 6
            for href in hrefs:
                target = Path(href.replace("file://", ""))
                assert target.is_file(), href
                sub = browser.new_page()
                sub.goto(href)
                assert sub.locator("h1").inner_text() and sub.locator("a[href='../index.html']").count() == 1
                assert all(sub.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)"))
                sub.close()
        finally:
            browser.close()
    assert (ARTIFACTS / "report-index.png").stat().st_size > 10_000
