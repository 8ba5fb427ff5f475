"""The ``syrac`` strategy end to end through the runner on a few images (ShanghaiTech B→A when HARNESS_DATA is set,
else the built-in synthetic pair), with the tiny random Stable Diffusion and a tiny timm ResNet: no labels reach the
counter, the flags, the pair list, the saved model, count-only predictions that the saved model reproduces, resume,
and ``harness syrac inspect``."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from harness import MethodSpec, Provenance, get_registries, hookimpl
from harness.cli import main
from harness.io import ArtifactCache
from harness.plugins import build_registries
from harness.runner import execute, plan_run
from harness_syrac.config import TINY
from harness_syrac.model import ProbeHead, SyracCounter
from harness_syrac.strategy import load_model

BASE = {**TINY, "max_real_images": 4, "synthetic_per_image": 2, "train": {**TINY["train"], "epochs": 2}}
METHODS = {"syrac-t": {}, "syrac-t-g1": {"grid": 1}, "syrac-t-intra": {"pretrain": "intra-image-rank", "grid": 3},
           "syrac-t-nopre": {"pretrain": "none"}, "syrac-t-src": {"real_images": "source", "grid": 1}}


class TinyMethods:
    @hookimpl
    def harness_register_methods(self, register):
        for name, extra in METHODS.items():
            register(MethodSpec(name, "syrac", {"smoke": {**BASE, **extra}}))


@pytest.fixture(scope="module")
def run_dir(domains, tmp_path_factory):
    source, target, root = domains
    out = tmp_path_factory.mktemp("syrac") / "run"
    regs = build_registries(extra_plugins=[TinyMethods()])
    plan = plan_run(f"{source}→{target}", ",".join(METHODS), "0", "smoke", regs, root, limit_test=2)
    summary = execute(plan, out, "cpu", progress=False, cache=ArtifactCache(out.parent / "cache"))
    assert not summary.failed, summary.failed
    return out, source, target


def cell(out, method, source, target):
    return out / method / f"{source}→{target}" / "seed-0-n2"


def test_no_labels_flags_and_provenance(run_dir):
    out, source, target = run_dir
    for method in METHODS:
        m = json.loads((cell(out, method, source, target) / "metrics.json").read_text())
        assert m["labels_used"] == [] and m["target_labels_seen"] is False and m["provenance"]["trained_on"] == []
        assert m["localises"] is False and m["map"] is None  # count-only: mAP "–"
        notes = m["provenance_notes"]
        assert notes["noisy_count_set"]["n_images"] == 6 and notes["noisy_count_set"]["counts"] == [1, 10]
        assert notes["generator"]["model"] == "tiny" and notes["normalisation"] == "imagenet"
        assert all(c["provenance"]["trained_on"] == [] for c in m["components"])
    flags = {mt: json.loads((cell(out, mt, source, target) / "metrics.json").read_text()) for mt in METHODS}
    assert flags["syrac-t"]["uses_target_images"] is True and flags["syrac-t-intra"]["uses_target_images"] is True
    assert flags["syrac-t-nopre"]["uses_target_images"] is False and flags["syrac-t-src"]["uses_target_images"] is False
    assert flags["syrac-t"]["selection_split"].startswith("synthetic ranking pairs")
    assert flags["syrac-t-nopre"]["selection_split"] == "noisy synthetic counts (held out)"
    assert flags["syrac-t"]["provenance_notes"]["real_images"]["dataset"] == target
    assert flags["syrac-t-src"]["provenance_notes"]["real_images"]["dataset"] == source
    rank = flags["syrac-t"]["provenance_notes"]["rank_pretraining"]
    assert rank["train_pairs"] == 6 and rank["val_pairs"] == 2 and rank["steps"] == 6  # 3 steps × 2 epochs


def test_pairs_model_and_predictions_reproduce(run_dir):
    out, source, target = run_dir
    folder = cell(out, "syrac-t", source, target)
    doc = json.loads((folder / "syrac" / "pairs.json").read_text())
    assert len(doc["pairs"]) == 8 and len({p["seed"] for p in doc["pairs"]}) == 8
    assert all(p["real"].startswith(f"{target}/train/") for p in doc["pairs"])
    assert len(doc["noisy"]) == 6 and sorted({n["count"] for n in doc["noisy"]}) == [0, 1, 10]
    net, state = load_model(folder / "syrac")
    assert (net.head.weight >= 0).all()  # projected after every step
    assert state["grid"] == 2 and state["probe_w"].min() >= 0
    # the saved model reproduces the cell's predictions (patch grid + NNLS probe)
    counter = SyracCounter(ProbeHead(net, state["probe_w"].numpy()), tuple(state["input_size"]), state["grid"],
                           state["normalisation"], provenance=Provenance("test"))
    config = json.loads((folder / "config.json").read_text())
    ds = get_registries().datasets.get(target).factory(Path(config["data_root"]) if config["data_root"] else None)
    refs = {r.id: r for r in ds.samples("test")}
    with open(folder / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for row in rows:
        pred = counter.predict(refs[row["image_id"]].load_image()).count
        assert pred == pytest.approx(float(row["pred_count"]), rel=1e-4, abs=1e-4)
    crops = json.loads((cell(out, "syrac-t-intra", source, target) / "syrac" / "pairs.json").read_text())
    assert all(p["synthetic"].startswith("crop:") for p in crops["pairs"])
    assert json.loads((cell(out, "syrac-t-nopre", source, target) / "syrac" / "pairs.json").read_text())["pairs"] == []


def test_grid_variants_share_one_fit_and_reruns_reuse_everything(run_dir):
    out, source, target = run_dir
    g2, g1 = cell(out, "syrac-t", source, target), cell(out, "syrac-t-g1", source, target)
    logs = [(c / "log.txt").read_text() for c in (g2, g1)]
    assert "syrac rank: step 6/6" in logs[0] and "syrac rank: step" not in logs[1]  # the g1 cell trained nothing
    assert "an identical fit (all options but the grid) is in the cache" in logs[1]
    m2, m1 = (json.loads((c / "metrics.json").read_text()) for c in (g2, g1))
    assert m1["provenance_notes"]["rank_pretraining"] == m2["provenance_notes"]["rank_pretraining"]
    assert m1["provenance_notes"]["fit_reused"] and "fit_reused" not in m2["provenance_notes"]
    (n2, s2), (n1, s1) = load_model(g2 / "syrac"), load_model(g1 / "syrac")
    assert all(torch.equal(v, n1.state_dict()[k]) for k, v in n2.state_dict().items())
    assert (s2["grid"], s1["grid"]) == (2, 1) and m1["mae"] != m2["mae"]

    # a rerun of a cell whose results were deleted generates nothing, trains nothing, predicts the same
    before = (g2 / "predictions.csv").read_text()
    for name in ("metrics.json", "predictions.csv", "predictions.partial.jsonl"):
        (g2 / name).unlink()
    regs = build_registries(extra_plugins=[TinyMethods()])
    root = json.loads((g2 / "config.json").read_text())["data_root"]
    summary = execute(plan_run(f"{source}→{target}", "syrac-t", "0", "smoke", regs, root, limit_test=2), out, "cpu",
                      progress=False, cache=ArtifactCache(out.parent / "cache"))
    assert not summary.failed and len(summary.finished) == 1
    rerun = (g2 / "log.txt").read_text()[len(logs[0]):]
    assert "(0 generated now, 6 cached)" in rerun and "(0 img2img images generated now, 8 cached)" in rerun
    assert "syrac rank: step" not in rerun and "is in the cache: reusing" in rerun
    assert (g2 / "predictions.csv").read_text() == before


def test_inspect_reports(run_dir):
    out, source, target = run_dir
    r = CliRunner().invoke(main, ["syrac", "inspect", str(out), "--limit-test", "4"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    folder = out / "syrac-inspect"
    report = json.loads((folder / "spearman.json").read_text())
    assert len(report["cells"]) == len(METHODS)
    for name, entry in report["cells"].items():
        assert (Path(entry["noisy_sheet"])).stat().st_size > 0
        assert entry["prediction_spearman"]["n"] == 2
        if "nopre" in name:
            assert entry["pairs_sheet"] is None and "rank_score_spearman" not in entry
            continue
        assert Path(entry["pairs_sheet"]).stat().st_size > 0 and Path(entry["scatter"]).stat().st_size > 0
        rho = entry["rank_score_spearman"]
        assert rho["n"] == 4 and (rho["rho"] is None or -1 <= rho["rho"] <= 1)
    assert "rank-score ρ" in r.output
    r = CliRunner().invoke(main, ["syrac", "inspect", str(out / "nothing")])
    assert r.exit_code == 2 and "is not a folder" in r.output
