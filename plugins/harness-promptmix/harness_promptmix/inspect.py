"""``harness promptmix inspect RUN_DIR``: a contact sheet of synthetic images (prompt, pseudo-counts per
annotator, q) and a histogram of q per source dataset (the Aarhus report's Fig. 6), from the
``synthetic.json`` files that the ``promptmix`` strategy writes into each cell folder.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click
import numpy as np

from harness.errors import DataError

from .annotation import q_stats


def find_pools(run_dir: Path) -> list[Path]:
    """Every ``synthetic.json`` under ``run_dir`` (sorted).

    Raises:
        DataError: ``run_dir`` does not exist or holds none (one line naming it and the fix).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a folder: pass the --out folder of a `harness run` with promptmix methods")
    pools = sorted(run_dir.rglob("synthetic.json"))
    if not pools:
        raise DataError(f"{run_dir} holds no synthetic.json: run a promptmix method with r_mix > 0 into it first")
    return pools


def load_images(pools: list[Path]) -> dict[str, list[dict]]:
    """Synthetic images per group ``"<captioned dataset> captions (<annotators>, <distance>)"``, each image
    once per group (cells whose prompts come from the same images and that share annotators share images and
    q)."""
    groups: dict[str, dict[str, dict]] = {}
    for p in pools:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            names = "+".join(a["counter"] for a in doc["annotators"])
            captioned = doc["source"] if doc.get("caption_from", "source") == "source" else doc["target"]
            group = f"{captioned} captions ({names}, {doc['quality_distance']})"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{p} cannot be read ({type(exc).__name__}): re-run its cell to rewrite it") from None
        for im in doc.get("images", []):
            groups.setdefault(group, {}).setdefault(im["path"], {**im, "cell": str(p.parent)})
    return {g: list(ims.values()) for g, ims in groups.items()}


def contact_sheet(images: list[dict], out: Path, columns: int = 4, title: str = "") -> Path:
    """PNG grid of ``images`` (dicts of ``synthetic.json``) with prompt, counts and q under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im in zip(axes.ravel(), images):
        try:
            with Image.open(im["path"]) as pic:
                ax.imshow(np.asarray(pic.convert("RGB")))
        except OSError:
            ax.text(0.5, 0.5, "image not in cache", ha="center", va="center")
        counts = ", ".join(f"{k} {v:.1f}" for k, v in im.get("counts", {}).items())
        q = im.get("q")
        status = "" if im.get("kept", True) else "  FILTERED"
        caption = "\n".join(textwrap.wrap(im["prompt"], 38)[:3])
        ax.set_title(f"{caption}\nseed {im['seed']}  q {'–' if q is None else f'{q:.3f}'}{status}\n{counts}",
                     fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def q_histogram(by_source: dict[str, list[dict]], out: Path, bins: int = 20) -> Path:
    """Histogram of q per group of :func:`load_images` (report Fig. 6a/b) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for src, ims in sorted(by_source.items()):
        qs = [im["q"] for im in ims if im.get("q") is not None]
        if qs:
            ax.hist(qs, bins=bins, range=(0, max(1.0, max(qs))), alpha=0.6, label=f"{src} (n={len(qs)})")
    ax.set_xlabel("quality score q (eq. 4; higher = annotators disagree more)")
    ax.set_ylabel("synthetic images")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@click.group("promptmix")
def promptmix_cli() -> None:
    """PromptMix tools (plugin harness-promptmix)."""


@promptmix_cli.command("inspect")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default RUN_DIR/promptmix-inspect).")
@click.option("--max-images", default=24, show_default=True, help="Images per contact sheet (per source).")
def inspect_cmd(run_dir: Path, out_dir: Path | None, max_images: int) -> None:
    """Contact sheets (prompt, pseudo-counts, q) and q histograms of a run's synthetic images."""
    by_source = load_images(find_pools(run_dir))
    out_dir = out_dir or Path(run_dir) / "promptmix-inspect"
    for src, ims in sorted(by_source.items()):
        step = max(1, len(ims) // max_images)
        slug = "".join(c if c.isalnum() else "-" for c in src).strip("-")
        sheet = contact_sheet(ims[::step][:max_images], out_dir / f"contact-sheet-{slug}.png",
                              title=f"PromptMix synthetic images, {src}")
        st = q_stats(np.array([im["q"] for im in ims if im.get("q") is not None], dtype=float))
        stats = (f"q mean {st['mean']:.3f}, median {st['median']:.3f}, min {st['min']:.3f}, max {st['max']:.3f}"
                 if st["n"] else "q not computed (fewer than two annotators)")
        click.echo(f"{src}: {len(ims)} images, {sum(im.get('kept', True) for im in ims)} kept; {stats}; {sheet}")
    click.echo(f"q histogram: {q_histogram(by_source, out_dir / 'q-histogram.png')}")
