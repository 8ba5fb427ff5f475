"""`harness run --dry-run`: every stage of every cell at the profile's shapes, a few units each, with memory, FLOPs,
units and projected GPU-hours; nothing written to the run folder, no cell marked done; every registered method's
`paper` profile runs (architecture-only weights where the released ones are absent)."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.dryrun import DEFAULT_EFFICIENCY, GPU_OP_SECONDS, GPUS, project_seconds

SYN = "SYN-PARK→SYN-STREET"


def _invoke(args, **env):
    return CliRunner().invoke(main, args, catch_exceptions=False, env=env)


def test_dry_run_reports_every_stage_and_writes_no_cell(tmp_path):
    out = tmp_path / "run"
    r = _invoke(["run", "--matrix", SYN, "--methods", "source-only-rescsrnet,zero", "--out", str(out), "--dry-run",
                 "--json", "--gpu", "h100", "--precision", "bf16"], HARNESS_CACHE=str(tmp_path / "cache"))
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["gpu"] == "h100" and report["gpu_peak_flops"] == GPUS["h100"]["bf16"]
    assert report["profile"] == "smoke" and report["precision"] == "bf16" and report["max_units"] == 2
    cells = {c["method"]: c for c in report["cells"]}
    trained = {s["name"]: s for s in cells["source-only-rescsrnet"]["stages"]}
    assert set(trained) == {"train: density", "select: density", "evaluate: predict"}
    steps = trained["train: density"]
    assert steps["units_run"] == 2 and steps["units"] > 100 and steps["flops_per_unit"] > 1e8
    assert steps["params"] > 1e5 and steps["seconds_per_unit"] > 0 and steps["gpu_hours"] > 0
    # projection: units × max(FLOPs per unit / (peak × efficiency), operator calls per unit × time per call); a smoke
    # training step is small work, bounded by its operator calls
    assert report["gpu_op_seconds"] == GPU_OP_SECONDS and steps["ops_per_unit"] > 100
    flops_s = steps["flops_per_unit"] / (GPUS["h100"]["bf16"] * report["efficiency"])
    calls_s = steps["ops_per_unit"] * GPU_OP_SECONDS
    assert steps["gpu_hours"] * 3600 == pytest.approx(steps["units"] * max(flops_s, calls_s))
    assert steps["ops_per_unit"] * GPU_OP_SECONDS > steps["flops_per_unit"] / (GPUS["h100"]["bf16"] * 0.1)
    assert trained["evaluate: predict"]["units"] == 30 and trained["evaluate: predict"]["units_run"] == 2
    zero = cells["zero"]["stages"]
    assert [s["name"] for s in zero] == ["evaluate: predict"] and zero[0]["flops_per_unit"] == 0
    assert report["methods"]["source-only-rescsrnet"]["largest_stage"] == "train: density"
    assert report["gpu_hours"] == pytest.approx(sum(c["gpu_hours"] for c in report["cells"]))
    assert not out.exists()  # nothing written, no cell done
    # a real run after the dry run computes every cell
    r = _invoke(["run", "--matrix", SYN, "--methods", "zero", "--out", str(out)],
                HARNESS_CACHE=str(tmp_path / "cache"))
    assert r.exit_code == 0 and "finished 1, already done 0" in r.output


def test_dry_run_table_names_the_gpu_and_the_assumed_efficiency(tmp_path):
    r = _invoke(["run", "--matrix", SYN, "--methods", "zero", "--dry-run", "--gpu-efficiency", "0.5",
                 "--out", str(tmp_path / "run")], HARNESS_CACHE=str(tmp_path / "cache"))
    assert r.exit_code == 0, r.output
    assert "projected on A100 fp32 at 50% of peak" in r.stdout and "efficiency 0.5 (--gpu-efficiency)" in r.stdout
    assert "evaluate: predict" in r.stdout and "cell total" in r.stdout
    bad = CliRunner().invoke(main, ["run", "--matrix", SYN, "--methods", "zero", "--dry-run", "--gpu", "k80"])
    assert bad.exit_code == 2 and "k80" in bad.output


def test_a_cell_the_os_kills_is_one_failed_cell_naming_its_stage_and_the_others_go_on(tmp_path):
    """Each dry-run cell runs in its own process: a cell killed by SIGKILL (what the out-of-memory killer sends when a
    stage needs more memory than the machine has) is reported with the signal and the stage it was in, and the
    cells after it still run and report; nothing is written to the run folder."""
    out = tmp_path / "run"
    r = _invoke(["run", "--matrix", SYN, "--methods", "slow-tiny,source-only-rescsrnet", "--plugin", "slow_plugin",
                 "--dry-run", "--json", "--device", "cpu", "--out", str(out)],
                HARNESS_CACHE=str(tmp_path / "cache"), SLOW_PLUGIN_KILL="1")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    cells = {c["method"]: c for c in report["cells"]}
    killed = cells["slow-tiny"]["error"]
    assert "killed by SIGKILL" in killed and "out-of-memory" in killed and "'train: density'" in killed
    assert "slow-tiny" in r.stderr and "killed by SIGKILL" in r.stderr
    assert cells["source-only-rescsrnet"]["error"] is None
    assert {s["name"] for s in cells["source-only-rescsrnet"]["stages"]} == {"train: density", "select: density",
                                                                           "evaluate: predict"}
    assert not out.exists()


def _children(pid: int) -> list[int]:
    from pathlib import Path

    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid and \
                    b"spawn_main" in (p / "cmdline").read_bytes():
                out.append(int(p.name))
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_killing_the_dry_run_ends_the_cell_process_it_started(tmp_path):
    """A dry run killed from outside (SIGKILL: no exit handlers run) does not leave its cell's process computing on
    as an orphan: the cell process notices its parent is gone and ends within seconds. Its scratch folder (a paper
    profile's holds gigabytes) is left behind, and the next dry run removes it."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    hold = tmp_path / "hold"
    hold.touch()  # the slow plugin's training waits while this file exists: the cell is busy when the driver dies
    tests = str(Path(__file__).resolve().parent)  # where slow_plugin lives
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "SLOW_PLUGIN_HOLD": str(hold), "HARNESS_CACHE": str(tmp_path / "cache"),
           "TMPDIR": str(scratch),
           "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)}
    driver = subprocess.Popen([str(Path(sys.executable).parent / "harness"), "run", "--matrix", SYN, "--methods",
                               "slow-tiny", "--plugin", "slow_plugin", "--dry-run", "--device", "cpu", "--out",
                               str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (kids := _children(driver.pid)) and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert kids, "the dry run started no cell process"
        driver.kill()
        driver.wait()
        deadline = time.monotonic() + 30
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(k) for k in kids), "the cell process outlived the dry run"
        left = list(scratch.glob(f"harness-dry-run-{driver.pid}-*"))
        assert len(left) == 1 and (left[0] / "cells").is_dir()
        from harness.dryrun_progress import scratch_folder

        live, live_lock = scratch_folder(scratch)  # a dry run still running (its lock held) keeps its folder
        assert not left[0].exists() and live.is_dir() and live.name.startswith(f"harness-dry-run-{os.getpid()}-")
        again, again_lock = scratch_folder(scratch)
        assert live.is_dir() and again.is_dir()
        live_lock.release()
        again_lock.release()
        scratch_folder(scratch)[1].release()
        assert not live.exists() and not again.exists()
    finally:
        hold.unlink(missing_ok=True)
        if driver.poll() is None:
            driver.kill()


#: one method per strategy (the cheapest at paper shapes) for CI: the dry run of every registered method at paper shapes
#: takes 24-32 min of a 2-core CPU (LDM's VQ step alone is ~15 TFLOP), so it is the slow test below
CI_METHODS = ("promptmix-r100", "spade-r100", "detnet", "dmap-vgg", "source-only-mcnn-sha", "zero")


def _paper_dry_run(tmp_path, methods, matrix=SYN, *args, refused=()):
    """The paper profiles' dry run of ``methods`` on ``matrix`` (extra CLI ``args``); every cell reports every stage,
    except the cells of the ``refused`` methods, which must fail with the one line of their protocol's refusal."""
    env = {"HARNESS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    r = _invoke(["run", "--matrix", matrix, "--methods", ",".join(methods), "--profile", "paper", "--dry-run",
                 "--dry-run-units", "1", "--json", "--out", str(tmp_path / "run"), *args], **env)
    report = json.loads(r.stdout)
    failed = {c["method"]: c["error"] for c in report["cells"] if c["error"]}
    assert set(failed) == set(refused) and r.exit_code == (1 if refused else 0), failed
    for m in refused:
        assert failed[m].startswith("keep: target but no annotator was trained on") and "\n" not in failed[m], m
    assert {c["method"] for c in report["cells"]} == set(methods)
    for c in report["cells"]:
        if c["error"]:
            continue
        assert c["stages"], c["method"]
        assert any(s["name"] == "evaluate: predict" for s in c["stages"]), c["method"]
        for s in c["stages"]:
            assert s["units"] >= 1 and s["gpu_hours"] >= 0 and s["seconds_per_unit"] is not None, (c["method"], s)
        if c["method"] not in ("zero", "source-mean"):
            assert c["gpu_hours"] > 0 and any(s["flops_per_unit"] for s in c["stages"]), c["method"]
    assert not os.path.exists(tmp_path / "run")
    return {c["method"]: c for c in report["cells"]}


def test_paper_profiles_dry_run_at_their_real_shapes(tmp_path):
    """One method of each strategy at its paper profile's real architecture and shapes on the built-in pair, one
    unit per stage: every stage reports; pretrained weights absent here are reported as architecture only."""
    by = _paper_dry_run(tmp_path, CI_METHODS)
    pm = by["promptmix-r100"]
    assert pm["architecture_only"]  # SD 1.5, BLIP base, the ImageNet ResNet-18: not on this machine
    assert any("stable-diffusion-v1-5" in k for k in pm["weights"])
    stages = {s["name"]: s for s in pm["stages"]}
    unet = stages["generate: U-Net step"]
    assert unet["params"] == 859_520_964 and unet["parent"].startswith("generate: ")  # SD 1.5's U-Net, exactly
    assert unet["units"] == 50 * stages[unet["parent"]]["units"]  # 50 denoising steps per generated image
    # the pipeline runs fp16 on CUDA whatever the run's precision (fp32 here): projected at the fp16 peak
    assert unet["precision"] == "fp16" and stages[unet["parent"]]["precision"] == "fp16"
    assert unet["ops_per_unit"] > 100  # an SD U-Net call is hundreds of operator calls
    assert unet["gpu_hours"] * 3600 == pytest.approx(unet["units"] * project_seconds(
        unet["flops_per_unit"], unet["ops_per_unit"], GPUS["a100"]["fp16"] * DEFAULT_EFFICIENCY))
    assert stages["train: density"]["precision"] is None  # the run's
    assert stages["caption: Salesforce/blip-image-captioning-base"]["flops_per_unit"] > 1e10
    assert "WIDER FACE" in by["detnet"]["weights"]  # stand-in: the dataset is not under the data root
    assert not by["source-only-mcnn-sha"]["architecture_only"]  # the released MCNN weights are here


def _needs_target_annotator() -> list[str]:
    """The methods whose paper profile pseudo-labels synthetic images (``r_mix > 0``) with the annotator trained on the
    target (``pool.keep: target``: the PromptMix report's choice and its Table IV), which only a target with such an
    annotator (SHA, SHB) allows; ``promptmix-table4-r0`` generates nothing and runs anywhere."""
    from harness.plugins import get_registries

    methods = get_registries().methods
    pools = {n: methods.get(n).profiles["paper"].get("pool", {}) for n in methods.names()}
    return [n for n, p in pools.items() if p.get("keep") == "target" and p.get("r_mix", 1.0) > 0]


def test_an_impossible_pool_is_refused_before_any_captioning(tmp_path):
    """``keep: target`` on a target no annotator was trained on is refused in one line before the method captions or
    builds a generator (found by the every-method dry run: the refusal came after BLIP had captioned the source)."""
    r = _invoke(["run", "--matrix", SYN, "--methods", "promptmix-table4-r100", "--profile", "smoke", "--dry-run",
                 "--json", "--out", str(tmp_path / "run")], HARNESS_CACHE=str(tmp_path / "cache"))
    (cell,) = json.loads(r.stdout)["cells"]
    assert r.exit_code == 1 and cell["error"].startswith("keep: target but no annotator was trained on SYN-STREET")
    assert cell["stages"] == []


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HARNESS_SLOW") != "1", reason="~24-32 min on 2 cores: HARNESS_SLOW=1")
def test_every_registered_method_paper_profile_dry_runs(tmp_path):
    """Every registered method's paper profile dry-runs on the built-in pair (HARNESS_SLOW=1; the LDM's VQ step in
    fp32 takes ~22 GB of a CPU's memory). The methods that need an annotator trained on the target are refused
    there in one line each (no such annotator for SYN-STREET) and are dry-run on SHA→SHB by the next test."""
    from harness.plugins import get_registries

    refused = _needs_target_annotator()
    assert "promptmix-report-r100" in refused and "spade-table4" in refused and "promptmix-table4-r0" not in refused
    by = _paper_dry_run(tmp_path, get_registries().methods.names(), SYN, refused=refused)
    assert any("stable-diffusion-2-1" in k for k in by["syrac"]["weights"])


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("HARNESS_SLOW") != "1" or not os.environ.get("HARNESS_DATA"),
                    reason="~16 min on 2 cores, on ShanghaiTech: HARNESS_SLOW=1 and HARNESS_DATA")
