"""The one evaluation path: a counter over labelled images -> per-image records and metrics (docs/design.md §7).

Used by the runner for every cell and by any report (e.g. RDBT's per-iteration table).

- **Per-image seeds.** Image ``i`` is predicted with its own seed :func:`image_seed` ``(cell seed, image key)``:
  torch's and numpy's global RNGs are seeded with it, and a *stochastic* counter (``counter.stochastic``) gets
  ``predict(image, generator=torch.Generator().manual_seed(seed))``. A prediction therefore never depends on
  which images came before it, so a killed-and-resumed evaluation equals an uninterrupted one.
- **Resume.** With ``partial_path``, every finished image is appended to a JSON-lines file (flushed and fsynced)
  and re-read on the next call; a torn last line is dropped and that image predicted again.
- **Validation.** Every :class:`~harness.types.Prediction` is checked at this boundary (finite count; density
  2-D and finite; points ``(M, 2)`` with ``M`` scores) and a bad one raises a one-line
  :class:`~harness.errors.PluginError` naming the counter and the image; nothing non-finite is written.
- **Localisation.** Counters that localise (default) are scored with AP@δ / mAP (Idrees et al. 2018) on their
  points, or the local maxima of their density map; count-only counters (``counter.localises = False``) get
  no mAP (reported as missing), never a number from a fake density.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import DataError, PluginError
from .io import atomic_write_text
from .stages import params_of, stage
from .types import counter_is_stochastic, counter_localises, output_stride

#: localisation thresholds δ in pixels for mAP (Idrees et al., ECCV 2018; RDBT Table 1)
MAP_DELTAS = range(1, 101)
#: the AP@δ values copied to top-level keys of the metrics (the full δ = 1..100 curve is kept under "ap")
AP_DELTAS_REPORTED = (5, 10, 20)
#: prefix of Prediction.extras keys that carry the count of one named output (e.g. RDBT's "count:regression")
OUTPUT_COUNT_PREFIX = "count:"


def image_seed(seed: int, image_key: str) -> int:
    """The seed of one image's prediction: ``SeedSequence([seed, sha256(image_key)[:8]])`` → ``[0, 2**63)``."""
    h = int.from_bytes(hashlib.sha256(image_key.encode("utf-8")).digest()[:8], "little")
    return int(np.random.SeedSequence([int(seed) % 2**32, h]).generate_state(2, dtype=np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


def _check_array(value, what: str, ndim: int, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise PluginError(f"{where}: {what} has shape {arr.shape}, expected {ndim}-D")
    if not np.isfinite(arr).all():
        raise PluginError(f"{where}: {what} contains NaN or inf")
    return arr


def validate_prediction(pred: Any, where: str) -> None:
    """Check a counter's :class:`~harness.types.Prediction` (see the module notes).

    Raises:
        PluginError: one line, prefixed by ``where`` (counter and image)."""
    from .types import Prediction

    if not isinstance(pred, Prediction):
        raise PluginError(f"{where}: predict returned {type(pred).__name__}, expected harness.Prediction")
    try:
        count = float(pred.count)
    except (TypeError, ValueError):
        raise PluginError(f"{where}: count {pred.count!r} is not a number") from None
    if not math.isfinite(count):
        raise PluginError(f"{where}: count is {count} (not finite); the prediction was not recorded")
    if pred.density is not None:
        _check_array(pred.density, "density", 2, where)
    if pred.points is not None:
        pts = np.asarray(pred.points, dtype=np.float64)
        if pts.size and (pts.ndim != 2 or pts.shape[1] != 2):
            raise PluginError(f"{where}: points have shape {pts.shape}, expected (M, 2) (x, y)")
        _check_array(pts.reshape(-1, 2), "points", 2, where)
        if pred.scores is not None and np.asarray(pred.scores).reshape(-1).shape[0] != len(pts.reshape(-1, 2)):
            raise PluginError(f"{where}: {len(np.asarray(pred.scores).reshape(-1))} scores for "
                              f"{len(pts.reshape(-1, 2))} points")


def points_and_scores(pred: Any, image_shape: tuple[int, ...], stride: int | None = None
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Scored points of a prediction for localisation metrics.

    The counter's ``points`` if it gives them (scores default to 1); otherwise the local maxima of its density
    map (:func:`harness.metrics.points_from_density`) mapped to input pixels with the counter's output
    ``stride`` (default ``round(image width / density width)``). ``(None, None)`` when it has neither."""
    if pred.points is not None:
        pts = np.asarray(pred.points, dtype=np.float64).reshape(-1, 2)
        scores = np.ones(len(pts)) if pred.scores is None else np.asarray(pred.scores, dtype=np.float64).reshape(-1)
        return pts, scores
    if pred.density is None:
        return None, None
    from .metrics import points_from_density

    density = np.asarray(pred.density)
    if stride is None:
        stride = max(1, int(round(image_shape[1] / max(1, density.shape[1]))))
    pts, scores = points_from_density(density, stride=stride)
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2), np.asarray(scores, dtype=np.float64)


def read_partial(path: Path) -> list[dict]:
    """Records of a ``predictions.partial.jsonl``; a torn last line (run killed mid-write) is dropped and the
    file rewritten without it."""
    path = Path(path)
    if not path.exists():
        return []
    records, good = [], []
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good.append(line)
    if "".join(good) != text:
        atomic_write_text(path, "".join(good))
    return records


def _round(a: np.ndarray | None, nd: int = 2) -> list | None:
    return None if a is None else np.round(np.asarray(a, dtype=np.float64), nd).tolist()


@dataclass
class EvalResult:
    """Per-image records (in ``refs`` order) and the metrics over them (:func:`metrics_from_records`)."""

    records: list[dict]
    metrics: dict
    resumed: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def predict_image(counter: Any, image: np.ndarray, seed: int, where: str):
    """One validated prediction with the image's own seed (see the module notes)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        if counter_is_stochastic(counter):
            pred = counter.predict(image, generator=torch.Generator().manual_seed(seed))
        else:
            pred = counter.predict(image)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        small = min(image.shape[:2]) < 64 or "too small" in first or "greater than" in first
        if not small:
            raise
        raise DataError(f"{where}: the image is {image.shape[1]}×{image.shape[0]} px, too small for counter "
                        f"{getattr(counter, 'name', type(counter).__name__)} ({first[:120]}); remove it or "
                        f"upscale it") from None
    validate_prediction(pred, where)
    return pred


class _Loading:
    """A map-style dataset of refs -> loaded samples, for :func:`load_samples` worker processes."""

    def __init__(self, refs):
        self.refs = list(refs)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        return self.refs[i].load()


def load_samples(refs: Sequence[Any], workers: int = 0, ahead: int = 0):
    """Yield ``ref.load()`` for each ref, in order; with ``workers > 0`` decoded in that many
    ``torch.utils.data.DataLoader`` worker processes (``--workers``), else in this process: with ``ahead > 0`` by
    one thread, ``ahead`` samples in advance, so that reading and decoding overlap with a model running on a GPU
    (:func:`load_ahead`), strictly in turn otherwise. Loading is pure (no random state), so the order and the
    samples are those of a plain loop; an error of ``ref.load()`` is raised when its sample is reached."""
    if workers <= 0 or len(refs) < 2:
        if ahead <= 0 or len(refs) < 2:
            for ref in refs:
                yield ref.load()
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-load")
        pending: deque = deque()
        it = iter(refs)
        try:
            for ref in it:
                pending.append(pool.submit(ref.load))
                if len(pending) > ahead:
                    break
            while pending:
                sample = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(nxt.load))
                yield sample
        finally:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)
        return
    from torch.utils.data import DataLoader

    yield from DataLoader(_Loading(refs), batch_size=None, num_workers=int(workers), collate_fn=lambda x: x,
                          prefetch_factor=2)


def load_ahead(device: Any) -> int:
    """How many samples :func:`load_samples` decodes ahead for a model on ``device``: 1 on a GPU (the host is idle
    while the model runs), 0 on a CPU, whose cores the model already uses (measured with scripts/overhead.py on 2
    cores: a look-ahead thread made the MCNN evaluation of 25 ShanghaiTech B images slower, not faster)."""
    return 1 if str(device).startswith("cuda") else 0


class _Extremes:
    """The density maps of the ``k`` best and ``k`` worst images seen so far (by absolute count error): what a
    cell's report overlays, kept without predicting those images again."""

    def __init__(self, k: int):
        self.k, self.items = k, []  # (abs_error, image_id, density)

    def offer(self, err: float, image_id: str, density) -> None:
        if self.k <= 0 or density is None:
            return
        self.items.append((err, image_id, density))
        if len(self.items) > 2 * self.k:
            self.items.sort(key=lambda t: t[0])
            self.items = self.items[:self.k] + self.items[-self.k:]

    def maps(self) -> dict:
        return {image_id: d for _, image_id, d in self.items}


def evaluate_counter(counter: Any, refs: Sequence[Any], *, seed: int = 0, partial_path: str | Path | None = None,
                     on_image: Callable[[int, int], None] | None = None, log: Any = None,
                     workers: int = 0, keep_extremes: int = 0) -> EvalResult:
    """Predict every labelled image of ``refs`` and score the predictions.

    Args:
        counter: a :class:`~harness.types.Counter` (optional ``stochastic``, ``localises``, ``stride``).
        refs: :class:`~harness.types.SampleRef` s (``load()`` gives image and points).
        seed: the cell seed; image ``ref`` is predicted with :func:`image_seed` ``(seed, ref.key)``.
        partial_path: JSON-lines progress file (resume; see the module notes), or None.
        on_image: ``on_image(done, total)`` after each image.
        log: logger for the resume line.
        workers: image-decoding worker processes (:func:`load_samples`; 0: this process, one image ahead
            on a GPU).
        keep_extremes: keep the density maps of this many best and worst images of this call in
            ``EvalResult.extra["densities"]`` (``{image_id: map}``; for report overlays).

    Returns:
        :class:`EvalResult`; ``records`` hold ``image_id``, ``gt_count``, ``pred_count``, ``abs_error``,
        ``n_points_dropped``, ``extras``, ``pred_points``, ``scores``, ``gt_points``.

    Raises:
        PluginError: an invalid prediction (non-finite count, bad shapes), naming counter and image.
        DataError: unreadable images or annotations.
    """
    t0 = time.perf_counter()
    localises = counter_localises(counter)
    stride = output_stride(counter)
    name = getattr(counter, "name", type(counter).__name__)
    records = read_partial(Path(partial_path)) if partial_path is not None else []
    done = {r["image_id"] for r in records}
    resumed = len(done)
    if resumed and log is not None:
        log.info("resuming evaluation: %d of %d images already predicted", resumed, len(refs))
    fh = open(partial_path, "a", encoding="utf-8") if partial_path is not None else None
    todo = [ref for ref in refs if ref.id not in done]
    last_sync = time.monotonic()
    extremes = _Extremes(keep_extremes)
    stack = contextlib.ExitStack()
    try:
        if on_image and resumed:
            on_image(resumed, len(refs))
        predict = stack.enter_context(stage("evaluate: predict", units=len(todo), unit="test image",
                                            params=params_of(counter)))
        samples = load_samples(todo, workers, load_ahead(getattr(counter, "device", "cpu")))
        for i, (ref, sample) in enumerate(zip(todo, samples), resumed + 1):
            where = f"counter {name!r} on image {ref.key}"
            with predict.unit():
                pred = predict_image(counter, sample.image, image_seed(seed, ref.key), where)
            pts, scores = (points_and_scores(pred, sample.image.shape, stride) if localises else (None, None))
            gt = float(sample.count)
            rec = {"image_id": sample.id, "gt_count": gt, "pred_count": float(pred.count),
                   "abs_error": abs(float(pred.count) - gt),
                   "n_points_dropped": int(sample.meta.get("n_points_dropped", 0)),
                   "extras": {k: float(v) for k, v in (pred.extras or {}).items()
                              if isinstance(v, (int, float, np.number)) and math.isfinite(float(v))},
                   "pred_points": _round(pts), "scores": _round(scores, 6), "gt_points": _round(sample.points),
                   "has_density": pred.density is not None}
            if "nwpu_sigma" in sample.meta:  # NWPU-Crowd head boxes: the official localisation evaluation
                rec["gt_nwpu_sigma"] = np.asarray(sample.meta["nwpu_sigma"]).tolist()
                rec["gt_nwpu_level"] = np.asarray(sample.meta["nwpu_level"]).tolist()
            if fh is not None:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()  # a killed process loses nothing flushed; fsync (power loss) at most once a second
                if time.monotonic() - last_sync > 1.0:
                    os.fsync(fh.fileno())
                    last_sync = time.monotonic()
            records.append(rec)
            extremes.offer(rec["abs_error"], rec["image_id"], pred.density)
            if on_image:
                on_image(i, len(refs))
            if predict.done:  # only in a dry run (harness.stages)
                break
    finally:
        stack.close()
        if fh is not None:
            fh.close()
    by_id = {r["image_id"]: r for r in records}
    ordered = [by_id[r.id] for r in refs if r.id in by_id]
    return EvalResult(records=ordered, metrics=metrics_from_records(ordered, localises=localises), resumed=resumed,
                      seconds=time.perf_counter() - t0, extra={"densities": extremes.maps()})


def output_metrics(records: list[dict]) -> dict:
    """MAE / MSE (root) per named output of a counter with several (e.g. RDBT's regression and detection heads):
    every ``extras`` key ``"count:<output>"`` becomes ``"mae:<output>"`` and ``"mse:<output>"``."""
    from .metrics import count_metrics

    names = sorted({k[len(OUTPUT_COUNT_PREFIX):] for r in records for k in (r.get("extras") or {})
                    if k.startswith(OUTPUT_COUNT_PREFIX)})
    out: dict = {}
    for n in names:
        key = OUTPUT_COUNT_PREFIX + n
        pairs = [(r["extras"][key], r["gt_count"]) for r in records if (r.get("extras") or {}).get(key) is not None]
        if pairs:
            m = count_metrics(np.array([p for p, _ in pairs]), np.array([g for _, g in pairs]))
            out[f"mae:{n}"], out[f"mse:{n}"] = float(m["mae"]), float(m["mse"])
    return out


def metrics_from_records(records: list[dict], *, localises: bool = True) -> dict:
    """MAE, MSE (root), NAE (:func:`harness.metrics.count_metrics`) with their 95 % bootstrap intervals over the
    images (``mae_ci``, ``mse_ci``; :mod:`harness.stats`), per-output MAE/MSE, and — for counters that localise,
    when every record has points — mAP over δ = 1..100 with AP@5/10/20 (``None`` otherwise), and where the target
    has NWPU-Crowd head boxes (``gt_nwpu_sigma``) the official NWPU localisation metrics under ``"nwpu"``
    (:func:`harness.metrics.nwpu_localisation`: P/R/F1 at σ_s and σ_l, per-level recall)."""
    from .metrics import count_metrics, localisation_map

    if not records:
        return {"n_images": 0, "mae": None, "mse": None, "nae": None, "map": None, "ap": {},
                **{f"ap@{d}": None for d in AP_DELTAS_REPORTED}}
    pred, gt = np.array([r["pred_count"] for r in records]), np.array([r["gt_count"] for r in records])
    metrics = dict(count_metrics(pred, gt))
    from .stats import bootstrap_mae_mse

    mae_ci, mse_ci = bootstrap_mae_mse(pred - gt)
    metrics.update({"mae_ci": mae_ci.to_list(), "mse_ci": mse_ci.to_list(),
                    "bootstrap": {"resamples": mae_ci.resamples, "level": mae_ci.level, "seed": mae_ci.seed,
                                  "unit": "test images"}})
    metrics.update(output_metrics(records))
    if localises and all(r["pred_points"] is not None for r in records):
        items = [(np.asarray(r["pred_points"], dtype=np.float64).reshape(-1, 2),
                  np.asarray(r["scores"], dtype=np.float64).reshape(-1),
                  np.asarray(r["gt_points"], dtype=np.float64).reshape(-1, 2)) for r in records]
        loc = localisation_map(items, deltas=MAP_DELTAS)
        ap = {str(int(d)): _finite(float(v)) for d, v in loc["ap"].items()}
        metrics["map"], metrics["ap"] = _finite(float(loc["map"])), ap
        for d in AP_DELTAS_REPORTED:
            metrics[f"ap@{d}"] = ap.get(str(d))
        if all("gt_nwpu_sigma" in r for r in records):
            from .metrics import nwpu_localisation

            metrics["nwpu"] = nwpu_localisation([(p, g, r["gt_nwpu_sigma"], r["gt_nwpu_level"])
                                                 for (p, _, g), r in zip(items, records)])
    else:
        metrics.update({"map": None, "ap": {}, **{f"ap@{d}": None for d in AP_DELTAS_REPORTED}})
    return {k: _finite(v) for k, v in metrics.items()}


def _finite(x: Any) -> Any:
    """JSON-safe number: NaN/inf -> None."""
    if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
        return None
    return x


def predictions_csv(records: list[dict]) -> str:
    """``image_id, gt_count, pred_count, abs_error`` (+ one column per numeric prediction extra) as CSV text."""
    import pandas as pd

    rows = []
    for r in records:
        row = {"image_id": r["image_id"], "gt_count": r["gt_count"], "pred_count": r["pred_count"],
               "abs_error": r["abs_error"]}
        row.update(r.get("extras") or {})
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["image_id", "gt_count", "pred_count", "abs_error"])
    return df.to_csv(index=False)


__all__ = ["evaluate_counter", "EvalResult", "image_seed", "validate_prediction", "points_and_scores",
           "read_partial", "metrics_from_records", "output_metrics", "predictions_csv", "predict_image",
           "MAP_DELTAS", "AP_DELTAS_REPORTED", "OUTPUT_COUNT_PREFIX"]
