"""Readers of the datasets that ship an official val split: JHU-Crowd++ and NWPU-Crowd (original layouts; the
common behaviour is described in :mod:`harness.data.readers`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError, DataRootError
from ..types import SampleRef
from .annotations import _as_points
from .readers import (_IMAGE_RE, _ROOT_HINT, SPLITS, _Annotation, _find_dataset_dir, _FolderDataset, _listing, _pair,
                      log, natural_key, resolve_data_root, unmatched_error)

# --------------------------------------------------------------------------------------------- JHU


class JHUCrowd(_FolderDataset):
    """JHU-Crowd++ v2.0 (Sindagi, Yasarla & Patel, TPAMI 2020): official train / val / test splits.

    ``root`` may be the data root (holding ``jhu_crowd_v2.0/``) or that folder itself.
    ``{split}/gt/nnnn.txt`` has one head per line, ``x y w h o b``: head centre ``(x, y)`` (the points),
    box width/height, occlusion level (1 visible, 2 partial, 3 full) and blur (0/1); an empty file means no
    heads. Per-head extras in ``meta``: ``boxes`` ``(N, 4)`` ``(x, y, w, h)``, ``occlusion`` ``(N,) int``,
    ``blur`` ``(N,) int``. ``{split}/image_labels.txt`` (``name,count,scene,weather,distractor``) adds
    ``meta["label_count"]``, ``scene``, ``weather`` (0 none, 1 fog/haze, 2 rain, 3 snow), ``distractor``.
    """

    official_val = True

    def __init__(self, root: str | Path | None, *, name: str = "JHU"):
        data_root = resolve_data_root(root)
        folder = _find_dataset_dir(
            "JHU-Crowd++", data_root,
            [data_root / "jhu_crowd_v2.0", data_root / "jhu_crowd_plusplus", data_root / "JHU-Crowd++", data_root],
            lambda p: any((p / s / "images").is_dir() for s in SPLITS),
            "jhu_crowd_v2.0/{train,val,test}/images/nnnn.jpg + gt/nnnn.txt")
        super().__init__(name, folder)
        self._labels: dict[str, dict[str, dict]] = {}

    def _official(self, split: str) -> list[tuple[str, Path, Path]]:
        sub = self.root / split
        img_dir, gt_dir = sub / "images", sub / "gt"
        for d in (img_dir, gt_dir):
            if not d.is_dir():
                raise DataRootError(f"{self.name} {split}: folder {d} is missing; re-extract JHU-Crowd++ or "
                                    f"{_ROOT_HINT}")
        images = _listing(img_dir, r"(.+)" + _IMAGE_RE)
        anns = _listing(gt_dir, r"(.+)\.txt")
        return _pair(f"{self.name} {split} ({sub})", images, anns, ann_for=lambda i: f"gt/{i}.txt",
                     image_for=lambda i: f"images/{i}.jpg")

    def _image_labels(self, split: str) -> dict[str, dict]:
        if split not in self._labels:
            path = self.root / split / "image_labels.txt"
            labels: dict[str, dict] = {}
            if path.is_file():
                for n, line in enumerate(path.read_text().splitlines(), 1):
                    cols = [c.strip() for c in line.split(",")]
                    if not line.strip():
                        continue
                    if len(cols) < 5:
                        raise DataError(f"{path} line {n}: expected 'name,count,scene,weather,distractor', got "
                                        f"{line.strip()!r}; re-download JHU-Crowd++")
                    try:
                        labels[Path(cols[0]).stem] = {"label_count": int(float(cols[1])), "scene": cols[2],
                                                      "weather": int(float(cols[3])),
                                                      "distractor": int(float(cols[4]))}
                    except ValueError:
                        raise DataError(f"{path} line {n}: non-numeric count/weather/distractor in "
                                        f"{line.strip()!r}; re-download JHU-Crowd++") from None
            self._labels[split] = labels
        return self._labels[split]

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        path = ref.annotation_path
        rows = []
        try:
            text = path.read_text()
        except OSError as exc:
            raise DataError(f"cannot read annotation file {path}: {exc.strerror or exc}; re-download it") from None
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            cols = line.replace(",", " ").split()
            try:
                vals = [float(c) for c in cols]
            except ValueError:
                vals = []
            if len(vals) < 2:
                raise DataError(f"{path} line {n}: expected 'x y w h o b' numbers, got {line.strip()!r}; "
                                f"re-download JHU-Crowd++")
            rows.append((vals + [np.nan] * 6)[:6])
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        meta = dict(self._image_labels(ref.split).get(ref.id, {}))
        per_head = {"boxes": a[:, :4].copy(),
                    "occlusion": np.nan_to_num(a[:, 4], nan=-1).astype(np.int64),
                    "blur": np.nan_to_num(a[:, 5], nan=-1).astype(np.int64)}
        return _Annotation(np.ascontiguousarray(a[:, :2]), meta, per_head)


# --------------------------------------------------------------------------------------------- NWPU


class NWPUCrowd(_FolderDataset):
    """NWPU-Crowd (Wang, Gao, Gao, Li & Li, TPAMI 2020): 3109 train / 500 val / 1500 test images.

    ``root`` may be the data root (holding ``NWPU-Crowd/``) or that folder itself; it holds
    ``images/nnnn.jpg``, ``jsons/nnnn.json`` (``points``: list of ``[x, y]``; ``human_num``; extras kept
    in ``meta["human_num"]``) and ``train.txt`` / ``val.txt`` / ``test.txt`` (first token = image id).

    Test labels are withheld by the NWPU-Crowd authors (predictions are scored on their server). So
    ``samples("test")`` lists the test images (``ref.load_image()`` works, e.g. to write a submission)
    with ``annotation_path=None`` when no json exists, and ``ref.load()`` then raises a DataError saying
    the labels are withheld: evaluate on ``val`` instead. A test json that *is* present is read normally.
    """

    official_val = True
    protocol = None

    @property
    def eval_split(self) -> str:
        """``val`` (the test labels are withheld, or only train/val were downloaded: an empty ``test.txt``), or
        ``test`` when there are test images and every one has its json."""
        test = self.samples("test")
        return "test" if test and all(r.annotation_path is not None for r in test) else "val"

    def __init__(self, root: str | Path | None, *, name: str = "NWPU"):
        data_root = resolve_data_root(root)
        folder = _find_dataset_dir(
            "NWPU-Crowd", data_root,
            [data_root / "NWPU-Crowd", data_root / "NWPU_Crowd", data_root / "NWPU", data_root],
            lambda p: (p / "images").is_dir() and any((p / f"{s}.txt").is_file() for s in SPLITS),
            "NWPU-Crowd/images/nnnn.jpg + jsons/nnnn.json + train.txt, val.txt, test.txt")
        super().__init__(name, folder)

    def _official(self, split: str) -> list[tuple[str, Path, Path | None]]:
        listfile = self.root / f"{split}.txt"
        if not listfile.is_file():
            raise DataRootError(f"{self.name} {split}: split list {listfile} is missing; re-extract NWPU-Crowd or "
                                f"{_ROOT_HINT}")
        ids = []
        for line in listfile.read_text().splitlines():
            tok = line.split()
            if tok:
                ids.append(Path(tok[0]).stem)
        ids = sorted(dict.fromkeys(ids), key=natural_key)
        img_dir, json_dir = self.root / "images", self.root / "jsons"
        found = {i: [p for p in (img_dir / f"{i}.jpg", img_dir / f"{i}.png") if p.is_file()] for i in ids}
        anns = {i: json_dir / f"{i}.json" for i in ids if (json_dir / f"{i}.json").is_file()}
        unmatched_error(f"{self.name} {split} ({listfile})", {
            "listed image(s) missing": [f"images/{i}.jpg" for i in ids if not found[i]],
            "id(s) with two image files": [f"{i}.jpg and {i}.png" for i in ids if len(found[i]) > 1],
            "image(s) without annotation": [] if split == "test" else [f"{i}.jpg (missing jsons/{i}.json)"
                                                                        for i in ids if i not in anns]},
            "restore the missing files from the original archive and keep one image file per id")
        return [(i, found[i][0], anns.get(i)) for i in ids]

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        path = ref.annotation_path
        if path is None:
            raise DataError(f"{self.name} test labels are withheld by the NWPU-Crowd authors (no "
                            f"jsons/{ref.id}.json for {ref.image_path}); evaluate on the 'val' split, or "
                            f"submit test predictions to the NWPU-Crowd benchmark server")
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DataError(f"annotation file {path} does not exist; re-download NWPU-Crowd") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot parse annotation file {path}: {' '.join(str(exc).split())}; "
                            f"re-download it") from None
        if not isinstance(data, dict) or "points" not in data:
            keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{path}: expected key 'points' (a list of [x, y] head points) but found: "
                            f"{keys or '(none)'}; re-download NWPU-Crowd")
        points = _as_points(data["points"] if data["points"] else np.zeros((0, 2)), path, "'points'")
        meta, per_head = {}, {}
        boxes = data.get("boxes")
        if isinstance(boxes, list) and len(boxes) == len(points):
            from ..metrics import nwpu_levels, nwpu_sigmas

            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # x1, y1, x2, y2 (the 2020-05-22 box labels)
            wh = np.abs(b[:, 2:4] - b[:, 0:2])
            per_head["nwpu_sigma"] = np.stack(nwpu_sigmas(wh), axis=1)
            per_head["nwpu_level"] = nwpu_levels(wh)
        if "human_num" in data:
            meta["human_num"] = int(data["human_num"])
            if meta["human_num"] != len(points):
                log.warning("%s: human_num=%d but %d points; the points are used", path, meta["human_num"],
                            len(points))
        return _Annotation(points, meta, per_head)


__all__ = ["JHUCrowd", "NWPUCrowd"]