def test_methods_needing_a_target_trained_annotator_dry_run_on_sha_shb(tmp_path):
    """The paper profiles that pseudo-label with the annotator trained on the target (SASNet-SHB or MCNN-SHB for
    SHB) dry-run on SHA→SHB, a cell where that annotator exists (HARNESS_SLOW=1, HARNESS_DATA)."""
    methods = _needs_target_annotator()
    by = _paper_dry_run(tmp_path, methods, "SHA→SHB")
    assert any("sasnet" in s["name"] for s in by["promptmix-table4-r100"]["stages"])


def test_an_interrupted_dry_run_goes_on_after_the_cells_it_measured(tmp_path, monkeypatch):
    """The progress of a dry run is kept after every cell (harness.dryrun_progress): started again after an
    interruption — here in another process, through the CLI — the same dry run measures only the cells it had not,
    keeps the earlier cells' figures and time, finds the fit an earlier cell cached (borrowed as in one run), and
    removes its folder when it ends; another number of units per stage is another dry run, measured afresh."""
    import subprocess
    import sys
    from pathlib import Path

    from harness.dryrun import dry_run
    from harness.planning import plan_run
    from harness.plugins import get_registries

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    matrix = "SYN-PARK→SYN-STREET,SYN-PARK→SYN-DENSE"  # one source: the second cell finds the first's fit cached
    plan = plan_run(matrix, "dmap-vgg", "0", "smoke", get_registries(), os.environ.get("HARNESS_DATA"))  # as the CLI
    progress = tmp_path / "cache" / "dry-runs"
    first: list[str] = []

    def interrupt_at_the_second_cell(i, n, cell):
        first.append(cell.pair)
        if i == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dry_run(plan, "cpu", on_cell=interrupt_at_the_second_cell)
    assert len(list(progress.glob("*/progress.pickle"))) == 1 and list(progress.glob("*/cache/*"))
    r = subprocess.run([str(Path(sys.executable).parent / "harness"), "run", "--matrix", matrix, "--methods",
                        "dmap-vgg", "--dry-run", "--json", "--device", "cpu",
                        "--out", str(tmp_path / "run")], env=dict(os.environ), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())  # rich wraps lines
    assert "1 of 2 cell(s) measured earlier" in said and f"[2/2] dmap-vgg {first[1]}" in said and "[1/2]" not in said
    assert said.count("on a100 projected") == 1  # each cell's total as it ends
    report = json.loads(r.stdout)
    assert report["cells_measured_earlier"] == 1 and not any(c["error"] for c in report["cells"])
    one, two = ({s["name"]: s for s in c["stages"]} for c in report["cells"])
    assert one["train: dmap map network"]["units_run"] == 2 and one["train: dmap map network"]["flops_per_unit"] > 0
    regressor = "train: dmap count regressor"  # no cost key: borrowed only through the cached fit, as in one run
    assert two[regressor]["reused_from"] == f"dmap-vgg {first[0]}"
    assert two[regressor]["flops_per_unit"] == one[regressor]["flops_per_unit"]
    assert report["dry_run_seconds"] >= sum(c["dry_run_seconds"] for c in report["cells"]) - 0.1  # rounded
    assert not list(progress.iterdir())  # ended: the next dry run measures afresh
    with pytest.raises(KeyboardInterrupt):
        dry_run(plan, "cpu", on_cell=interrupt_at_the_second_cell)
    notices: list[str] = []
    dry_run(plan, "cpu", max_units=1, notify=notices.append)
    assert not any("measured earlier" in n for n in notices)  # 1 unit per stage: not the interrupted 2-unit run


