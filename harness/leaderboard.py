"""Results -> pandas -> Markdown / CSV / JSON / LaTeX / HTML leaderboards (docs/design.md §12).

- :func:`collect` reads every finished cell (``metrics.json``) of a run directory into one row per
  (method, source→target, seed, limit_test).
- :func:`leaderboard` pivots to rows = methods, columns = cells × (MAE↓, MSE↓, NAE↓, mAP↑), each
  ``"mean ± std"`` over seeds (plus ``MAE↓ <output>`` / ``MSE↓ <output>`` per named output when cells
  report ``mae:<output>``, e.g. RDBT's regression and detection heads). The std is the *sample* standard
  deviation (``ddof=1``); with a single seed there is no spread to report, so the cell shows the value alone.
  Next to MAE and MSE, ``[low, high]`` is the 95 % paired bootstrap interval over the test images
  (:mod:`harness.stats`; the seeds' mean, the same resampled images for every seed) where the cells' per-image
  predictions are present. Flag columns follow: *seeds*, *labels used*, *uses target images*, *selection split*,
  and *eval split* where a target is not scored on its test split.
  Marks on MAE: ``†`` the weights saw the target's labels; ``‡`` the method does not beat the trivial baselines
  of that cell (``zero`` and ``source-mean``, those the run has: its MAE is not below the better of them). A cell evaluated on the first N images only (``--limit-test N``)
  is labelled ``[n=N]``, a target scored by a protocol (e.g. UCF_CC_50's pooled 5-fold) carries it in brackets.
- :func:`render` formats that table; Markdown gets legend lines (dagger, limited cells, and "MSE is the
  root mean squared error (the field's convention)", i.e. sqrt(mean (ĉ − c)²), MCNN, Zhang et al. 2016).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from .errors import ConfigError

#: (metrics.json key, column label, decimals)
METRICS = (("mae", "MAE↓", 2), ("mse", "MSE↓", 2), ("nae", "NAE↓", 3), ("r", "r↑", 3), ("map", "mAP↑", 3))
DAGGER = "†"
LEGEND_DAGGER = (f"{DAGGER} target labels seen: the weights were trained on the target dataset's labels "
                 "(not a cross-domain result).")
DDAGGER = "‡"
#: the trivial baselines of every cell: predict 0, predict the source train split's mean count
BASELINES = ("zero", "source-mean")
LEGEND_DDAGGER = (f"{DDAGGER} does not beat the trivial baselines of this cell (its MAE is not below the better of "
                  "`zero` and `source-mean`, rows of this table): not a result.")
LEGEND_CI = ("[low, high]: 95 % paired bootstrap interval of MAE / MSE over the test images (2000 resamples, "
             "seed 0; over seeds, the mean of the seeds on the same resampled images).")
LEGEND_MSE = "MSE is the root mean squared error (the field's convention)."
IN_DOMAIN = "in-domain"
LEGEND_IN_DOMAIN = ("in-domain: trained and scored on the same dataset (source = target; its train and test splits): "
                    "an in-domain number, not a cross-domain result.")
LEGEND_R = ("r: Pearson correlation of predicted and true counts over the test images (– where a side is constant); "
            "near 0, the counter does not track the count whatever its MAE (a near-constant predictor).")
FORMATS = ("md", "csv", "json", "latex", "html")

_COLUMNS = ["method", "source", "target", "cell", "seed", "limit_test", "profile", "mae", "mse", "nae", "r", "map",
            "n_images", "target_labels_seen", "uses_target_images", "selection_split", "eval_split", "protocol",
            "labels_used", "duration_s", "path"]


def collect(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per finished cell under ``run_dir`` (:func:`harness.rundir.cell_dirs` with a ``metrics.json``).

    Columns: method, source, target, cell (``"SHA→SHB"``), seed, limit_test, profile, mae, mse, nae, map,
    n_images, target_labels_seen, uses_target_images, selection_split, duration_s, path (the cell folder).
    Failed or unfinished cells (no ``metrics.json``) are not rows.

    Raises:
        DataError: ``run_dir`` is not a folder, or a cell is damaged (:func:`harness.rundir.damage`: unreadable
            metrics or config, a predictions.csv that is not the one the metrics came from), one line naming them.
    """
    from .rundir import RunDir

    rows = []
    for result in RunDir(run_dir).results():  # DataError: not a folder, or a damaged cell
        m, folder = result.raw, Path(result.path)
        row = {k: m.get(k) for k in _COLUMNS}
        row["eval_split"] = result.eval_split
        row["labels_used"] = tuple(m["labels_used"]) if m.get("labels_used") is not None else None
        row.update({k: m[k] for k in m if _is_output_metric(k)})
        row["cell"] = f"{result.source}→{result.target}"
        row["path"] = str(folder)
        if "r" not in m:  # cells finished before r was recorded: from their per-image predictions
            row["r"] = _r_from_predictions(folder)
        rows.append(row)
    outputs = sorted({k for r in rows for k in r if ":" in k}, key=_output_order)
    df = pd.DataFrame(rows, columns=_COLUMNS + outputs)
    for k in [k for k, _, _ in METRICS] + outputs:
        df[k] = pd.to_numeric(df[k], errors="coerce")
    return df.sort_values(["method", "cell", "limit_test", "seed"], na_position="first", kind="stable"
                          ).reset_index(drop=True)


