"""``harness spade inspect RUN_DIR``: the Aarhus report's Fig. 5 and Fig. 6 from a run's ``synthetic.json`` files.

- **Fig. 5** (``fig5-<source>.png``): rows of *real image | mask | synthetic image | annotation* (the pseudo-labelling
  annotator's head points as a density heat map) of SPADE pools.
- **Fig. 6** (``fig6a-q-mae-<source>.png``, ``fig6b-q-count-<source>.png``, ``fig6c-counts-<source>.png``): histograms
  of q (eq. 4) with the MAE distance (pools scored with ``quality_distance: mae``), of q with the count distance
  (eq. 10, recomputed from each image's recorded annotator counts, so every pool has it), and of the pseudo-label
  counts, for the SPADE pool and the PromptMix pool of the same source side by side (PromptMix pools are the
  ``promptmix`` cells of the same run). The q statistics of both are printed.

Images shared by several cells (same generator and requests) are counted once per pool.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from harness import DataError, PseudoLabel, contact_sheet, histograms, q_stats, quality_score

METHODS = ("spade", "promptmix")


def load_pools(run_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """``{source: {method: [image records]}}`` of every SPADE and PromptMix ``synthetic.json`` under ``run_dir``
    (each image once per source and method; records get ``_distance``, the pool's q distance).

    Raises:
        DataError: not a folder, no SPADE pool, or an unreadable pool file (one line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a folder: pass the --out folder of a `harness run` with spade methods")
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for p in sorted(run_dir.rglob("synthetic.json")):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            method, source, distance = doc.get("method"), doc["source"], doc["quality_distance"]
            images = doc.get("images", [])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{p} cannot be read ({type(exc).__name__}): re-run its cell to rewrite it") from None
        if method not in METHODS:
            continue
        pool = out.setdefault(source, {}).setdefault(method, {})
        for im in images:
            pool.setdefault(im["path"], {**im, "_distance": distance, "_cell": str(p.parent)})
    if not any("spade" in m for m in out.values()):
        raise DataError(f"{run_dir} holds no spade synthetic.json: run a spade method with r_mix > 0 into it first")
    return {src: {m: list(ims.values()) for m, ims in by.items()} for src, by in out.items()}


def count_q(im: dict) -> float | None:
    """q with the count distance (eq. 10) from an image's recorded annotator counts (None: fewer than two)."""
    counts = list(im.get("counts", {}).values())
    return quality_score([PseudoLabel(float(c)) for c in counts], "count") if len(counts) >= 2 else None


def mae_q(im: dict) -> float | None:
    """q with the MAE distance where the pool was scored with it (None otherwise)."""
    return im.get("q") if im.get("_distance") == "mae" else None


def _mask(path: str | None) -> np.ndarray | str:
    from PIL import Image

    if not path or not Path(path).is_file():
        return "missing"
    with Image.open(path) as m:
        return np.asarray(m)


def annotation_panel(im: dict) -> np.ndarray | str:
    """The pseudo-label of a synthetic image as an RGB heat map (jet) of its head points' density."""
    from PIL import Image

    from harness import density_map

    pts_path, img_path = im.get("points_path"), im.get("path")
    if not pts_path or not Path(pts_path).is_file() or not Path(img_path).is_file():
        return "missing"
    with Image.open(img_path) as pic:
        w, h = pic.size
    dens = density_map(np.load(pts_path), (h, w), kernel="fixed", sigma=max(1.0, min(h, w) / 64))
    import matplotlib

    top = float(dens.max()) or 1.0
    return (matplotlib.colormaps["jet"](dens / top)[..., :3] * 255).astype(np.uint8)


def fig5(ims: list[dict], out: Path, source: str, rows: int) -> Path:
    """Real | mask | synthetic | annotation for the first image of up to ``rows`` masks."""
    by_mask: dict[str, dict] = {}
    for im in ims:
        by_mask.setdefault(str(im.get("meta", {}).get("mask_id")), im)
    items = []
    for mid, im in list(by_mask.items())[:rows]:
        meta = im.get("meta", {})
        real = meta.get("image_path")
        items += [(real if real else "missing", f"real {meta.get('source_image', mid)}"),
                  (_mask(meta.get("mask_path")), f"mask {mid}"),
                  (im["path"], f"synthetic, seed {im['seed']}\nq {'–' if im.get('q') is None else round(im['q'], 3)}"),
                  (annotation_panel(im), f"annotation: {im.get('pseudo_count') or 0:.1f} heads")]
    return contact_sheet(items, out, columns=4, title=f"SPADE on {source}: real | mask | synthetic | annotation")


@click.group("spade")
def spade_cli() -> None:
    """SPADE tools (plugin harness-spade)."""


@spade_cli.command("inspect")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default RUN_DIR/spade-inspect).")
@click.option("--rows", default=6, show_default=True, help="Masks shown in Fig. 5 (per source).")
def inspect_cmd(run_dir: Path, out_dir: Path | None, rows: int) -> None:
    """Fig. 5 (real | mask | synthetic | annotation) and Fig. 6 (q and count histograms, SPADE vs PromptMix)."""
    pools = load_pools(run_dir)
    out_dir = out_dir or Path(run_dir) / "spade-inspect"
    for src, by in sorted(pools.items()):
        if "spade" not in by:
            continue
        slug = "".join(c if c.isalnum() else "-" for c in src).strip("-")
        click.echo(f"Fig. 5: {fig5(by['spade'], out_dir / f'fig5-{slug}.png', src, rows)}")
        for tag, fn, label in (("a-q-mae", mae_q, "q, MAE distance"), ("b-q-count", count_q, "q, count distance"),
                               ("c-counts", lambda im: im.get("pseudo_count"), "pseudo-label count")):
            groups = {f"{m} ({src})": [v for v in map(fn, ims) if v is not None] for m, ims in by.items()}
            if not any(groups.values()):
                click.echo(f"Fig. 6{tag[0]} ({label}): no values (needs two annotators / quality_distance mae)")
                continue
            if tag != "c-counts":
                for g, vals in sorted(groups.items()):
                    st = q_stats(np.array(vals, dtype=float))
                    click.echo(f"{g} {label}: " + (f"n {st['n']}, mean {st['mean']:.3f}, median {st['median']:.3f}, "
                                                   f"q25 {st['q25']:.3f}, q75 {st['q75']:.3f}" if st["n"] else "none"))
            top = max(v for vals in groups.values() for v in vals)
            path = histograms(groups, out_dir / f"fig6{tag}-{slug}.png", value_range=(0.0, max(1.0, top)),
                              xlabel=label, ylabel="synthetic images",
                              title=f"{src}: SPADE vs PromptMix synthetic images ({label})")
            click.echo(f"Fig. 6{tag[0]}: {path}")
