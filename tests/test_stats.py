"""Paired bootstrap intervals and comparisons (harness.stats), and how the leaderboard and `harness compare`
show them beside the trivial baselines."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.leaderboard import LEGEND_DDAGGER, collect, compare, leaderboard, render
from harness.stats import bootstrap_mae_mse, compare_mae


def test_interval_covers_the_statistic_and_shrinks_with_more_images():
    rng = np.random.default_rng(0)
    small, large = rng.normal(3, 10, 30), rng.normal(3, 10, 3000)
    mae_s, mse_s = bootstrap_mae_mse(small)
    mae_l, _ = bootstrap_mae_mse(large)
    assert mae_s.low < np.abs(small).mean() < mae_s.high and mse_s.low < np.sqrt((small ** 2).mean()) < mse_s.high
    assert (mae_l.high - mae_l.low) < (mae_s.high - mae_s.low) / 5  # ~ 1/sqrt(n)
    assert bootstrap_mae_mse(small) == bootstrap_mae_mse(small)  # seeded: reproducible
    # constant errors: no spread at all
    const, _ = bootstrap_mae_mse(np.full(10, -2.0))
    assert const.low == const.high == 2.0


def test_paired_comparison_sees_a_consistent_small_difference():
    rng = np.random.default_rng(1)
    base = np.abs(rng.normal(0, 50, 200))  # images vary a lot ...
    a, b = base, base + 1.0  # ... but A is better by exactly 1 on every image
    c = compare_mae(a, b)
    assert c.diff == pytest.approx(-1.0) and c.interval.low == pytest.approx(-1.0) and c.interval.high == pytest.approx(-1.0)
    assert c.p_a_better == 1.0
    shuffled = compare_mae(a, rng.permutation(b))  # unpaired noise: the interval is wide and straddles the mean
    assert shuffled.interval.high - shuffled.interval.low > 5
    with pytest.raises(ValueError, match="same images"):
        compare_mae(a, b[:10])


def _cell(root: Path, method, pair, seed, preds, gts, limit=None):
    d = root / method / pair / (f"seed-{seed}" + (f"-n{limit}" if limit else ""))
    d.mkdir(parents=True)
    err = np.asarray(preds, float) - np.asarray(gts, float)
    pd.DataFrame({"image_id": [f"i{k}" for k in range(len(gts))], "gt_count": gts, "pred_count": preds,
                  "abs_error": np.abs(err)}).to_csv(d / "predictions.csv", index=False)
    src, tgt = pair.split("→")
    (d / "config.json").write_text(json.dumps({"method": method, "source": src, "target": tgt, "seed": seed}))
    (d / "metrics.json").write_text(json.dumps({
        "method": method, "source": src, "target": tgt, "seed": seed, "limit_test": limit, "mae": float(np.abs(err).mean()),
        "mse": float(np.sqrt((err ** 2).mean())), "nae": None, "map": None, "n_images": len(gts),
        "target_labels_seen": False, "uses_target_images": False, "selection_split": "x",
        "labels_used": [] if method == "label-free" else [src]}))


@pytest.fixture
def run_dir(tmp_path):
    gts = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    _cell(tmp_path, "source-mean", "A→B", 0, [35.0] * 6, gts)
    _cell(tmp_path, "zero", "A→B", 0, [0.0] * 6, gts)
    _cell(tmp_path, "good", "A→B", 0, [12.0, 18.0, 33.0, 41.0, 48.0, 63.0], gts)
    _cell(tmp_path, "good", "A→B", 1, [11.0, 21.0, 29.0, 44.0, 52.0, 57.0], gts)
    _cell(tmp_path, "label-free", "A→B", 0, [60.0, 10.0, 70.0, 0.0, 90.0, 5.0], gts)
    # source-mean MAE 15.0 beats zero's 35.0 here; on B→A zero (MAE 5.0) is the better trivial baseline
    gts_b = [5.0] * 6
    _cell(tmp_path, "source-mean", "B→A", 0, [35.0] * 6, gts_b)
    _cell(tmp_path, "zero", "B→A", 0, [0.0] * 6, gts_b)
    _cell(tmp_path, "good", "B→A", 0, [9.0] * 6, gts_b)  # MAE 4.0: beats both
    _cell(tmp_path, "label-free", "B→A", 0, [15.0] * 6, gts_b)  # MAE 10.0: beats source-mean (30.0), not zero
    return tmp_path


def test_leaderboard_marks_rows_that_do_not_beat_both_trivial_baselines_and_shows_intervals(run_dir):
    board = leaderboard(collect(run_dir)).set_index("method")
    good = board.loc["good", "A→B MAE↓"]
    assert good.startswith("2.08 ± 0.12 [") and "‡" not in good  # MAE 13/6 and 12/6 over seeds 0, 1
    assert board.loc["label-free", "A→B MAE↓"].endswith("‡")  # MAE 36.7 >= source-mean's 15.0
    assert board.loc["label-free", "B→A MAE↓"].endswith("‡")  # MAE 10.0 < source-mean's 30.0 but >= zero's 5.0
    assert "‡" not in board.loc["good", "B→A MAE↓"]
    assert not any("‡" in board.loc[b, c] for b in ("zero", "source-mean") for c in ("A→B MAE↓", "B→A MAE↓"))
    lo, hi = (float(x) for x in board.loc["good", "A→B MSE↓"].split("[")[1].rstrip("]").split(","))
    assert lo <= (np.sqrt(31 / 6) + np.sqrt(32 / 6)) / 2 <= hi
    assert board.loc["label-free", "labels used"] == "none" and board.loc["good", "labels used"] == "source"
    text = render(board.reset_index(), "md")
    assert LEGEND_DDAGGER in text and "bootstrap" in text


def test_compare_command(run_dir):
    table = compare(collect(run_dir), "good", "source-mean").iloc[0]
    assert table["seeds"] == "0" and table["images"] == 6 and table["P(A better)"] == "1.000"
    assert float(table["A − B"]) == pytest.approx(13 / 6 - 15.0, abs=0.005)  # |errors| 2,2,3,1,2,3 vs 25,15,5,5,15,25
    r = CliRunner().invoke(main, ["compare", str(run_dir), "label-free", "good"])
    assert r.exit_code == 0 and "| A→B " in r.output and "A − B < 0: A has the lower MAE" in r.output
    r = CliRunner().invoke(main, ["compare", str(run_dir), "good", "nope"])
    assert r.exit_code == 2 and "method 'nope' has no finished cell" in r.output


def test_compare_pairs_limited_cells_with_limited_cells(tmp_path):
    """Runs made with --limit-test are compared cell by cell at the same limit (they used to be skipped and the
    command then said the methods share no cell)."""
    gts = [10.0, 20.0, 30.0]
    _cell(tmp_path, "a", "A→B", 0, [11.0, 19.0, 31.0], gts, limit=3)
    _cell(tmp_path, "b", "A→B", 0, [0.0, 0.0, 0.0], gts, limit=3)
    table = compare(collect(tmp_path), "a", "b")
    assert list(table["cell"]) == ["A→B [n=3]"] and table.iloc[0]["images"] == 3
    assert float(table.iloc[0]["A − B"]) == pytest.approx(1.0 - 20.0, abs=0.005)
