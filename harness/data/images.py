"""Reading crowd images as ``(H, W, 3) uint8`` RGB with Pillow.

Every image the harness sees goes through :func:`read_image`, whatever its stored mode: grayscale (``L``,
``1``), palette (``P``), alpha (``RGBA``/``LA``/``PA``: alpha dropped, not composited), ``CMYK``, ``YCbCr``,
and 16/32-bit integer or float single-channel images (``I;16*``, ``I``, ``F``: scaled to 8 bit, see
:func:`_to_uint8`) all become RGB uint8.

EXIF orientation is deliberately **not** applied: the point annotations of every crowd-counting dataset are
in *stored-pixel* coordinates (the pixel grid as written in the file), so rotating the image would move it
away from its labels.

Corrupt and truncated files raise :class:`harness.errors.DataError`; truncated JPEGs are never silently
padded with grey (Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is held ``False`` while an image decodes).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import DataError

__all__ = ["read_image", "read_image_with_meta", "image_size"]

_TRUNCATION_LOCK = threading.Lock()

#: the largest image decoded, in pixels (20000 × 20000): large crowd photographs (10 000 × 10 000 and more) are read
#: without Pillow's decompression-bomb warning; a larger file is refused in one line
MAX_IMAGE_PIXELS = 400_000_000

#: single-channel modes holding more than 8 bits per pixel
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "I;32", "F")


@contextmanager
def _strict_decoding():
    """Hold ``ImageFile.LOAD_TRUNCATED_IMAGES = False`` while decoding (restored afterwards), so that a
    truncated file raises instead of decoding to a grey-padded image even if another library flipped it; and
    Pillow's pixel limit at :data:`MAX_IMAGE_PIXELS`, its decompression-bomb warning raised (then reported in one
    line by the caller) instead of printed."""
    import warnings

    with _TRUNCATION_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved, limit = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, MAX_IMAGE_PIXELS
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = saved, limit


def _bad_image(path: Path, exc: BaseException) -> DataError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DataError(f"cannot read image {path}: {reason} (corrupt or truncated file?); "
                     f"re-download the dataset file or remove it")


def _to_uint8(img: Image.Image) -> np.ndarray:
    """A single-channel high-bit-depth image as ``(H, W) uint8``, scaled (not clipped) to 0..255.

    - ``I;16*`` (16-bit PNG/TIFF): ``round(v * 255 / 65535)``, the full 16-bit range maps to 0..255.
    - ``I`` (32-bit signed): Pillow opens 16-bit PNGs as ``I`` in some versions, so values within
      0..65535 are scaled as 16-bit; a wider range is min-max scaled.
    - ``F`` (float): values within 0..1 are scaled by 255, within 0..65535 as 16-bit, else min-max.
    """
    a = np.asarray(img)
    if a.dtype.kind == "u" or a.dtype.kind == "i":
        a = a.astype(np.int64)
        if img.mode.startswith("I;16") or (a.size == 0 or (a.min() >= 0 and a.max() <= 65535)):
            return ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        lo, hi = int(a.min()), int(a.max())
        return np.round((a - lo) * (255.0 / max(hi - lo, 1))).astype(np.uint8)
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if finite.size == 0:
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0 and hi <= 1:
        return np.round(a * 255).astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.round(a * (255.0 / 65535)).astype(np.uint8)
    return np.round(np.clip((a - lo) * (255.0 / max(hi - lo, 1e-12)), 0, 255)).astype(np.uint8)


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in _HIGH_BIT_MODES:
        gray = _to_uint8(img)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        # palette images with a transparent index: go through RGBA (then drop alpha) to avoid Pillow's warning
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_image_with_meta(path: str | Path) -> tuple[np.ndarray, dict]:
    """Read an image as RGB uint8, with what it was before conversion.

    Args:
        path: image file (JPEG, PNG, ...).

    Returns:
        ``(image, meta)``: ``image`` is ``(H, W, 3) uint8`` RGB in stored-pixel orientation (EXIF orientation
        is not applied: annotations are in stored-pixel coordinates); ``meta`` has ``original_mode`` (the
        Pillow mode, e.g. ``"L"``, ``"RGBA"``, ``"I;16"``), ``original_size`` ``(H, W)`` and ``format``.

    Raises:
        DataError: the file is missing, not an image, corrupt or truncated (one line naming the file).
    """
    path = Path(path)
    try:
        with _strict_decoding():
            with Image.open(path) as img:
                img.load()
                meta = {"original_mode": img.mode, "original_size": (img.height, img.width),
                        "format": img.format}
                image = _to_rgb(img)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist; check the data root or re-download the "
                        f"dataset") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {path} has more than {MAX_IMAGE_PIXELS:,} pixels (the harness's limit; a "
                        f"decompression bomb?): shrink it or remove it") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _bad_image(path, exc) from exc
    return image, meta


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``(H, W, 3) uint8`` RGB (see :func:`read_image_with_meta`).

    Raises:
        DataError: the file is missing, corrupt or truncated.
    """
    return read_image_with_meta(path)[0]


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image from its header, without decoding the pixels (stored-pixel orientation).

    Raises:
        DataError: the file is missing or not a readable image.
    """
    path = Path(path)
    try:
        with _strict_decoding(), Image.open(path) as img:
            return img.height, img.width
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {path} has more than {MAX_IMAGE_PIXELS:,} pixels (the harness's limit; a "
                        f"decompression bomb?): shrink it or remove it") from None
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist; check the data root or re-download the "
                        f"dataset") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _bad_image(path, exc) from exc
