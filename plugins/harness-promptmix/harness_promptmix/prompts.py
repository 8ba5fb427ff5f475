"""PromptMix stage 2 (Aarhus report §IV-A-1): prompts from captions, and prompt files (no torch needed).

Each caption is suffixed with the size of the captioned image and whether it is in colour or greyscale, e.g.
``"crowds gather to watch the parade, 1024x768 pixels, colour photo"``. A prompt file (one prompt per line,
``#`` comments) adds prompts to, or replaces, the generated bag.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from harness import DataError


def clean_caption(text: str) -> str:
    """One line, single spaces, no trailing full stop."""
    return " ".join(str(text).split()).rstrip(" .")


def is_greyscale(image: np.ndarray, tolerance: int = 2) -> bool:
    """True when every pixel's R, G and B differ by at most ``tolerance`` (of 255), or the image has one
    channel (ShanghaiTech A has such images)."""
    img = np.asarray(image)
    if img.ndim == 2 or img.shape[-1] == 1:
        return True
    c = img[..., :3].astype(np.int16)
    return bool(np.abs(c[..., 0] - c[..., 1]).max() <= tolerance and np.abs(c[..., 1] - c[..., 2]).max() <= tolerance)


def prompt_suffix(image: np.ndarray) -> str:
    """``", {W}x{H} pixels, colour photo"`` or ``"..., greyscale photo"`` for ``image`` ``(H, W[, C])``."""
    h, w = np.asarray(image).shape[:2]
    return f", {w}x{h} pixels, {'greyscale' if is_greyscale(image) else 'colour'} photo"


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts of a text file: one per line; blank lines and lines starting with ``#`` are skipped.

    Raises:
        DataError: the file cannot be read or holds no prompt.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"prompt file {path} cannot be read ({type(exc).__name__}): pass a UTF-8 text file "
                        f"with one prompt per line") from None
    prompts = [" ".join(line.split()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise DataError(f"prompt file {path} holds no prompt: write one prompt per line (# starts a comment)")
    return prompts
