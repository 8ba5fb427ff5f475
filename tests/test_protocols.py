"""Evaluation protocols on fixtures in the datasets' exact formats: UCF_CC_50's 5-fold protocol (pooled over all 50
images as a target; cross-validation as one cell for UCF50→UCF50), NWPU-Crowd scored on its val split (test labels
withheld), never selecting on the evaluation split, the "eval split" column, and `harness submit`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fixtures_formats import make_nwpu, make_shanghaitech, make_ucf50

from harness.cli import main


def run(tmp_path, *args):
    r = CliRunner().invoke(main, ["run", "--device", "cpu", "--data-root", str(tmp_path / "data"),
                                  "--out", str(tmp_path / "run"), *map(str, args)])
    assert r.exit_code == 0, r.output
    return r


def metrics(tmp_path, method, pair):
    return json.loads((tmp_path / "run" / method / pair / "seed-0" / "metrics.json").read_text())


def predictions(tmp_path, method, pair):
    return pd.read_csv(tmp_path / "run" / method / pair / "seed-0" / "predictions.csv")


@pytest.fixture
def data(tmp_path):
    written = make_ucf50(tmp_path / "data")
    make_shanghaitech(tmp_path / "data", "B", n_train=8, n_test=3)
    nwpu = make_nwpu(tmp_path / "data", {"train": 6, "val": 3, "test": 3})
    counts = {i: len(p) for (_, i), p in written.items()}
    return counts, nwpu


def test_ucf50_target_pooled_and_cross_validation_in_one_cell(tmp_path, data):
    counts, _ = data
    r = run(tmp_path, "--matrix", "SHB→UCF50,UCF50→UCF50", "--methods", "source-mean")
    # a method that never trains on UCF_CC_50: one fit, scored on all 50 images (the pooled 5-fold result)
    m = metrics(tmp_path, "source-mean", "SHB→UCF50")
    assert m["n_images"] == 50 and m["protocol"] == "5-fold pooled" and m["fits"] == ["all"]
    # UCF50→UCF50: 5 fits, each on the other 40 images (train + val), scored on its own 10
    cv = metrics(tmp_path, "source-mean", "UCF50→UCF50")
    assert cv["n_images"] == 50 and cv["fits"] == [f"fold-{k}" for k in range(1, 6)]
    pred = predictions(tmp_path, "source-mean", "UCF50→UCF50")
    assert list(pred["image_id"]) == list(range(1, 51))
    for k in range(1, 6):
        others = [c for i, c in counts.items() if not 10 * k - 9 <= int(i) <= 10 * k]
        fold = pred[(pred["image_id"] >= 10 * k - 9) & (pred["image_id"] <= 10 * k)]
        assert np.allclose(fold["pred_count"], np.mean(others))
    assert cv["mae"] == pytest.approx(np.mean(np.abs(pred["pred_count"] - pred["gt_count"])))
    assert "SHB→UCF50 (5-fold pooled) MAE↓" in r.stdout  # the table says which protocol


def test_nwpu_is_scored_on_val_never_selected_on_it_and_submitted(tmp_path, data):
    _, nwpu = data
    r = run(tmp_path, "--matrix", "SHB→NWPU,NWPU→NWPU", "--methods", "source-mean,zero")
    m = metrics(tmp_path, "zero", "SHB→NWPU")
    assert m["eval_split"] == "val" and m["n_images"] == 3
    assert "eval split" in r.stdout and "SHB→NWPU: val" in r.stdout
    # NWPU→NWPU: the source-mean is fitted on NWPU's train split only (its official val is the evaluation split)
    train_counts = [len(p) for (split, _), p in nwpu.items() if split == "train"]
    mean = metrics(tmp_path, "source-mean", "NWPU→NWPU")["provenance_notes"]["source_mean_count"]
    assert mean == pytest.approx(np.mean(train_counts))
    # test predictions in NWPU-Crowd's formats, for every cell targeting NWPU
    s = CliRunner().invoke(main, ["submit", str(tmp_path / "run"), "--dataset", "NWPU", "--device", "cpu",
                                  "--data-root", str(tmp_path / "data")])
    assert s.exit_code == 0, s.output
    folder = tmp_path / "run" / "submission" / "source-mean" / "SHB→NWPU" / "seed-0"
    lines = (folder / "count.txt").read_text().splitlines()
    test_ids = sorted(i for (split, i) in nwpu if split == "test")
    assert [ln.split()[0] for ln in lines] == test_ids
    shb_mean = metrics(tmp_path, "source-mean", "SHB→NWPU")["provenance_notes"]["source_mean_count"]
    assert all(float(ln.split()[1]) == pytest.approx(shb_mean, abs=1e-3) for ln in lines)
    loc = (folder / "loc.txt").read_text().splitlines()
    assert [ln.split()[:2] for ln in loc] == [[i, "0"] for i in test_ids]  # a count-only method: no points
    bad = CliRunner().invoke(main, ["submit", str(tmp_path / "run"), "--dataset", "SHA"])
    assert bad.exit_code == 2 and "no online-evaluation format for 'SHA'" in bad.output
