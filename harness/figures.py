"""Figures for reports and plugin ``inspect`` commands: contact sheets, histograms, scatter and forest plots
(matplotlib, Agg backend).

Every function writes one PNG atomically and returns its path.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_save


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _load(item) -> np.ndarray | None:
    if isinstance(item, np.ndarray):
        return item
    from PIL import Image

    try:
        with Image.open(item) as pic:
            return np.asarray(pic.convert("RGB"))
    except OSError:
        return None


def contact_sheet(items: Sequence[tuple[object, str]], out: str | Path, *, columns: int = 4, title: str = "",
                  wrap: int = 38) -> Path:
    """A grid of images with a caption under each.

    Args:
        items: ``(image, caption)`` pairs; ``image`` is an ``(H, W, 3) uint8`` array, an ``(H, W)`` label map or
            a file path (a missing file shows "image not in cache").
        out: the PNG to write.
        columns: images per row. title: figure title. wrap: caption line width (characters).
    """
    plt = _plt()
    n = len(items)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, caption) in zip(axes.ravel(), items):
        arr = _load(image)
        if arr is None:
            ax.text(0.5, 0.5, "image not in cache", ha="center", va="center")
        else:
            ax.imshow(arr, cmap="tab20" if arr.ndim == 2 else None, interpolation="nearest")
        lines = [line for part in str(caption).split("\n") for line in (textwrap.wrap(part, wrap) or [""])]
        ax.set_title("\n".join(lines[:5]), fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, out)


def histograms(groups: dict[str, Sequence[float]], out: str | Path, *, xlabel: str, ylabel: str = "images",
               bins: int = 20, value_range: tuple[float, float] | None = None, title: str = "") -> Path:
    """Overlaid histograms, one per group (label ``"<group> (n=…)"``); empty groups are left out."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    values = [v for vals in groups.values() for v in vals]
    rng = value_range or ((min(values), max(values)) if values else (0.0, 1.0))
    if rng[0] == rng[1]:
        rng = (rng[0] - 0.5, rng[1] + 0.5)
    for name, vals in sorted(groups.items()):
        if len(vals):
            ax.hist(list(vals), bins=bins, range=rng, alpha=0.55, label=f"{name} (n={len(vals)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if values:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, out)


def scatter(x: Sequence[float], y: Sequence[float], out: str | Path, *, xlabel: str, ylabel: str, title: str = "",
            diagonal: bool = False) -> Path:
    """A scatter plot of ``y`` against ``x`` (with the ``y = x`` line when ``diagonal``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(x, y, s=8, alpha=0.7)
    if diagonal and len(x):
        hi = max(max(x), max(y))
        ax.plot([0, hi], [0, hi], "k--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


def forest(rows: Sequence[tuple[str, float, float | None, float | None]], out: str | Path, *,
           baselines: dict[str, float] | None = None, xlabel: str = "MAE", title: str = "") -> Path:
    """A forest plot: one row per ``(label, value, low, high)`` (a point and its interval, best first), with each
    ``baselines`` value (e.g. ``{"zero": 123.8, "source-mean": 417.6}``) drawn as a labelled vertical line."""
    plt = _plt()
    rows = sorted(rows, key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7.0, 1.1 + 0.38 * max(1, len(rows))))
    for i, (label, v, lo, hi) in enumerate(rows):
        y = len(rows) - 1 - i
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [y, y], color="#1f4e79", linewidth=2)
        ax.plot([v], [y], "o", color="#1f4e79")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in reversed(rows)], fontsize=8)
    styles = ("--", ":", "-.")
    for k, (name, v) in enumerate(sorted((baselines or {}).items())):
        ax.axvline(v, color="#b03a2e", linestyle=styles[k % len(styles)], linewidth=1, label=f"{name} {v:.2f}")
    if baselines:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


def heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], out: str | Path, *, title: str = "",
            xlabel: str = "target", ylabel: str = "source", label: str = "MAE") -> Path:
    """A source × target heat map: ``values`` ``(len(rows), len(cols))`` (NaN: not run, left blank), each square
    annotated with its value; darker is larger (for MAE: worse)."""
    plt = _plt()
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), 1.2 + 0.8 * len(rows)))
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, cmap="Blues", aspect="auto")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.1f}", ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > middle else "black")
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, fontsize=8, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, plt, out)


def _save(fig, plt, out) -> Path:
    out = Path(out)
    try:
        atomic_save(out, lambda p: fig.savefig(p, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out


__all__ = ["contact_sheet", "histograms", "scatter", "forest", "heatmap"]
