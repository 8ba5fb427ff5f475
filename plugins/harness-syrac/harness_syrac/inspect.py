"""``harness syrac inspect RUN_DIR``: what the ``syrac`` cells of a run made and learnt.

For every cell folder holding ``syrac/pairs.json`` (written by the strategy during ``fit``):

- a contact sheet of ranking pairs, real | "emptied" (img2img) or real | crop (intra-image ranking);
- a contact sheet of the noisy counting set, each image captioned with its prompt's N;
- for cells with a rank-pre-trained encoder (``syrac/model.pt``): a scatter of the rank score ĉ = h(f(x)) of every
  image of the target's evaluation split (the whole image at the input size) against its true count, with
  Spearman's ρ (the paper's Fig. 6 idea). **The test labels are read for this report only**; nothing the cell
  chose depended on them;
- Spearman's ρ of the cell's final predictions against the truth (from its ``predictions.csv``).

Everything goes to ``RUN_DIR/syrac-inspect/`` (or ``--out``): PNGs per cell and ``spearman.json``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import click
import numpy as np

from harness import DataError, atomic_write_json, contact_sheet, scatter


def find_cells(run_dir: Path) -> list[tuple[Path, Path]]:
    """``(pairs.json, cell folder with config.json)`` of every syrac fit under ``run_dir`` (sorted).

    Raises:
        DataError: ``run_dir`` is not a folder or holds no syrac fit (one line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a folder: pass the --out folder of a `harness run` with syrac methods")
    out = []
    for p in sorted(run_dir.rglob("syrac/pairs.json")):
        cell = next((d for d in p.parents if (d / "config.json").is_file()), None)
        if cell is not None:
            out.append((p, cell))
    if not out:
        raise DataError(f"{run_dir} holds no syrac/pairs.json: run a syrac method into it first")
    return out


def spearman(x, y) -> dict:
    """``{"rho", "p", "n"}`` of Spearman's rank correlation (scipy.stats.spearmanr); rho None when undefined."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None, "n": int(len(x))}
    r = spearmanr(x, y)
    return {"rho": round(float(r.statistic), 4), "p": float(r.pvalue), "n": int(len(x))}


class _Images:
    """Loads the real images of a cell's pairs by key (``<dataset>/<split>/<id>``) from its dataset."""

    def __init__(self, config: dict, data_root: Path | None):
        self.config, self.root, self._refs = config, data_root, {}

    def ref(self, key: str):
        from harness import get_registries

        name, split, _ = key.split("/", 2)
        if (name, split) not in self._refs:
            root = self.root or self.config.get("data_root")
            ds = get_registries().datasets.get(name).factory(Path(root) if root else None)
            self._refs[(name, split)] = {f"{r.dataset}/{r.split}/{r.id}": r for r in ds.samples(split)}
        return self._refs[(name, split)][key]

    def real(self, pair: dict) -> np.ndarray | str:
        path = pair.get("real_path")
        return path if path and Path(path).is_file() else self.ref(pair["real"]).load_image()

    def synthetic(self, pair: dict) -> np.ndarray | str:
        if not pair["synthetic"].startswith("crop:"):
            return pair["synthetic"]
        x0, y0, x1, y1 = pair["meta"]["crop"]
        return self.ref(pair["real"]).load_image()[y0:y1, x0:x1]


def pair_sheet(doc: dict, images: _Images, out: Path, max_pairs: int, title: str) -> Path | None:
    """Contact sheet of up to ``max_pairs`` pairs (one per real image first), real | emptied side by side."""
    pairs = doc.get("pairs") or []
    if not pairs:
        return None
    seen, chosen = set(), []
    for p in pairs:  # one pair per real image first
        if p["real"] not in seen:
            seen.add(p["real"])
            chosen.append(p)
    chosen = (chosen + [p for p in pairs if p not in chosen])[:max_pairs]
    crop = doc.get("pretrain") == "intra-image-rank"
    items = []
    for p in chosen:
        items.append((images.real(p), f"real {p['real']} ({p['split']})"))
        what = f"crop {p['meta']['crop']}" if crop else f'"emptied", seed {p["seed"]}'
        items.append((images.synthetic(p), what))
    return contact_sheet(items, out, columns=4, title=title)


def noisy_sheet(doc: dict, out: Path, per_count: int, title: str) -> Path | None:
    """Contact sheet of the noisy counting set: ``per_count`` images of every N, captioned with N."""
    by_n: dict[int, list[dict]] = {}
    for im in doc.get("noisy") or []:
        by_n.setdefault(int(im["count"]), []).append(im)
    items = [(im["path"], f"N = {n}\n{im['prompt']}\nseed {im['seed']}") for n in sorted(by_n)
             for im in by_n[n][:per_count]]
    return contact_sheet(items, out, columns=max(1, per_count) * 2, title=title) if items else None


def rank_scores(cell_fit: Path, cell: Path, data_root: Path | None, limit: int | None, device: str):
    """``(rank scores, true counts)`` of the images the cell is scored on (:meth:`harness.CellDir.eval_refs`: the
    target's evaluation split, the first ``limit`` or the cell's own ``limit_test``), whole images at the input
    size."""
    from harness import CellDir

    from .model import encode, resize_uint8
    from .strategy import load_model

    net, state = load_model(cell_fit, device)
    refs = CellDir(cell).eval_refs(data_root=data_root, limit_test=limit)
    scores, counts = [], []
    size = tuple(state["input_size"])
    for ref in refs:
        sample = ref.load()  # labels read here, for this report only
        img = resize_uint8(sample.image, size)
        scores.append(float(encode(net, [img], state["normalisation"], device=device, fn=net)[0]))
        counts.append(sample.count)
    return np.array(scores), np.array(counts, dtype=float)


def prediction_spearman(cell: Path) -> dict | None:
    """Spearman's ρ of a finished cell's predictions (``predictions.csv``) against the truth; None when absent."""
    path = cell / "predictions.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return spearman([float(r["pred_count"]) for r in rows], [float(r["gt_count"]) for r in rows])


@click.group("syrac")
def syrac_cli() -> None:
    """SYRAC tools (plugin harness-syrac)."""


@syrac_cli.command("inspect")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default RUN_DIR/syrac-inspect).")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="HARNESS_DATA", default=None,
              help="Data root (default: the run's; env HARNESS_DATA).")
