"""``harness promptmix inspect RUN_DIR``: a contact sheet of synthetic images (prompt, pseudo-counts per
annotator, q) and a histogram of q per source dataset (the Aarhus report's Fig. 6), from the
``synthetic.json`` files that the ``promptmix`` strategy writes into each cell folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from harness import DataError, contact_sheet, histograms, q_stats


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


def caption(im: dict) -> str:
    """The contact-sheet caption of one ``synthetic.json`` image: prompt, seed, q (FILTERED), counts."""
    counts = ", ".join(f"{k} {v:.1f}" for k, v in im.get("counts", {}).items())
    q = im.get("q")
    status = "" if im.get("kept", True) else "  FILTERED"
    return f"{im['prompt']}\nseed {im['seed']}  q {'–' if q is None else f'{q:.3f}'}{status}\n{counts}"


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
        sheet = contact_sheet([(im["path"], caption(im)) for im in ims[::step][:max_images]],
                              out_dir / f"contact-sheet-{slug}.png", title=f"PromptMix synthetic images, {src}")
        st = q_stats(np.array([im["q"] for im in ims if im.get("q") is not None], dtype=float))
        stats = (f"q mean {st['mean']:.3f}, median {st['median']:.3f}, min {st['min']:.3f}, max {st['max']:.3f}"
                 if st["n"] else "q not computed (fewer than two annotators)")
        click.echo(f"{src}: {len(ims)} images, {sum(im.get('kept', True) for im in ims)} kept; {stats}; {sheet}")
    qs = {src: [im["q"] for im in ims if im.get("q") is not None] for src, ims in by_source.items()}
    top = max([1.0] + [q for v in qs.values() for q in v])
    hist = histograms(qs, out_dir / "q-histogram.png", value_range=(0.0, top),
                      xlabel="quality score q (eq. 4; higher = annotators disagree more)", ylabel="synthetic images")
    click.echo(f"q histogram: {hist}")
