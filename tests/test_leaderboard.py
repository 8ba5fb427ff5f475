"""Leaderboard: collect finished cells, mean ± std over seeds (checked by hand), flags, every format."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import ConfigError, DataError
from harness.leaderboard import FORMATS, LEGEND_MSE, collect, leaderboard, notes, render


def _cell(root: Path, method, src, tgt, seed, mae, mse, nae, mAP, *, seen=False, uses=False, split="val",
          limit=None):
    d = root / method / f"{src}→{tgt}" / (f"seed-{seed}" + (f"-n{limit}" if limit else ""))
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"method": method, "source": src, "target": tgt, "seed": seed}))
    (d / "predictions.csv").write_text("image_id,gt_count,pred_count,abs_error\n" + "".join(
        f"i{k},10,{10 + mae},{mae}\n" for k in range(3)))
    (d / "metrics.json").write_text(json.dumps({
        "method": method, "source": src, "target": tgt, "seed": seed, "limit_test": limit, "profile": "smoke",
        "mae": mae, "mse": mse, "nae": nae, "map": mAP, "n_images": 3, "target_labels_seen": seen,
        "uses_target_images": uses, "selection_split": split, "duration_s": 1.0, "r": None}))


def _v(text):
    """A board entry without its bootstrap interval (the fixture's per-image errors are constant: [x, x])."""
    return re.sub(r" \[[^\]]*\]", "", text) if isinstance(text, str) else text


@pytest.fixture()
def run_dir(tmp_path):
    _cell(tmp_path, "alpha", "SHA", "SHB", 0, 10.0, 20.0, 0.1, 0.5)
    _cell(tmp_path, "alpha", "SHA", "SHB", 1, 14.0, 30.0, 0.2, 0.7)
    _cell(tmp_path, "alpha", "SHB", "SHA", 0, 100.0, 150.0, 0.5, None)
    _cell(tmp_path, "beta", "SHA", "SHB", 0, 8.0, 12.5, 0.05, 0.9, seen=True, uses=True, split="none")
    _cell(tmp_path, "beta", "SHA", "SHB", 0, 9.0, 13.0, 0.06, 0.8, limit=2)
    failed = tmp_path / "beta" / "SHB→SHA" / "seed-0"
    failed.mkdir(parents=True)
    (failed / "error.json").write_text(json.dumps({"type": "ValueError", "message": "boom"}))
    return tmp_path


def test_collect_one_row_per_finished_cell(run_dir):
    df = collect(run_dir)
    assert len(df) == 5  # the failed cell (error.json only) is not a row
    assert set(df["cell"]) == {"SHA→SHB", "SHB→SHA"}
    assert df.loc[(df.method == "alpha") & (df.cell == "SHA→SHB"), "mae"].tolist() == [10.0, 14.0]


def test_mean_std_over_seeds_by_hand(run_dir):
    board = leaderboard(collect(run_dir)).set_index("method").map(_v)
    # alpha SHA→SHB: MAE 10, 14 -> mean 12, sample std sqrt(((-2)² + 2²) / 1) = sqrt(8) = 2.83
    assert board.loc["alpha", "SHA→SHB MAE↓"] == "12.00 ± 2.83"
    # MSE 20, 30 -> 25 ± sqrt(50) = 7.07; NAE 0.1, 0.2 -> 0.150 ± 0.071; mAP 0.5, 0.7 -> 0.600 ± 0.141
    assert board.loc["alpha", "SHA→SHB MSE↓"] == "25.00 ± 7.07"
    assert board.loc["alpha", "SHA→SHB NAE↓"] == "0.150 ± 0.071"
    assert board.loc["alpha", "SHA→SHB mAP↑"] == "0.600 ± 0.141"
    # one seed: the value alone; no localisation -> dash
    assert board.loc["alpha", "SHB→SHA MAE↓"] == "100.00"
    assert board.loc["alpha", "SHB→SHA mAP↑"] == "–"
    # target labels seen -> dagger; beta has no SHB→SHA result (it failed)
    assert board.loc["beta", "SHA→SHB MAE↓"] == "8.00 †"
    assert board.loc["beta", "SHB→SHA MAE↓"] == "–"
    # a limited cell is its own column
    assert board.loc["beta", "SHA→SHB [n=2] MAE↓"] == "9.00"
    assert board.loc["alpha", "SHA→SHB [n=2] MAE↓"] == "–"
    assert board.loc["alpha", "seeds"] == "0,1" and board.loc["beta", "seeds"] == "0"
    assert board.loc["alpha", "uses target images"] == "no" and board.loc["beta", "uses target images"] == "yes"
    assert board.loc["alpha", "selection split"] == "val"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(run_dir, fmt):
    board = leaderboard(collect(run_dir))
    text = render(board, fmt)
    if fmt == "md":
        assert text.splitlines()[0].startswith("| method")
        assert "12.00 ± 2.83" in text and LEGEND_MSE in text and "† target labels seen" in text
        assert "[n=N]: evaluated on the first N test images only" in text
        assert "| 100.00 " in text and "| 0.500 " in text  # decimals kept (no number re-parsing)
    elif fmt == "csv":
        back = pd.read_csv(__import__("io").StringIO(text))
        assert _v(back.loc[back.method == "alpha", "SHA→SHB MAE↓"].item()) == "12.00 ± 2.83"
    elif fmt == "json":
        data = json.loads(text)
        assert _v(data["rows"][0]["SHA→SHB MAE↓"]) == "12.00 ± 2.83" and LEGEND_MSE in data["notes"]
    elif fmt == "latex":
        assert r"\begin{tabular}" in text and r"\toprule" in text
        assert r"12.00 $\pm$ 2.83" in text and r"SHA$\to$SHB MAE$\downarrow$" in text
        assert r"8.00 $^\dagger$" in _v(text) and "±" not in text and "→" not in text
    elif fmt == "html":
        assert "<table" in text and "<td>12.00 ± 2.83 [12.00, 12.00]</td>" in text and LEGEND_MSE in text


def test_latex_escapes_special_characters(tmp_path):
    _cell(tmp_path, "my_method&co", "SHA", "SHB", 0, 1.0, 1.0, 0.1, 0.5)
    text = render(leaderboard(collect(tmp_path)), "latex")
    assert r"my\_method\&co" in text


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="not found"):
        collect(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown leaderboard format 'xls'"):
        render(pd.DataFrame({"method": []}), "xls")
    bad = tmp_path / "m" / "A→B" / "seed-0"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text("{")
    with pytest.raises(DataError, match="metrics.json is unreadable"):
        collect(tmp_path)
    assert "(no finished cells)" in render(leaderboard(collect(tmp_path / "m" / "A→B")), "md")


def test_per_output_metrics_get_their_own_columns(tmp_path):
    """Counters with several outputs (e.g. RDBT's regression and detection) show MAE/MSE per output; rows
    without an output show a dash; tables without any keep their columns."""
    _cell(tmp_path, "two-heads", "SHA", "SHB", 0, 10.0, 20.0, 0.1, 0.5)
    _cell(tmp_path, "one-head", "SHA", "SHB", 0, 12.0, 22.0, 0.1, None)
    for method, extra in (("two-heads", {"mae:regression": 10.0, "mse:regression": 20.0,
                                         "mae:detection": 31.5, "mse:detection": 40.25}),
                          ("one-head", {"mae:regression": 12.0, "mse:regression": 22.0})):
        path = tmp_path / method / "SHA→SHB" / "seed-0" / "metrics.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    board = leaderboard(collect(tmp_path)).set_index("method")
    assert board.loc["two-heads", "SHA→SHB MAE↓ detection"] == "31.50"
    assert board.loc["two-heads", "SHA→SHB MSE↓ detection"] == "40.25"
    assert board.loc["one-head", "SHA→SHB MAE↓ detection"] == "–"
    assert board.loc["one-head", "SHA→SHB MAE↓ regression"] == "12.00"
    cols = list(board.columns)
    assert (cols.index("SHA→SHB mAP↑") < cols.index("SHA→SHB MAE↓ detection")
            < cols.index("SHA→SHB MSE↓ detection"))


def test_tables_without_output_metrics_are_unchanged(run_dir):
    assert not any("↓ " in c for c in leaderboard(collect(run_dir)).columns)


def test_in_domain_cells_are_marked_in_the_header_and_the_legend(tmp_path):
    _cell(tmp_path, "m", "SHA", "SHA", 0, 5.0, 6.0, 0.1, None)
    _cell(tmp_path, "m", "SHA", "SHB", 0, 7.0, 8.0, 0.1, None)
    board = leaderboard(collect(tmp_path))
    assert "SHA→SHA (in-domain) MAE↓" in board.columns and "SHA→SHB MAE↓" in board.columns
    assert any(line.startswith("in-domain:") for line in notes(board))
    cross = leaderboard(collect(tmp_path)[lambda d: d.cell == "SHA→SHB"])
    assert not any(line.startswith("in-domain:") for line in notes(cross))