def test_a_report_says_how_it_was_projected_and_an_older_one_says_flops_only():
    """The Markdown table shows each stage's operator calls and the time per call it was projected with; a report
    from before the count (no ``gpu_op_seconds``, no ``ops_per_unit``) is labelled FLOPs only, not with today's rule."""
    from harness.dryrun import markdown, report_from_dict

    stage = {"name": "train: density", "unit": "optimiser step", "params": 10, "peak_bytes": 0, "flops_per_unit": 1e10,
             "seconds_per_unit": 0.5, "units_run": 2, "units": 100, "device_hours": 0.01, "gpu_hours": 1e-4,
             "parent": None, "timed_with_counter": False, "reused_from": None, "precision": None}
    report = {"profile": "paper", "precision": "bf16", "device": "cpu", "gpu": "h100", "efficiency": 0.3, "seeds": 1,
              "max_units": 2, "dry_run_seconds": 1.0,
              "cells": [{"method": "m", "source": "A", "target": "B", "dry_run_seconds": 1.0, "weights": {},
                         "error": None, "stages": [stage]}]}
    old = markdown(report_from_dict(report))
    assert "FLOPs only" in old and "µs per operator call" not in old
    new = report_from_dict({**report, "gpu_op_seconds": GPU_OP_SECONDS,
                            "cells": [{**report["cells"][0], "stages": [{**stage, "ops_per_unit": 835}]}]})
    text = markdown(new)
    assert "at least 20 µs per operator call" in text and "| calls/unit |" in text and "| 835 |" in text
    assert report_from_dict(new.to_dict()).op_seconds == GPU_OP_SECONDS


