"""The public run-folder readers (harness.rundir): RunDir / CellDir on every cell state, the typed CellResult, and
the cell's evaluation images by the core's rule (NWPU-style ``eval_split``, the cell's own ``limit_test``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness import CellDir, CellResult, DatasetSpec, RunDir, Sample, SampleRef, hookimpl
from harness.errors import DataError
from harness.io import ArtifactCache
from harness.plugins import build_registries
from harness.runner import execute, plan_run


class ValScored:
    """A dataset whose test labels are withheld: scored on ``val`` (as NWPU-Crowd)."""

    eval_split = "val"

    def __init__(self, root=None):
        self.name, self.root = "VALSCORED", root

    def _load(self, ref):
        i = int(ref.id.split("-")[1])
        return Sample(ref.id, np.full((16, 16, 3), 30 * i, np.uint8), np.array([[4.0, 4.0]] * (i + 1)))

    def samples(self, split):
        n = {"train": 4, "val": 5, "test": 2}[split]
        return [SampleRef(self.name, split, f"{split}-{i}", None, None, self._load, lambda r: self._load(r).image)
                for i in range(n)]


class Plugin:
    @hookimpl
    def harness_register_datasets(self, register):
        register(DatasetSpec("VALSCORED", ValScored, needs_root=False))


REGS = build_registries(extra_plugins=[Plugin()])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    plan = plan_run("SYN-SPARSE→VALSCORED,VALSCORED→VALSCORED", "zero,source-mean", "0", "smoke", REGS, None,
                    limit_test=3)
    summary = execute(plan, out, "cpu", progress=False, cache=ArtifactCache(out / ".cache"))
    assert not summary.failed and len(summary.finished) == 4
    return out


def test_run_dir_lists_cells_and_typed_results(run):
    rd = RunDir(run)
    assert [c.relpath for c in rd.cells()] == sorted(c.relpath for c in rd.cells()) and len(rd.cells()) == 4
    results = rd.results()
    assert all(isinstance(r, CellResult) for r in results)
    zero = next(r for r in results if r.method == "zero" and r.source == "SYN-SPARSE")
    # zero predicts 0: MAE is the mean true count of the first 3 val images (1, 2, 3 heads)
    assert zero.mae == pytest.approx(2.0) and zero.n_images == 3 and zero.eval_split == "val"
    assert zero.mse == pytest.approx(np.sqrt((1 + 4 + 9) / 3)) and zero.limit_test == 3
    assert zero.path == run / "zero" / "SYN-SPARSE→VALSCORED" / "seed-0-n3"
    assert zero.raw["method"] == "zero" and zero.nae == pytest.approx(1.0)  # |0 - n| / n


def test_cell_dir_eval_refs_follow_the_core_rule(run):
    cell = CellDir(run / "zero" / "SYN-SPARSE→VALSCORED" / "seed-0-n3")
    refs = cell.eval_refs(registries=REGS)
    assert [r.id for r in refs] == ["val-0", "val-1", "val-2"]  # eval_split val, the cell's own limit_test
    assert [r.id for r in cell.eval_refs(registries=REGS, limit_test=5)] == [f"val-{i}" for i in range(5)]
    assert cell.config()["target"] == "VALSCORED" and cell.state() == ("done", "")


def test_every_cell_state_through_cell_dir(run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    rd = RunDir(copy)
    done, damaged, unfinished = rd.cells()[:3]
    (damaged.path / "predictions.csv").write_text("image_id,gt_count,pred_count,abs_error\n")
    (unfinished.path / "metrics.json").unlink()
    assert done.state() == ("done", "")
    assert damaged.state()[0] == "damaged" and "predictions.csv" in damaged.state()[1]
    assert unfinished.state() == ("unfinished", "")
    with pytest.raises(DataError, match="has not finished"):
        unfinished.result()
    with pytest.raises(DataError, match="--force"):
        damaged.result()
    with pytest.raises(DataError, match="1 damaged cell"):
        rd.results()
    assert len(rd.finished()) == 3 and len(rd.damaged()) == 1
    (done.path / "config.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a JSON object"):
        done.config()


def test_run_dir_of_strategy_and_missing_folder(run, tmp_path):
    assert len(RunDir(run).of_strategy("constant")) == 4 and RunDir(run).of_strategy("ldm") == []
    with pytest.raises(DataError, match="not a folder"):
        RunDir(tmp_path / "nothing")
    cfg = json.loads((RunDir(run).cells()[0].path / "config.json").read_text())
    assert cfg["strategy"] == "constant"
