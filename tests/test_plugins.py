"""Plugin system, for real: a third-party distribution pip-installed into this environment and found
through the ``harness`` entry-point group; broken plugins; duplicates; ``HARNESS_LOAD_PLUGINS``.

The broken/duplicate cases use real entry points too: a temporary ``*.dist-info`` folder (METADATA +
entry_points.txt) and module on ``sys.path``, which is all ``importlib.metadata`` needs to find them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import harness.plugins
from harness import hookimpl
from harness.cli import main
from harness.errors import UnknownNameError
from harness.plugins import build_registries
from harness import CounterSpec

EXAMPLE = Path(__file__).parent / "example_plugin"
HARNESS = Path(sys.executable).with_name("harness")
PIP = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_LOAD_PLUGINS", "HARNESS_DATA")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install tests/example_plugin (copied, so no build files land in the source tree); uninstall after."""
    src = tmp_path_factory.mktemp("example") / "example_plugin"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    r = subprocess.run(PIP + ["install", "--no-deps", "--no-build-isolation", "--no-cache-dir", str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield
    finally:
        subprocess.run(PIP + ["uninstall", "-y", "harness-example-plugin"], capture_output=True, text=True)


def test_installed_plugin_listed_and_used_in_a_run(installed_example, tmp_path):
    r = subprocess.run([str(HARNESS), "plugins", "--json"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    ex = plugins["example"]
    assert ex["distribution"] == "harness-example-plugin" and ex["version"] == "0.1.0"
    assert ex["builtin"] is False and ex["error"] is None
    assert ex["components"]["counter"] == ["example-mean-counter"]
    assert ex["components"]["method"] == ["example-mean"]

    out = tmp_path / "run"
    r = subprocess.run([str(HARNESS), "run", "--matrix", "SYN-SPARSE→SYN-DENSE", "--methods", "example-mean",
                        "--seeds", "0", "--limit-test", "2", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "example-mean" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n2" / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["strategy"] == "example-mean"
    assert "| example-mean" in r.stdout and "example-mean" in (out / "leaderboard.md").read_text()

    # HARNESS_LOAD_PLUGINS="" loads no entry-point plugin: the method is then unknown (exit 2, one line)
    r = subprocess.run([str(HARNESS), "plugins", "--json"], capture_output=True, text=True,
                       env=_env(HARNESS_LOAD_PLUGINS=""))
    assert "example" not in {p["name"] for p in json.loads(r.stdout)}
    r = subprocess.run([str(HARNESS), "run", "--methods", "example-mean", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, env=_env(HARNESS_LOAD_PLUGINS=""))
    assert r.returncode == 2 and r.stderr.startswith("Error: ") and "unknown method 'example-mean'" in r.stderr
    assert "Traceback" not in r.stderr


def _fake_dist(root: Path, dist: str, entry: str, module: str, source: str) -> None:
    """A real (if minimal) installed distribution: <dist>-0.1.dist-info + a module, under ``root``."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture()
def fake_dists(tmp_path, monkeypatch):
    _fake_dist(tmp_path, "harness-broken", "broken", "harness_broken_mod",
               'raise ImportError("No module named \'diffusers\'")\n')
    _fake_dist(tmp_path, "harness-good", "good", "harness_good_mod", """
        from harness import CounterSpec, hookimpl
        @hookimpl
        def harness_register_counters(register):
            register(CounterSpec("good-counter", lambda device="cpu": None, aliases=("gc",)))
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    yield tmp_path
    for mod in ("harness_good_mod", "harness_broken_mod"):
        sys.modules.pop(mod, None)


def test_broken_plugin_reported_others_work(fake_dists):
    with pytest.warns(UserWarning, match="harness plugin 'broken' failed to load: ImportError"):
        regs = build_registries()
    info = {p.name: p for p in regs.plugins}
    assert info["broken"].error == "ImportError: No module named 'diffusers'"
    assert info["broken"].distribution == "harness-broken"
    assert info["good"].error is None and info["good"].components == {"counter": ["good-counter"]}
    assert regs.counters.resolve("GC") == "good-counter"
    assert regs.errors == {"broken": "ImportError: No module named 'diffusers'"}
    assert "SYN-SPARSE" in regs.datasets  # built-ins unaffected


def test_plugins_command_shows_load_error(fake_dists, monkeypatch):
    monkeypatch.setattr(harness.plugins, "_REGISTRIES", None)
    r = CliRunner().invoke(main, ["plugins", "--json"])
    assert r.exit_code == 0
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    assert plugins["broken"]["error"].startswith("ImportError") and plugins["good"]["error"] is None
    r = CliRunner().invoke(main, ["plugins"], env={"COLUMNS": "250"})
    assert "ImportError: No module named 'diffusers'" in r.stdout and "good-counter" in r.stdout
    monkeypatch.setattr(harness.plugins, "_REGISTRIES", None)


def test_harness_load_plugins_selects_entry_points(fake_dists, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "good")
    names = {p.name for p in build_registries().plugins}
    assert "good" in names and "broken" not in names and "datasets" in names  # built-ins always load
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "")
    regs = build_registries()
    assert not [p for p in regs.plugins if not p.builtin] and "good-counter" not in regs.counters


def test_a_cell_records_the_plugin_distributions_it_loaded(fake_dists, monkeypatch):
    """config.json's packages list the loaded plugins' distributions from the registries (no second entry-point scan),
    the same as listing every installed entry point when all load; a plugin left out by HARNESS_LOAD_PLUGINS is not
    one the result was made with."""
    from harness.conditions import package_versions

    with pytest.warns(UserWarning):
        regs = build_registries()
    recorded = package_versions(regs.plugins)
    assert recorded == package_versions()
    assert recorded["harness-good"] == "0.1" and recorded["harness-broken"] == "0.1"
    assert recorded["torch"] and "crowd-harness" not in recorded  # the harness's own version is harness_version
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "good")
    recorded = package_versions(build_registries().plugins)
    assert recorded["harness-good"] == "0.1" and "harness-broken" not in recorded


class Clash:
    @hookimpl
    def harness_register_counters(self, register):
        register(CounterSpec("Good_Counter", lambda device="cpu": None))


def test_duplicate_names_error_names_both_plugins(fake_dists, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "good")
    with pytest.warns(UserWarning, match="registered by both plugin 'good'"):
        regs = build_registries(extra_plugins=[Clash()])
    err = {p.name: p.error for p in regs.plugins}["Clash"]
    assert "counter name 'good-counter' is registered by both plugin 'good' (good-counter) and plugin 'Clash'" in err
    assert regs.counters.entry("good-counter").plugin == "good"  # the first registration is kept


def test_unknown_names_did_you_mean(fake_dists, monkeypatch):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", "good")
    regs = build_registries()
    with pytest.raises(UnknownNameError, match=r"unknown counter 'good-countr'; did you mean 'good-counter'\?"):
        regs.counters.get("good-countr")
    with pytest.raises(UnknownNameError, match="unknown dataset 'SYN-SPARS'; did you mean 'SYN-SPARSE'"):
        regs.datasets.get("SYN-SPARS")