@click.option("--limit-test", type=int, default=None, help="Score only the first N target evaluation images.")
@click.option("--max-pairs", default=8, show_default=True, help="Ranking pairs per contact sheet.")
@click.option("--per-count", default=2, show_default=True, help="Noisy images per N on the contact sheet.")
@click.option("--device", default="cpu", show_default=True)
def inspect_cmd(run_dir: Path, out_dir: Path | None, data_root: Path | None, limit_test: int | None, max_pairs: int,
                per_count: int, device: str) -> None:
    """Contact sheets of ranking pairs and noisy-count images, rank score vs true count with Spearman's ρ."""
    out_dir = out_dir or Path(run_dir) / "syrac-inspect"
    report = {"note": "target evaluation labels are read by this report only; no cell used them", "cells": {}}
    for pairs_path, cell in find_cells(run_dir):
        config = json.loads((cell / "config.json").read_text(encoding="utf-8"))
        fold = pairs_path.parent.parent.name if pairs_path.parent.parent != cell else ""
        name = f"{config['method']} {config['source']}→{config['target']} seed {config['seed']}" + \
            (f" {fold}" if fold else "")
        slug = "".join(c if c.isalnum() else "-" for c in name.replace("→", "-to-")).strip("-")
        doc = json.loads(pairs_path.read_text(encoding="utf-8"))
        entry: dict = {"cell": str(cell), "pretrain": doc.get("pretrain")}
        kind = "crop" if doc.get("pretrain") == "intra-image-rank" else "emptied"
        sheet = pair_sheet(doc, _Images(config, data_root), out_dir / f"pairs-{slug}.png", max_pairs,
                           f"SYRAC ranking pairs (real | {kind}), {name}")
        noisy = noisy_sheet(doc, out_dir / f"noisy-{slug}.png", per_count, f"SYRAC noisy counting set, {name}")
        entry.update({"pairs_sheet": str(sheet) if sheet else None, "noisy_sheet": str(noisy) if noisy else None})
        if doc.get("pretrain") in ("synthetic-rank", "intra-image-rank"):
            scores, counts = rank_scores(pairs_path.parent, cell, data_root, limit_test, device)
            entry["rank_score_spearman"] = spearman(scores, counts)
            rho = entry["rank_score_spearman"]["rho"]
            entry["scatter"] = str(scatter(
                counts, scores, out_dir / f"rank-vs-count-{slug}.png", xlabel=f"true count ({config['target']})",
                ylabel="rank score ĉ (pre-trained encoder + head)",
                title=f"{name}: Spearman ρ = {'–' if rho is None else f'{rho:.3f}'} (n = {len(counts)})"))
        entry["prediction_spearman"] = prediction_spearman(cell)
        report["cells"][name] = entry
        rs = entry.get("rank_score_spearman")
        click.echo(f"{name}: {len(doc.get('pairs') or [])} pairs, {len(doc.get('noisy') or [])} noisy images; "
                   f"rank-score ρ {'–' if not rs or rs['rho'] is None else rs['rho']}; "
                   f"prediction ρ {(entry['prediction_spearman'] or {}).get('rho', '–')}")
    path = atomic_write_json(out_dir / "spearman.json", report)
    click.echo(f"wrote {out_dir} ({path.name})")
