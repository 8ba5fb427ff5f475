"""``harness report RUN_DIR -o DIR``: a static HTML report that works offline (docs/design.md §12).

- ``DIR/index.html``: first the picture — per cell, a forest plot of every method's MAE with its 95 % interval and
  the trivial baselines (``zero``, ``source-mean``) as vertical lines; with more than two cells, a source × target
  heat map of MAE per method — then the leaderboard (:func:`harness.leaderboard.leaderboard`) with grouped headers
  (each cell once, its MAE / MSE / NAE / r / mAP below it) — a rank by the first MAE column,
  every header sortable by a click (numbers by value, missing cells "—" last; the metric's direction ↓/↑ gives the
  first click's order), the best value of each metric column in bold, the flags explained below, and every method's
  cell linked to its page.
- ``DIR/cells/<method>__<source>-<target>__seed-<k>.html``: one page per finished cell — the exact command and the
  resolved configuration, provenance (weights, labels used, components), the metrics with their bootstrap intervals,
  a predicted-vs-true count scatter, an error histogram, and the density-map overlays of the best and worst images.

Everything is inlined (CSS, a few lines of script, PNG / JPEG pictures as data URIs): no CDN, no network, one
folder to copy.
"""
from __future__ import annotations

import base64
import html
import json
import re
import tempfile
from pathlib import Path

import pandas as pd

from .io import atomic_write_text
from .leaderboard import collect, leaderboard, notes

