"""What a reliability drill found, each case reproduced: unwritable or full output, stale runs across data roots,
file modes, and the run log. (Readers, predictions, seeds and plugin exits have their tests beside their code.)"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from click.testing import CliRunner

import harness.io
from harness.cli import main
from harness.io import atomic_write_json, atomic_write_text

FAST = ["--matrix", "SYN-SPARSE→SYN-DENSE", "--methods", "zero,source-mean", "--device", "cpu", "--limit-test", "3"]


def invoke(*args, **kw):
    return CliRunner().invoke(main, [str(a) for a in args], **kw)


def one_line_error(r, *fragments):
    """Exit 2, no traceback, and the error is one ``Error:`` line (the last line of stderr)."""
    lines = r.stderr.strip().splitlines()
    err = lines[-1] if lines else ""
    assert r.exit_code == 2 and err.startswith("Error: ") and "Traceback" not in r.output, r.output
    assert sum(line.startswith("Error") for line in lines) == 1
    for f in fragments:
        assert f in err, (f, err)


def test_out_below_a_file_is_one_line_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = invoke("run", *FAST, "--out", tmp_path / "afile" / "run")
    one_line_error(r, f"--out {tmp_path / 'afile' / 'run'} is below {tmp_path / 'afile'}", "a file, not a folder")
    assert not list(tmp_path.glob("afile*/**"))


def test_unwritable_out_is_one_line(tmp_path, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path and mode & os.W_OK
                        else real(p, mode))
    r = invoke("run", *FAST, "--out", tmp_path / "run")
    one_line_error(r, f"--out {tmp_path / 'run'} is not writable (its parent {tmp_path} exists)")


def test_count_prints_counts_even_when_out_is_unwritable(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import harness.plugins
    from harness import CounterSpec, Prediction, Provenance, hookimpl
    from harness.plugins import build_registries

    class Flat:
        name, provenance = "flat", Provenance("x")

        def predict(self, image):
            return Prediction(count=3.0, density=np.full((3, 4), 0.25, np.float32))

    class P:
        @hookimpl
        def harness_register_counters(self, register):
            register(CounterSpec("flat", lambda device="cpu": Flat()))

    monkeypatch.setattr(harness.plugins, "_REGISTRIES", build_registries(extra_plugins=[P()]))
    Image.new("RGB", (40, 30)).save(tmp_path / "crowd.png")
    (tmp_path / "afile").write_text("x")
    r = invoke("count", tmp_path / "crowd.png", "--counter", "flat", "--device", "cpu", "--out", tmp_path / "afile/viz")
    assert r.exit_code == 0 and r.stdout == f"{tmp_path / 'crowd.png'}\t3.0\n"
    assert "Warning: --out" in r.stderr and "printing counts without overlays" in r.stderr


def test_leaderboard_to_a_read_only_place_is_one_line(tmp_path, monkeypatch):
    assert invoke("run", *FAST, "--out", tmp_path / "run").exit_code == 0
    (tmp_path / "afile").write_text("x")
    r = invoke("leaderboard", tmp_path / "run", "-o", tmp_path / "afile" / "board.md")
    one_line_error(r, "the folder of -o", "is a file, not a folder")
    ro = tmp_path / "ro.md"
    ro.write_text("old")
    monkeypatch.setattr(os, "access", lambda p, mode: not (Path(p) == ro and mode & os.W_OK))
    r = invoke("leaderboard", tmp_path / "run", "-o", ro)
    one_line_error(r, f"-o {ro} is read-only")


def test_read_only_finished_run_prints_its_leaderboard(tmp_path, monkeypatch):
    assert invoke("run", *FAST, "--out", tmp_path / "run").exit_code == 0
    real = harness.io.atomic_write_bytes

    def read_only(path, data):
        if Path(path).is_relative_to(tmp_path / "run"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, data)

    monkeypatch.setattr(harness.io, "atomic_write_bytes", read_only)
    monkeypatch.setattr(os, "access", lambda p, mode: not (Path(p).is_relative_to(tmp_path / "run")
                                                           and mode & os.W_OK))
    r = invoke("run", *FAST, "--out", tmp_path / "run")
    assert r.exit_code == 0 and "| source-mean" in r.stdout and "already done 2" in r.stderr
    assert "could not write" in r.stderr and "leaderboard is printed below" in r.stderr


def test_disk_full_is_one_line_and_keeps_finished_cells(tmp_path, monkeypatch):
    real = harness.io.atomic_write_bytes
    writes = []

    def filling_up(path, data):
        if Path(path).name == "metrics.json":
            writes.append(path)
            if len(writes) == 2:  # the disk fills up while the second cell finishes
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(harness.io, "atomic_write_bytes", filling_up)
    r = invoke("run", *FAST, "--out", tmp_path / "run")
    one_line_error(r, "disk full while writing", "metrics.json", "MiB free", "run the same command again")
    done = sorted(p.parent.parent.parent.name for p in (tmp_path / "run").rglob("metrics.json"))
    assert done == ["source-mean"] or done == ["zero"]
    monkeypatch.setattr(harness.io, "atomic_write_bytes", real)
    r = invoke("run", *FAST, "--out", tmp_path / "run")  # after freeing space: resumes
    assert r.exit_code == 0 and "finished 1, already done 1" in r.stderr


def test_a_run_made_from_another_data_root_is_refused_or_recomputed_with_force(tmp_path):
    from fixtures_formats import make_shanghaitech

    a, b = tmp_path / "data-a", tmp_path / "data-b"
    make_shanghaitech(a, "B", n_train=6, n_test=3)
    make_shanghaitech(b, "B", n_train=6, n_test=3, counts={("test", 1): 5})
    args = ["run", "--matrix", "SHB→SHB", "--methods", "zero", "--device", "cpu", "--out", tmp_path / "run"]
    assert invoke(*args, "--data-root", a).exit_code == 0
    r = invoke(*args, "--data-root", b)
    one_line_error(r, "was run with a different data_root, data_content", "--force")
    cell = tmp_path / "run/zero/SHB→SHB/seed-0"
    first = json.loads((cell / "metrics.json").read_text())
    # copying the data (new modification times, same bytes) keeps the finished cells
    for f in a.rglob("*"):
        os.utime(f, (f.stat().st_atime + 3600, f.stat().st_mtime + 3600))
    r = invoke(*args, "--data-root", a)
    assert r.exit_code == 0 and "already done 1" in r.stderr
    # the same root with a changed file is caught (image sizes, annotation bytes)
    (a / "ShanghaiTech/part_B/test_data/images/IMG_2.jpg").write_bytes(
        (b / "ShanghaiTech/part_B/test_data/images/IMG_1.jpg").read_bytes())
    one_line_error(invoke(*args, "--data-root", a), "a different data_content")
    (a / "ShanghaiTech/part_B/test_data/images/IMG_2.jpg").write_bytes(
        (b / "ShanghaiTech/part_B/test_data/images/IMG_2.jpg").read_bytes())
    mat = a / "ShanghaiTech/part_B/test_data/ground-truth/GT_IMG_1.mat"
    mat.write_bytes((b / "ShanghaiTech/part_B/test_data/ground-truth/GT_IMG_1.mat").read_bytes())
    one_line_error(invoke(*args, "--data-root", a), "a different data_content")  # an edited annotation
    r = invoke(*args, "--data-root", b, "--force")
    assert r.exit_code == 0 and "moved a cell of another configuration aside" in r.stderr
    assert json.loads((cell / "metrics.json").read_text())["mae"] != first["mae"]
    assert len(list((tmp_path / "run/zero/SHB→SHB").glob("seed-0.replaced-*"))) == 1  # nothing deleted


def test_result_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {})
        harness.io.atomic_save(tmp_path / "c.bin", lambda p: p.write_bytes(b"x"))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        assert modes == {"a.txt": 0o644, "b.json": 0o644, "c.bin": 0o644}
        os.umask(0o077)
        atomic_write_text(tmp_path / "d.txt", "x")
        assert stat.S_IMODE((tmp_path / "d.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_dropped_points_are_written_to_the_cell_log(tmp_path):
    import numpy as np
    from fixtures_formats import H, W, make_shanghaitech, write_shanghaitech_mat

    make_shanghaitech(tmp_path / "data", "B", n_train=6, n_test=3)
    write_shanghaitech_mat(tmp_path / "data/ShanghaiTech/part_B/test_data/ground-truth/GT_IMG_2.mat",
                           np.array([[1.0, 1.0], [W + 5, 2.0], [3.0, H + 1]]))
    r = invoke("run", "--matrix", "SHB→SHB", "--methods", "zero", "--device", "cpu", "--out", tmp_path / "run",
               "--data-root", tmp_path / "data")
    assert r.exit_code == 0
    log = (tmp_path / "run/zero/SHB→SHB/seed-0/log.txt").read_text()
    assert "IMG_2: dropped 2 of 3 annotated points" in log and "2 annotated points outside their images" in log


def test_seeds_out_of_range_are_refused_up_front(tmp_path):
    """--seeds 99999999999999999999 passed planning then overflowed in the cell; --seeds -1 made seed--1."""
    r = invoke("run", *FAST, "--seeds", "99999999999999999999,-1,x", "--out", tmp_path / "run")
    one_line_error(r, "seed 99999999999999999999 is out of range", "seed -1 is out of range",
                   "seed 'x' is not an integer", "0 <= seed < 2**32")
    assert not (tmp_path / "run").exists()
    assert invoke("run", *FAST, "--seeds", str(2**32 - 1), "--out", tmp_path / "run").exit_code == 0