def test_gpu_calibration_script_refits_the_projection_from_a_dry_run_on_a_gpu(tmp_path):
    """scripts/gpu_calibration.py: per stage the fraction of peak and the µs per operator call a GPU dry run measured,
    the two figures refitted, and measured / projected per method; operator calls may come from a CPU dry run; a
    report not measured on a GPU is refused."""
    import subprocess
    import sys
    from pathlib import Path

    def st(name, flops, secs, ops=None, counter=False):
        return {"name": name, "unit": "step", "params": 1, "peak_bytes": 0, "flops_per_unit": flops,
                "seconds_per_unit": secs, "units_run": 3, "units": 1000, "device_hours": 0, "gpu_hours": 0,
                "parent": None, "timed_with_counter": counter, "reused_from": None, "precision": None,
                "ops_per_unit": ops}

    peak = GPUS["h200"]["bf16"]
    gpu = {"profile": "paper", "precision": "bf16", "device": "cuda", "gpu": "h200", "efficiency": 0.1, "seeds": 1,
           "max_units": 3, "dry_run_seconds": 1.0, "cells": [
               {"method": "big", "source": "A", "target": "B", "dry_run_seconds": 1, "weights": {}, "error": None,
                "stages": [st("train: big", 2e13, 2e13 / (0.2 * peak), ops=100)]},
               {"method": "small", "source": "A", "target": "B", "dry_run_seconds": 1, "weights": {}, "error": None,
                "stages": [st("train: small", 1e10, 0.015)]}]}
    cpu = {**gpu, "device": "cpu", "cells": [{**gpu["cells"][1], "stages": [st("train: small", 1e10, 9.0, ops=1000)]}]}
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    (tmp_path / "cpu.json").write_text(json.dumps(cpu))
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_calibration.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "gpu.json"), "--ops-from",
                        str(tmp_path / "cpu.json")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| big | train: big | 2e+13 | 100 |" in r.stdout and "| 0.200 |" in r.stdout
    assert "| small | train: small | 1e+10 | 1000 | 0.0150 | 0.001 | 15.0 |" in r.stdout
    assert "fraction of peak 0.200–0.200, median 0.200 (1 stages)" in r.stdout
    assert "15.0–15.0 µs per operator call, median 15.0 (1 stages)" in r.stdout
    # small: 1000 units × max(1e10 / (peak × 0.1), 1000 × 20 µs) = 20 s projected against 15 s measured
    assert "| small | 0.004 | 0.006 | 0.75 |" in r.stdout and "| big | 0.028 | 0.056 | 0.50 |" in r.stdout
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "cpu.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not on a GPU" in bad.stderr