_NUM = re.compile(r"^-?\d+(?:\.\d+)?")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem;color:#1b1b1b}
table{border-collapse:collapse;font-size:.85rem}th,td{border:1px solid #ccc;padding:.25rem .45rem;text-align:right}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}td:first-child,td:nth-child(2),th:nth-child(2){text-align:left}
th.group{cursor:default;text-align:center;background:#e4e9f0}thead tr:nth-child(2) th{top:1.7rem}
th.sorted-asc::after{content:" ▲"}th.sorted-desc::after{content:" ▼"}tr:hover td{background:#fafae6}
.notes li{margin:.15rem 0}.small{color:#555;font-size:.85rem}img{max-width:100%;border:1px solid #ddd}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap}.grid{display:flex;flex-wrap:wrap;gap:1rem}
.grid figure{margin:0;max-width:32rem}
"""

SORT_JS = """
document.querySelectorAll('table.sortable th[data-col]').forEach(th => th.addEventListener('click', () => {
  const col = Number(th.dataset.col), table = th.closest('table'), body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const first = th.dataset.dir === 'desc' ? 'desc' : 'asc';
  const dir = th.classList.contains('sorted-' + first) ? (first === 'asc' ? 'desc' : 'asc') : first;
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add('sorted-' + dir);
  const key = r => r.cells[col].dataset.sort;
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === '' || x === undefined) return 1; if (y === '' || y === undefined) return -1;
    const nx = Number(x), ny = Number(y);
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
    return dir === 'asc' ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
}));
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}<script>{SORT_JS}</script></body></html>\n")


def _number(text: str) -> float | None:
    m = _NUM.match(str(text).strip())
    return float(m.group()) if m else None


def _png(path: Path) -> str:
    """``path`` (a PNG or JPEG) as a data URI."""
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def cell_slug(method: str, cell: str, seed: int, limit=None) -> str:
    """File name of a cell's page: ``<method>__<source>-<target>__seed-<k>[-n<N>].html`` (ASCII, no arrows)."""
    tail = "" if limit is None or pd.isna(limit) else f"-n{int(limit)}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{method}__{cell.replace('→', '-')}__seed-{int(seed)}{tail}")
    return f"{safe}.html"


_INTERVAL = re.compile(r"^\s*(-?\d+(?:\.\d+)?)(?:\s*\[(-?\d+(?:\.\d+)?),\s*(-?\d+(?:\.\d+)?)\])?")
BASELINES = ("zero", "source-mean")


def _forests(board: pd.DataFrame, tmp: Path) -> str:
    """One forest plot per cell column ``<cell> MAE↓`` of the board (its values and intervals as printed)."""
    from .figures import forest

    out = []
    for k, col in enumerate(c for c in board.columns if c.endswith(" MAE↓")):
        rows, base = [], {}
        for _, r in board.iterrows():
            m = _INTERVAL.match(str(r[col]))
            if not m:
                continue
            v = float(m.group(1))
            if r["method"] in BASELINES:
                base[r["method"]] = v
            else:
                lo, hi = (float(m.group(2)), float(m.group(3))) if m.group(2) else (None, None)
                rows.append((str(r["method"]), v, lo, hi))
        if not rows:
            continue
        cell = col[:-len(" MAE↓")]
        png = forest(rows, tmp / f"forest-{k}.png", baselines=base, xlabel="MAE (95 % interval)", title=cell)
        out.append(f"<figure><img alt='forest plot of MAE, {html.escape(cell)}' src='{_png(png)}'></figure>")
    return ("<h2>MAE per cell</h2><p class='small'>Each method's MAE with its 95 % bootstrap interval; the dashed "
            "lines are the trivial baselines of the cell: a method left of both beats them.</p>"
            f"<div class='grid'>{''.join(out)}</div><h2>Leaderboard</h2>") if out else ""


def _heatmaps(df: pd.DataFrame, tmp: Path) -> str:
    """Per trained method, a source × target heat map of MAE (mean over seeds; full evaluation splits where a cell
    has them) when the matrix has more than two cells."""
    from .figures import heatmap

    full = df[df["limit_test"].isna()] if df["limit_test"].isna().any() else df
    cells = full[["source", "target"]].drop_duplicates()
    if len(cells) <= 2:
        return ""
    sources, targets = sorted(cells["source"].unique()), sorted(cells["target"].unique())
    out = []
    for k, (method, rows) in enumerate(full.groupby("method", sort=True)):
        if method in BASELINES:
            continue
        mae = rows.groupby(["source", "target"])["mae"].mean()
        grid = [[mae.get((s, t), float("nan")) for t in targets] for s in sources]
        png = heatmap(grid, sources, targets, tmp / f"heat-{k}.png", title=f"{method}: MAE")
        out.append(f"<figure><img alt='heat map of MAE, {html.escape(str(method))}' src='{_png(png)}'></figure>")
    return ("<h2>MAE per source × target</h2><p class='small'>One map per method (mean over seeds); a blank square "
            f"was not run.</p><div class='grid'>{''.join(out)}</div>") if out else ""


def _groups(cols: list[str], metric_cols: list[str], labels: list[str]) -> list[tuple[str | None, list[str]]]:
    """The board's columns in header groups: consecutive metric columns of one cell label share a group
    (``(label, [columns])``); other columns stand alone (``(None, [column])``)."""
    groups: list[tuple[str | None, list[str]]] = []
    for c in cols:
        label = next((lb for lb in labels if c.startswith(lb + " ")), None) if c in metric_cols else None
        if label is not None and groups and groups[-1][0] == label:
            groups[-1][1].append(c)
        else:
            groups.append((label, [c]))
    return groups


def _index(df: pd.DataFrame, board: pd.DataFrame, run_dir: Path, figures: str = "") -> str:
    from .leaderboard import _cell_label

    pages: dict[tuple[str, str], str] = {}  # (method, column label) -> the page of its first seed
    for _, r in df.sort_values("seed").iterrows():
        label = _cell_label(r["cell"], r["limit_test"], r["protocol"])
        pages.setdefault((r["method"], label), cell_slug(r["method"], r["cell"], r["seed"], r["limit_test"]))
    labels = sorted({label for _, label in pages}, key=len, reverse=True)
    cols = list(board.columns)
    metric_cols = [c for c in cols if c.endswith(("↓", "↑")) or "↓ " in c or "↑ " in c]
    first_mae = next((c for c in cols if c.endswith("MAE↓")), None)
    values = {c: [_number(v) for v in board[c]] for c in metric_cols}
    best = {}
    for c, vals in values.items():
        nums = [v for v in vals if v is not None]
        if nums:
            best[c] = (max if "↑" in c else min)(nums)
    order = sorted(range(len(board)), key=lambda i: (values[first_mae][i] is None, values[first_mae][i] or 0)) \
        if first_mae else list(range(len(board)))
    rank = {i: n + 1 for n, i in enumerate(order)}
    def th(c: str, text: str, extra: str = "") -> str:  # a sortable header: data-col is the column it sorts
        return (f"<th{extra} data-col='{cols.index(c) + 1}' data-name='{html.escape(c, quote=True)}' "
                f"data-dir='{'desc' if '↑' in c else 'asc'}'>{html.escape(text)}</th>")

    top, below = ["<th rowspan='2' data-col='0' data-name='rank' data-dir='asc'>rank</th>"], []
    for label, group in _groups(cols, metric_cols, labels):
        if label is None:
            top.append(th(group[0], group[0], " rowspan='2'"))
        else:  # the cell once, its metrics below it
            top.append(f"<th class='group' colspan='{len(group)}'>{html.escape(label)}</th>")
            below += [th(c, c[len(label) + 1:]) for c in group]
    head = "<tr>" + "".join(top) + "</tr><tr>" + "".join(below) + "</tr>"
    rows = []
    for i in order:
        row = board.iloc[i]
        method = row["method"]
        tds = [f"<td data-sort='{rank[i]}'>{rank[i]}</td>"]
        for c in cols:
            text = "—" if str(row[c]) in ("–", "", "nan") else str(row[c])
            sort = "" if c in metric_cols and values[c][i] is None else (values[c][i] if c in metric_cols else text)
            cell_html = html.escape(text)
            if c in best and values[c][i] == best[c]:
                cell_html = f"<b>{cell_html}</b>"
            label = next((lb for lb in labels if c.startswith(lb + " ")), None)
            if c in metric_cols and (method, label) in pages and values[c][i] is not None:
                cell_html = f"<a href='cells/{pages[(method, label)]}'>{cell_html}</a>"
            tds.append(f"<td data-sort='{html.escape(str(sort), quote=True)}'>{cell_html}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    legend = "".join(f"<li>{html.escape(n)}</li>" for n in notes(board))
    legend += ("<li>↓ lower is better, ↑ higher is better; bold: the best value of the column; rank: by the first "
               "MAE column; click a header to sort (missing cells, —, stay last).</li>")
    return _page(f"crowd-harness: {run_dir.name}",
                 f"<h1>Leaderboard: {html.escape(run_dir.name)}</h1><p class='small'>{html.escape(str(run_dir))} · "
                 f"{len(df)} finished cell(s)</p>{figures}<table class='sortable'><thead>{head}</thead><tbody>"
                 + "".join(rows) + f"</tbody></table><ul class='notes'>{legend}</ul>")


def _cell_page(row: pd.Series, tmp: Path) -> str:
    from .figures import histograms, scatter

    from .rundir import CellDir

    folder = Path(row["path"])
    cell = CellDir(folder)
    metrics, config = cell.result().raw, cell.config()
    command = config.get("command") or (
        f"harness run --matrix '{row['cell']}' --methods {row['method']} --seeds {int(row['seed'])} --profile "
        f"{config.get('profile', 'smoke')}" + (f" --limit-test {int(row['limit_test'])}"
                                              if not pd.isna(row["limit_test"]) else ""))
    figs = ""
    preds = folder / "predictions.csv"
    if preds.exists():
        p = pd.read_csv(preds)
        sc = scatter(p["gt_count"], p["pred_count"], tmp / "scatter.png", xlabel="true count",
                     ylabel="predicted count", title=f"{row['method']} {row['cell']}", diagonal=True)
        hi = histograms({"predicted − true": list(p["pred_count"] - p["gt_count"])}, tmp / "errors.png",
                        xlabel="count error (predicted − true)")
        figs = (f"<div class='grid'><figure><img alt='predicted vs true counts' src='{_png(sc)}'></figure>"
                f"<figure><img alt='error histogram' src='{_png(hi)}'></figure></div>")
    overlays = sorted(p for p in (folder / "overlays").glob("*") if p.suffix in (".jpg", ".png")) \
        if (folder / "overlays").is_dir() else []  # .png: cells written before 2026-12-04
    ov = "".join(f"<figure><img alt='{html.escape(o.stem)}' src='{_png(o)}'><figcaption>{html.escape(o.stem)}"
                 f"</figcaption></figure>" for o in overlays)
    keys = ("mae", "mae_ci", "mse", "mse_ci", "nae", "r", "map", "ap@5", "ap@10", "ap@20", "n_images", "eval_split",
            "protocol", "target_labels_seen", "labels_used", "uses_target_images", "selection_split", "fit_s",
            "eval_s")
    mrows = "".join(f"<tr><td>{k}</td><td>{html.escape(_shown(k, metrics.get(k)))}</td></tr>" for k in keys
                    if k in metrics or k in ("map",))
    prov = {k: metrics.get(k) for k in ("provenance", "provenance_notes", "components")}
    return _page(f"{row['method']} {row['cell']} seed {int(row['seed'])}",
                 f"<p><a href='../index.html'>← leaderboard</a></p><h1>{html.escape(row['method'])} · "
                 f"{html.escape(row['cell'])} · seed {int(row['seed'])}</h1><h2>Command</h2>"
                 f"<pre>{html.escape(command)}</pre><h2>Metrics</h2><table>{mrows}</table>"
                 f"<p class='small'>MSE is the root mean squared error; intervals: 95 % bootstrap over the test "
                 f"images.</p><h2>Counts</h2>{figs}<h2>Best and worst images</h2>"
                 f"<div class='grid'>{ov or '<p>no overlays in this cell</p>'}</div><h2>Provenance</h2>"
                 f"<pre>{html.escape(json.dumps(prov, indent=2))}</pre><h2>Configuration</h2>"
                 f"<pre>{html.escape(json.dumps(config, indent=2, ensure_ascii=False))}</pre>")


def _shown(key: str, value) -> str:
    """A metric as the leaderboard prints it: counts (MAE, MSE, their intervals, seconds) with 2 decimals, ratios
    (NAE, r, mAP, AP) with 3, missing as —."""
    if value is None:
        return "—"
    digits = 2 if key.startswith(("mae", "mse", "fit", "eval")) else 3
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        return str(value) if isinstance(value, int) else f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return "[" + ", ".join(f"{v:.{digits}f}" for v in value) + "]"
    return json.dumps(value)


def write_report(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the report of ``run_dir`` into ``out_dir`` (see the module notes); returns ``out_dir / "index.html"``.

    Raises:
        DataError: ``run_dir`` is not a run folder.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    df = collect(run_dir)
    board = leaderboard(df)
    with tempfile.TemporaryDirectory() as tmp:
        for _, row in df.iterrows():
            atomic_write_text(out_dir / "cells" / cell_slug(row["method"], row["cell"], row["seed"], row["limit_test"]),
                              _cell_page(row, Path(tmp)))
        figures = _forests(board, Path(tmp))
        heat = _heatmaps(df, Path(tmp))
        if heat:  # after the forest plots, before the table's heading
            figures = figures.replace("<h2>Leaderboard</h2>", heat + "<h2>Leaderboard</h2>") if figures else heat
    index = out_dir / "index.html"
    atomic_write_text(index, _index(df, board, run_dir, figures))
    return index


__all__ = ["write_report", "cell_slug"]
