"""CLI (in-process through click's CliRunner): run/resume/failures/exit codes, leaderboard, plugins,
count, datasets, and one-line errors without tracebacks.

Components: the built-in synthetic datasets, the example plugin's ``example-mean`` method (imported from
``tests/example_plugin`` without installing it; the installed path is tested in test_plugins.py), plus a
failing method and a density counter defined here.
"""
from __future__ import annotations

from dataclasses import dataclass

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import harness.plugins
from harness import hookimpl
from harness.cli import main
from harness.plugins import build_registries
from harness import CommandSpec, CounterSpec, MethodSpec, Prediction, Provenance, StrategySpec

EXAMPLE = Path(__file__).parent / "example_plugin"
MATRIX = "SYN-SPARSE->SYN-DENSE"


class Boom:
    def fit(self, ctx):
        raise RuntimeError("no GPU here\n(simulated)")


class BlobCounter:
    """Density = the image's red channel at stride 4, scaled to sum to 7."""

    name = "blob-counter"
    provenance = Provenance("none")

    def predict(self, image):
        d = image[::4, ::4, 0].astype(np.float32) + 1
        return Prediction(count=7.0, density=d / d.sum() * 7)


@dataclass
class NoOptions:
    pass


class CliFakes:
    @hookimpl
    def harness_register_strategies(self, register):
        register(StrategySpec("boom", lambda options: Boom(), options=NoOptions))

    @hookimpl
    def harness_register_methods(self, register):
        register(MethodSpec("boom-method", "boom", {"smoke": {}}))

    @hookimpl
    def harness_register_counters(self, register):
        register(CounterSpec("blob-counter", lambda device="cpu": BlobCounter()))

    @hookimpl
    def harness_register_commands(self, register):
        import click

        @click.command()
        @click.argument("word")
        def shout(word):
            """Print WORD in capitals."""
            click.echo(word.upper())

        register(CommandSpec("shout", shout))
        register(CommandSpec("run", shout))  # a built-in name: the built-in wins


