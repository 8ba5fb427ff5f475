"""Annotation arrays as the original files store them: MATLAB v5 files (ShanghaiTech, UCF_CC_50, UCF-QNRF), their
nested structs, head-point arrays cross-checked against the file's own count, and the in-image test of points.
Used by the readers (:mod:`harness.data.readers`, :mod:`harness.data.readers_official_val`)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import DataError

log = logging.getLogger("harness.data")


def load_mat(path: Path) -> dict:
    """``scipy.io.loadmat`` with one-line errors.

    Raises:
        DataError: the file is missing, unreadable, or a MATLAB v7.3 (HDF5) file.
    """
    try:
        return scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DataError(f"annotation file {path} does not exist; re-download the dataset") from None
    except NotImplementedError:
        raise DataError(f"annotation file {path} is a MATLAB v7.3 (HDF5) file, not the original v5 format; "
                        f"re-download the original annotations") from None
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError on garbage
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot read annotation file {path}: {reason}; re-download it") from exc


def _scalar(value) -> int | None:
    """An integer stored in a MATLAB field (``[[61]]``), or None."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return int(arr[0]) if arr.size == 1 and np.isfinite(arr[0]) else None


def _as_points(value, path: Path, where: str, expected: int | None = None) -> np.ndarray:
    """``(N, 2)`` points from an annotation array, cross-checked against the file's own head count.

    ``(N, 2)`` (or ``(N, k > 2)``: the first two columns) is the original layout. An array stored transposed,
    ``(2, M)`` with ``M != 2``, is accepted only when that reading is unambiguous: the file's own count
    ``expected`` (ShanghaiTech's ``number``) equals ``M``. Without a count such an array is refused (2 heads with
    extra columns, or M heads transposed, cannot be told apart).

    Raises:
        DataError: not numeric, a bad shape, a count that contradicts the points, or an ambiguous orientation.
    """
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {where} is not a numeric array; expected (N, 2) x, y head points; "
                        f"re-download the annotations") from None
    if a.size == 0:
        return np.zeros((0, 2), np.float64)
    if a.ndim != 2 or max(a.shape) < 2:
        raise DataError(f"{path}: {where} has shape {a.shape}, expected (N, 2) x, y head points; "
                        f"re-download the annotations")
    rows_ok = a.shape[1] >= 2 and (expected is None or expected == a.shape[0])
    transposed_ok = a.shape[0] == 2 and a.shape[1] != 2 and (expected is None or expected == a.shape[1])
    if a.shape[0] == 2 and a.shape[1] > 2 and expected is None:
        raise DataError(f"{path}: {where} has shape {a.shape}: 2 heads with extra columns, or {a.shape[1]} heads "
                        f"stored transposed? The file has no head count to decide; store it as (N, 2)")
    if transposed_ok and not (rows_ok and a.shape[1] == 2):
        log.warning("%s: %s is stored transposed %s; read as (%d, 2) (the file's count agrees)", path, where,
                    a.shape, a.shape[1])
        return np.ascontiguousarray(a.T[:, :2])
    if rows_ok:
        return np.ascontiguousarray(a[:, :2])
    raise DataError(f"{path}: {where} has shape {a.shape} but the file's head count is {expected}; the annotation "
                    f"is inconsistent: re-download it")


def _dig(obj, key: str, depth: int = 0):
    """Find field ``key`` through MATLAB nesting: (1,1) object arrays holding (1,1) struct arrays."""
    if depth > 8 or not isinstance(obj, np.ndarray) or obj.size == 0:
        return None
    if obj.dtype.names:
        if key in obj.dtype.names:
            return obj.flat[0][key]
        return None
    if obj.dtype == object:
        return _dig(obj.flat[0], key, depth + 1)
    return None


def filter_points(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask ``(N,)`` of the points inside the image: finite and ``0 <= x < W``, ``0 <= y < H``."""
    x, y = points[:, 0], points[:, 1]
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x < width) & (y >= 0) & (y < height)


__all__ = ["load_mat", "filter_points"]