def _is_output_metric(key: str) -> bool:
    """``"mae:<output>"`` / ``"mse:<output>"`` keys of metrics.json (see :func:`harness.runner.output_metrics`)."""
    return ":" in key and key.split(":", 1)[0] in ("mae", "mse")


def _output_order(key: str) -> tuple:
    kind, name = key.split(":", 1)
    return (name, kind != "mae")


def output_metrics(df: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(column, label, decimals) for the per-output metrics in ``df`` (``"mae:<output>"`` -> ``"MAE↓ <output>"``):
    counters with several outputs (e.g. RDBT's regression and detection) report each one's MAE/MSE."""
    out = []
    for col in df.columns:
        if _is_output_metric(col):
            kind, name = col.split(":", 1)
            out.append((col, f"{kind.upper()}↓ {name}", 2))
    return out


def _mean_std(values: pd.Series, decimals: int) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "–"
    if len(v) == 1:
        return f"{v.iloc[0]:.{decimals}f}"
    return f"{v.mean():.{decimals}f} ± {v.std(ddof=1):.{decimals}f}"


def _cell_label(cell: str, limit, protocol=None) -> str:
    """A board column's cell: ``SHA→SHB``, with its protocol, ``in-domain`` where source = target, and ``[n=N]``."""
    tags = [] if protocol is None or (isinstance(protocol, float) and math.isnan(protocol)) else [str(protocol)]
    source, _, target = str(cell).partition("→")
    if source and source == target:
        tags.append(IN_DOMAIN)
    label = f"{cell} ({', '.join(tags)})" if tags else cell
    return label if limit is None or (isinstance(limit, float) and math.isnan(limit)) else f"{label} [n={int(limit)}]"


def _r_from_predictions(cell_dir: Path) -> float | None:
    """Pearson r of a cell's ``predictions.csv`` (None without the file)."""
    from .metrics import count_correlation

    f = cell_dir / "predictions.csv"
    if not f.is_file():
        return None
    p = pd.read_csv(f)
    return count_correlation(p["pred_count"].to_numpy(), p["gt_count"].to_numpy())


def _interval_text(paths: list[str], decimals: int) -> tuple[str, str]:
    """`` [low, high]`` of MAE and MSE from the cells' ``predictions.csv`` (paired over seeds), or ``("", "")``."""
    from .stats import bootstrap_mae_mse

    frames = []
    for p in paths:
        f = Path(p) / "predictions.csv"
        if not f.exists():
            return "", ""
        frames.append(pd.read_csv(f, usecols=["image_id", "gt_count", "pred_count"]))
    if not frames or any(list(fr["image_id"]) != list(frames[0]["image_id"]) for fr in frames) or frames[0].empty:
        return "", ""
    errors = [(fr["pred_count"] - fr["gt_count"]).to_numpy(float) for fr in frames]
    mae, mse = bootstrap_mae_mse(errors)
    return (f" [{mae.low:.{decimals}f}, {mae.high:.{decimals}f}]", f" [{mse.low:.{decimals}f}, {mse.high:.{decimals}f}]")


def _labels_text(row: pd.Series) -> str:
    """What a cell's ``labels_used`` says, relative to its cell: ``none``, ``source``, ``target``, other names."""
    labels = row["labels_used"]
    if labels is None or (isinstance(labels, float) and math.isnan(labels)):
        return "?"
    if not labels:
        return "none"
    parts = ["source" if d == row["source"] else "target" if d == row["target"] else d for d in labels]
    return "+".join(sorted(set(parts), key=lambda p: (p != "source", p != "target", p)))


def leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods; columns = ``"<cell> MAE↓"`` … ``"<cell> mAP↑"`` per cell, then ``seeds``,
    ``uses target images``, ``selection split``. Values are strings ``"mean ± std"`` (sample std over
    seeds, omitted for one seed); MAE carries ``†`` where the target's labels were seen. A method missing
    a cell shows ``–``. Cells are ordered as first met in ``df``.
    """
    if df.empty:
        return pd.DataFrame(columns=["method"])
    df = df.copy()
    df["limit_key"] = df["limit_test"].where(df["limit_test"].notna(), None)
    df["label"] = [_cell_label(c, lim, pr) for c, lim, pr in zip(df["cell"], df["limit_key"], df["protocol"])]
    labels = list(dict.fromkeys(df["label"]))
    extra = output_metrics(df)
    # the better (lower) trivial baseline MAE of each cell
    trivial = df[df["method"].isin(BASELINES)].groupby(["label", "method"])["mae"].mean()
    baseline = {label: g.min() for label, g in trivial.groupby(level=0)}
    rows = []
    for method, mdf in df.groupby("method", sort=True):
        row: dict[str, str] = {"method": method}
        for label in labels:
            cdf = mdf[mdf["label"] == label]
            ci = _interval_text(list(cdf["path"]), 2) if not cdf.empty else ("", "")
            for key, name, dec in list(METRICS) + extra:
                text = _mean_std(cdf[key], dec) if not cdf.empty else "–"
                if key in ("mae", "mse") and text != "–":
                    text += ci[key == "mse"]
                if key == "mae" and not cdf.empty and cdf["target_labels_seen"].fillna(False).astype(bool).any():
                    text += f" {DAGGER}"
                if (key == "mae" and method not in BASELINES and label in baseline and not cdf.empty
                        and cdf["mae"].mean() >= baseline[label]):
                    text += f" {DDAGGER}"
                row[f"{label} {name}"] = text
        seeds = sorted({int(s) for s in mdf["seed"].dropna()})
        row["seeds"] = ",".join(map(str, seeds))
        row["labels used"] = "; ".join(sorted({_labels_text(r) for _, r in mdf.iterrows()}))
        row["uses target images"] = "yes" if mdf["uses_target_images"].fillna(False).astype(bool).any() else "no"
        row["selection split"] = ",".join(sorted({str(s) for s in mdf["selection_split"].fillna("none")}))
        other = sorted({f"{c}: {e}" for c, e in zip(mdf["cell"], mdf["eval_split"]) if e != "test"})
        if other or (df["eval_split"] != "test").any():
            row["eval split"] = ", ".join(other) or "test"
        rows.append(row)
    return pd.DataFrame(rows)


def compare(df: pd.DataFrame, method_a: str, method_b: str) -> pd.DataFrame:
    """Per cell, method A against method B on the same test images and seeds (:func:`harness.stats.compare_mae`); a
    ``--limit-test`` cell is compared with the other method's cell of the same limit (``cell`` says ``[n=N]``):
    columns ``cell``, ``seeds``, ``images``, ``MAE A``, ``MAE B``, ``A − B`` (negative: A is better), ``95 % CI``
    (paired bootstrap over the images), ``P(A better)`` (fraction of resamples in which A's MAE is lower).

    Raises:
        ConfigError: a method has no finished cell in the run, or the two share none.
    """
    from .stats import compare_mae

    for m in (method_a, method_b):
        if m not in set(df["method"]):
            raise ConfigError(f"method {m!r} has no finished cell in this run; it has: "
                              f"{', '.join(sorted(set(df['method']))) or '(none)'}")
    rows = []
    limits = df["limit_test"].astype("object").where(df["limit_test"].notna(), None)
    for cell, limit in dict.fromkeys(zip(df["cell"], limits)):
        same = (df["cell"] == cell) & (limits.isna() if limit is None else limits == limit)
        a, b = (df[(df["method"] == m) & same] for m in (method_a, method_b))
        seeds = sorted(set(a["seed"]) & set(b["seed"]))
        if not seeds:
            continue
        errs = []
        for part in (a, b):
            frames = [pd.read_csv(Path(part[part["seed"] == s]["path"].iloc[0]) / "predictions.csv") for s in seeds]
            errs.append(frames)
        if any(list(f["image_id"]) != list(errs[0][0]["image_id"]) for fr in errs for f in fr):
            continue  # not the same images: nothing paired to compare
        c = compare_mae([f["abs_error"].to_numpy(float) for f in errs[0]],
                        [f["abs_error"].to_numpy(float) for f in errs[1]])
        rows.append({"cell": _cell_label(cell, limit), "seeds": ",".join(str(int(s)) for s in seeds), "images": c.n_images,
                     f"MAE {method_a}": f"{c.mae_a:.2f}", f"MAE {method_b}": f"{c.mae_b:.2f}",
                     "A − B": f"{c.diff:+.2f}", "95 % CI": f"[{c.interval.low:+.2f}, {c.interval.high:+.2f}]",
                     "P(A better)": f"{c.p_a_better:.3f}"})
    if not rows:
        raise ConfigError(f"{method_a} and {method_b} share no finished cell (same pair, seed and images) in this run")
    return pd.DataFrame(rows)


def notes(board: pd.DataFrame) -> list[str]:
    """Legend lines for ``board``: the dagger (when used), limited test splits, and the MSE convention."""
    out = []
    text = board.astype(str)
    if text.apply(lambda col: col.str.contains(DAGGER, regex=False)).to_numpy().any():
        out.append(LEGEND_DAGGER)
    if text.apply(lambda col: col.str.contains(DDAGGER, regex=False)).to_numpy().any():
        out.append(LEGEND_DDAGGER)
    if text.apply(lambda col: col.str.contains(r"\[\d", regex=True)).to_numpy().any():
        out.append(LEGEND_CI)
    if "labels used" in board.columns:
        out.append("labels used: whose labels reached the counter (source, target, other datasets; none: "
                   "label-free).")
    if any(f"{IN_DOMAIN})" in c or f"{IN_DOMAIN}, " in c for c in board.columns):
        out.append(LEGEND_IN_DOMAIN)
    if any("[n=" in c for c in board.columns):
        out.append("[n=N]: evaluated on the first N test images only (--limit-test); not comparable to full runs.")
    if any(c.endswith(" r↑") for c in board.columns):
        out.append(LEGEND_R)
    out.append(LEGEND_MSE)
    return out


_LATEX_SUBS = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
               ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")]
_LATEX_UNICODE = [("±", r"$\pm$"), ("→", r"$\to$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"),
                  ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("–", "--")]


def _latex(text: str) -> str:
    out = []
    for ch in str(text):
        sub = next((r for c, r in _LATEX_SUBS if c == ch), None)
        out.append(sub if sub is not None else ch)
    text = "".join(out)
    for c, r in _LATEX_UNICODE:
        text = text.replace(c, r)
    return text


def render(board: pd.DataFrame, fmt: str = "md") -> str:
    """Format a :func:`leaderboard` table.

    ``fmt``: ``md`` (GitHub pipe table via tabulate, legend lines below), ``csv``, ``json``
    (``{"columns", "rows", "notes"}``), ``latex`` (booktabs ``tabular`` via pandas' Styler; Unicode marks
    become math macros, special characters escaped; needs ``\\usepackage{booktabs}``), ``html`` (a
    ``<table>`` plus the legend as ``<p>``).

    Raises:
        ConfigError: an unknown format.
    """
    fmt = fmt.lower()
    legend = notes(board)
    if fmt in ("md", "markdown"):
        # disable_numparse: keep our decimals ("0.830", "200.40"), tabulate would re-format numbers
        table = (board.to_markdown(index=False, tablefmt="github", disable_numparse=True)
                 if not board.empty else "(no finished cells)")
        return table + "\n\n" + "\n".join(f"- {n}" for n in legend) + "\n"
    if fmt == "csv":
        return board.to_csv(index=False)
    if fmt == "json":
        return json.dumps({"columns": list(board.columns), "rows": board.to_dict(orient="records"),
                           "notes": legend}, ensure_ascii=False, indent=2) + "\n"
    if fmt in ("latex", "tex"):
        tex = board.rename(columns=_latex).map(_latex) if not board.empty else board.rename(columns=_latex)
        body = tex.style.hide(axis="index").to_latex(hrules=True, column_format="l" + "r" * (len(tex.columns) - 1))
        return body + "".join(f"% {n}\n" for n in legend)
    if fmt == "html":
        return (board.to_html(index=False, escape=True, border=0, classes="leaderboard") + "\n"
                + "".join(f"<p>{_html_escape(n)}</p>\n" for n in legend))
    raise ConfigError(f"unknown leaderboard format {fmt!r}; use one of {', '.join(FORMATS)}")


def _html_escape(text: str) -> str:
    import html
    return html.escape(text, quote=False)


__all__ = ["collect", "leaderboard", "compare", "render", "notes", "FORMATS", "METRICS", "LEGEND_MSE", "LEGEND_R", "LEGEND_DAGGER",
           "LEGEND_DDAGGER", "BASELINES"]