@pytest.fixture()
def regs(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import harness_example_plugin

    regs = build_registries(extra_plugins=[harness_example_plugin, CliFakes()])
    monkeypatch.setattr(harness.plugins, "_REGISTRIES", regs)
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    return regs


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_run_failures_exit_code_and_resume(regs, tmp_path):
    out = tmp_path / "run"
    r = invoke("run", "--matrix", MATRIX, "--methods", "example-mean,boom-method", "--seeds", "0,1",
               "--limit-test", 3, "--device", "cpu", "--out", out)
    assert r.exit_code == 1, r.output
    assert "2 cell(s) failed" in r.stderr and "RuntimeError: no GPU here (simulated)" in r.stderr
    assert "Traceback" not in r.output
    for seed in (0, 1):
        cell = out / "example-mean" / "SYN-SPARSE→SYN-DENSE" / f"seed-{seed}-n3"
        m = json.loads((cell / "metrics.json").read_text())
        assert m["n_images"] == 3 and m["map"] is None  # count-only counter: no localisation
        assert m["target_labels_seen"] is False and m["provenance"]["trained_on"] == ["SYN-SPARSE"]
        assert (out / "boom-method" / "SYN-SPARSE→SYN-DENSE" / f"seed-{seed}-n3" / "error.json").exists()
    board = (out / "leaderboard.md").read_text()
    assert board.startswith("| method") and "example-mean" in board and "SYN-SPARSE→SYN-DENSE [n=3] MAE↓" in board
    assert "MSE is the root mean squared error" in r.stdout
    # the mean count of the first 5 source train images is predicted for every target image
    src, tgt = (regs.datasets.get(n).factory(None) for n in ("SYN-SPARSE", "SYN-DENSE"))
    mean = np.mean([ref.load().count for ref in src.samples("train")[:5]])
    mae = np.mean([abs(mean - ref.load().count) for ref in tgt.samples("test")[:3]])
    row = next(line for line in r.stdout.splitlines() if line.startswith("| example-mean"))
    # two seeds, deterministic: zero spread; then the images' bootstrap interval
    assert row.split("|")[2].strip().startswith(f"{mae:.2f} ± 0.00 [")

    r2 = invoke("run", "--matrix", MATRIX, "--methods", "example-mean", "--seeds", "0,1", "--limit-test", 3,
                "--device", "cpu", "--out", out)
    assert r2.exit_code == 0 and "finished 0, already done 2, failed 0" in r2.stderr


def test_user_errors_are_one_line_exit_2(regs, tmp_path):
    r = invoke("run", "--matrix", "SYN-SPARSE->SYN-DENS,SHA->SHB", "--methods", "example-man",
               "--out", tmp_path)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "did you mean 'SYN-DENSE'" in lines[0] and "did you mean 'example-mean'" in lines[0]
    assert "dataset 'SHA' needs a data root" in lines[0] and "Traceback" not in r.output
    r = invoke("leaderboard", tmp_path / "missing")
    assert r.exit_code == 2 and r.stderr.startswith("Error: run directory") and "Traceback" not in r.output
    r = invoke("count", tmp_path / "nope.jpg", "--counter", "blob-countr")
    assert r.exit_code == 2 and "did you mean 'blob-counter'" in r.stderr


def test_leaderboard_command_formats(regs, tmp_path):
    invoke("run", "--matrix", MATRIX, "--methods", "example-mean", "--limit-test", 2, "--device", "cpu",
           "--out", tmp_path)
    r = invoke("leaderboard", tmp_path, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"][0]["method"] == "example-mean"
    r = invoke("leaderboard", tmp_path, "--format", "latex", "-o", tmp_path / "board.tex")
    assert r.exit_code == 0 and r"\begin{tabular}" in (tmp_path / "board.tex").read_text()
    assert invoke("leaderboard", tmp_path, "--format", "xls").exit_code == 2  # click usage error


def test_plugins_json_lists_components_and_hooks(regs):
    r = invoke("plugins", "--json")
    assert r.exit_code == 0
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    ex = plugins["harness_example_plugin"]
    assert ex["components"] == {"counter": ["example-mean-counter"], "strategy": ["example-mean"],
                                "method": ["example-mean"]}
    assert "harness_register_counters" in ex["hooks"] and ex["error"] is None
    assert plugins["synthetic"]["builtin"] is True and "SYN-SPARSE" in plugins["synthetic"]["components"]["dataset"]
    assert "blob-counter" in invoke("plugins").stdout


def test_count_writes_overlay(regs, tmp_path):
    img = np.zeros((32, 48, 3), np.uint8)
    img[8:12, 20:24, 0] = 255
    Image.fromarray(img).save(tmp_path / "crowd.png")
    r = invoke("count", tmp_path / "crowd.png", "--counter", "blob-counter", "--device", "cpu",
               "--out", tmp_path / "viz")
    assert r.exit_code == 0, r.output
    assert r.stdout.split("\t")[1] == "7.0"
    png = tmp_path / "viz" / "crowd_density.png"
    assert Image.open(png).size == (48, 32)


def test_datasets_lists_split_sizes(regs):
    r = CliRunner().invoke(main, ["datasets"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    line = next(ln for ln in r.stdout.splitlines() if "SYN-DENSE" in ln)
    assert [c.strip() for c in line.split("│")][4:7] == ["60", "15", "30"]
    assert "needs --data-root" in next(ln for ln in r.stdout.splitlines() if " SHA " in ln)


@pytest.mark.realdata
def test_end_to_end_builtin_pretrained_counter(data_root, weights_root, tmp_path, monkeypatch):
    """The real built-ins: ShanghaiTech reader, synthetic crowds, MCNN (SHB weights), metrics, leaderboard.
    MCNN-SHB evaluated on SHB saw its target's labels: flagged (dagger); on the synthetic cell it did not."""
    monkeypatch.setattr(harness.plugins, "_REGISTRIES", None)
    monkeypatch.setenv("HARNESS_WEIGHTS", str(weights_root))
    out = tmp_path / "run"
    r = invoke("run", "--matrix", "SHA→SHB,SYN-SPARSE→SYN-DENSE", "--methods", "source-only-mcnn-shb",
               "--limit-test", 2, "--device", "cpu", "--data-root", data_root, "--out", out)
    assert r.exit_code == 0, r.output
    shb = json.loads((out / "source-only-mcnn-shb/SHA→SHB/seed-0-n2/metrics.json").read_text())
    syn = json.loads((out / "source-only-mcnn-shb/SYN-SPARSE→SYN-DENSE/seed-0-n2/metrics.json").read_text())
    assert shb["target_labels_seen"] is True and syn["target_labels_seen"] is False
    assert shb["provenance"]["trained_on"] == ["SHB"] and shb["n_images"] == 2
    assert shb["map"] is not None and 0 <= shb["map"] <= 1  # points from the density map's local maxima
    assert (out / "source-only-mcnn-shb/SHA→SHB/seed-0-n2/config.json").exists()
    row = next(line for line in r.stdout.splitlines() if line.startswith("| source-only-mcnn-shb"))
    assert f"{shb['mae']:.2f} [" in row and "] †" in row and "none (pretrained)" in row and "SHB; target" in row


def test_plugin_commands_join_the_cli(regs):
    r = invoke("--help")
    assert r.exit_code == 0 and "shout" in r.output
    assert invoke("shout", "crowd").output == "CROWD\n"
    # a plugin cannot take a built-in command's name
    r = invoke("run", "--help")
    assert "--matrix" in r.output


def test_count_a_too_small_image_is_one_line_and_same_names_get_two_overlays(regs, tmp_path):
    """A 1×1 image through a real network (MCNN's pooling; `harness count` and evaluation share predict_image) is
    one line naming the image, not a traceback; two images with one file name in two folders get two overlays."""
    from harness.errors import DataError
    from harness.evaluation import predict_image
    from harness.models.mcnn import mcnn_counter

    with pytest.raises(DataError, match=r"dot.png: the image is 1×1 px, too small for counter") as err:
        predict_image(mcnn_counter(weights="random"), np.zeros((1, 1, 3), np.uint8), 0, "dot.png")
    assert "\n" not in str(err.value)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        img = np.zeros((32, 48, 3), np.uint8)
        img[8:12, 20:24, 0] = 255
        Image.fromarray(img).save(tmp_path / d / "x.png")
    r = invoke("count", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "--counter", "blob-counter",
               "--device", "cpu", "--out", tmp_path / "viz")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "viz").iterdir()) == ["x-2_density.png", "x_density.png"]


def test_an_unusable_cache_is_one_line_before_any_work(regs, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "afile" / "cache"))
    r = invoke("run", "--matrix", "SYN-SPARSE→SYN-DENSE", "--methods", "zero", "--limit-test", "2",
               "--device", "cpu", "--out", tmp_path / "run")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "the artefact cache (HARNESS_CACHE)" in r.output and "a file, not a folder" in r.output
    assert not (tmp_path / "run").exists()


def test_an_ascii_filesystem_encoding_is_one_line(tmp_path):
    """LC_ALL=C with PYTHONUTF8=0 cannot name 'SRC→TGT' folders: one line saying how to fix it."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env.pop("LANG", None)
    r = subprocess.run([str(Path(sys.executable).parent / "harness"), "status", str(tmp_path)], capture_output=True,
                       text=True, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "PYTHONUTF8=1" in r.stderr and "LC_ALL=C.UTF-8" in r.stderr


def test_the_default_run_is_the_demo_pair_and_ends_with_the_next_commands(tmp_path, monkeypatch):
    """`harness run` without a data root or a matrix runs the built-in demo pair and prints what to do next (the
    trained default method is swapped for `zero` here to keep the test short)."""
    import harness.cli as cli

    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setattr(cli, "SYNTHETIC_METHODS", "zero,source-mean")
    r = CliRunner().invoke(cli.main, ["run", "--out", str(tmp_path / "demo"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "SYN-PARK→SYN-STREET" in r.output and "SYN-STREET→SYN-PARK" in r.output
    assert f"harness compare {tmp_path / 'demo'} zero source-mean" in r.output
    assert "harness report" in r.output and "harness new-plugin" in r.output


def test_loading_libraries_pauses_the_collector_and_restores_its_state():
    import gc

    from harness.cli_common import loading_libraries

    assert gc.isenabled()
    with loading_libraries():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError):
        with loading_libraries():
            1 / 0
    assert gc.isenabled()  # restored after an error too
    gc.disable()
    try:
        with loading_libraries():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
    assert gc.get_freeze_count() == 0  # a library caller's objects stay collectable


def test_loading_libraries_freezes_what_it_loaded_only_in_the_console_scripts_process():
    """In the process the ``harness`` console script owns, what a command loaded is frozen when the loading ends, so
    the collections of the run never walk it again; elsewhere (tests, library callers) nothing is frozen."""
    import subprocess
    import sys

    probe = ("import gc\n"
             "from harness import cli_common\n"
             "from harness.cli_common import loading_libraries\n"
             "with loading_libraries():\n"
             "    import harness.cli\n"
             "print('library', gc.get_freeze_count(), gc.isenabled())\n"
             "cli_common.OWNS_PROCESS = True\n"
             "with loading_libraries():\n"
             "    import harness.runner\n"
             "print('console', gc.get_freeze_count() > 1000, gc.isenabled())\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["library 0 True", "console True True"]


def test_the_console_script_is_harness_main_and_exits_with_the_objects_frozen(tmp_path):
    """``harness`` and ``python -m harness`` run harness.__main__.main, which freezes the live objects when the
    command ends (the interpreter's exit then skips its full collection; README, "Fixed costs"); exit codes and
    output are click's."""
    import importlib.metadata as md
    import subprocess
    import sys

    scripts = {ep.name: ep.value for ep in md.entry_points(group="console_scripts") if ep.name == "harness"}
    assert scripts == {"harness": "harness.__main__:main"}
    probe = ("import atexit, gc, sys\n"
             "from harness.__main__ import main\n"
             "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0, 'enabled', gc.isenabled()))\n"
             "sys.argv = ['harness'] + sys.argv[1:]\n"
             "main()\n")
    r = subprocess.run([sys.executable, "-c", probe, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "harness, version" in r.stdout and "frozen True enabled True" in r.stdout
    r = subprocess.run([sys.executable, "-c", probe, "run", "--methods", "nope", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert "frozen True" in r.stdout  # a failing command ends the same way
    r = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "crowd-harness" in r.stdout
