"""Readers of the original on-disk layouts of the crowd-counting datasets.

Each class implements the :class:`harness.specs.Dataset` protocol: ``samples(split)`` lists a split as
:class:`~harness.specs.SampleRef` s in natural numeric order (``IMG_2`` before ``IMG_10``); nothing is read
until ``ref.load()`` (image + points) or ``ref.load_image()`` (image only).

Layouts (the originals, as distributed by their authors):

- **ShanghaiTech** part A / B (Zhang et al., CVPR 2016, "Single-image crowd counting via multi-column CNN"):
  ``part_{A,B}[_final]/{train,test}_data/images/IMG_n.jpg`` +
  ``ground[-_]truth/GT_IMG_n.mat`` with ``image_info[0,0][0,0]['location']`` ``(N, 2)`` x, y.
- **UCF_CC_50** (Idrees et al., CVPR 2013): ``n.jpg`` + ``n_ann.mat`` (``annPoints`` ``(N, 2)`` x, y), 50
  grayscale images, 5-fold cross-validation: fold k tests on images ``10(k-1)+1 .. 10k``.
- **UCF-QNRF** (Idrees et al., ECCV 2018): ``{Train,Test}/img_nnnn.jpg`` + ``img_nnnn_ann.mat`` (``annPoints``).
- **JHU-Crowd++** (Sindagi et al., TPAMI 2020): ``{train,val,test}/images/nnnn.jpg`` + ``gt/nnnn.txt``
  (one head per line: ``x y w h o b`` = head centre, box size, occlusion level, blur flag) +
  ``image_labels.txt`` (``name,count,scene,weather,distractor``). Official val split.
- **NWPU-Crowd** (Wang et al., TPAMI 2020): ``images/nnnn.jpg`` + ``jsons/nnnn.json`` (``points``: list of
  ``[x, y]``; ``human_num``) + ``{train,val,test}.txt`` (first token of a line = image id). Official val
  split. Test labels are withheld by the authors (see :class:`NWPUCrowd`).

Common behaviour:

- ``points``: ``(N, 2) float64`` ``(x, y)`` in stored-pixel coordinates of the image (as annotated).
  Points outside ``0 <= x < W, 0 <= y < H`` (or not finite) are dropped: ``meta["n_points_dropped"]``
  counts them (``meta["n_points_annotated"]`` is the count in the file) and logger ``harness.data`` warns.
  An image with no heads gives ``points.shape == (0, 2)``.
- Datasets without an official val split hold out a seeded fraction of train
  (:func:`harness.data.splits.split_train_val`, default 10 %, seed 0); test is never touched.
- Bad input raises one-line errors: :class:`~harness.errors.DataRootError` when the data root or the
  dataset folder is missing (naming where it looked, and ``--data-root`` / ``HARNESS_DATA``);
  :class:`~harness.errors.DataError` when listing a split finds images without annotations or the reverse
  (all of them, in one line), or an annotation file is unreadable or lacks the expected keys.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import ConfigError, DataError, DataRootError
from ..types import Sample, SampleRef
from .annotations import _as_points, _dig, _scalar, filter_points, load_mat
from .images import read_image, read_image_with_meta
from .splits import split_train_val

__all__ = [
    "SPLITS", "natural_key", "resolve_data_root", "ShanghaiTech", "UCFCC50", "UCFCC50Pooled", "UCFQNRF",
    "load_mat", "filter_points",
]

log = logging.getLogger("harness.data")

SPLITS = ("train", "val", "test")
_IMAGE_RE = r"\.(?:jpe?g|png)"
_MAX_NAMES = 3
_ROOT_HINT = "pass --data-root DIR or set HARNESS_DATA to the folder that contains it"


# --------------------------------------------------------------------------------------------- helpers


def natural_key(name: str) -> list:
    """Sort key putting ``IMG_2`` before ``IMG_10`` (digit runs compare as integers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def resolve_data_root(root: str | Path | None) -> Path:
    """The data root: ``root`` if given, else the ``HARNESS_DATA`` environment variable.

    Raises:
        DataRootError: neither is set, or the folder does not exist.
    """
    if root is None or str(root) == "":
        env = os.environ.get("HARNESS_DATA")
        if not env:
            raise DataRootError("no data root given; pass --data-root DIR or set HARNESS_DATA to the folder "
                                "holding the datasets (e.g. the one containing ShanghaiTech/)")
        root = env
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataRootError(f"data root {path} does not exist or is not a folder; pass --data-root DIR or "
                            f"set HARNESS_DATA to the folder holding the datasets")
    return path


def _find_dataset_dir(label: str, root: Path, candidates: Sequence[Path],
                      looks_right: Callable[[Path], bool], expected: str) -> Path:
    seen: list[Path] = []
    for c in candidates:
        if c in seen:
            continue
        seen.append(c)
        if c.is_dir() and looks_right(c):
            return c
    raise DataRootError(f"{label} not found under data root {root} (looked for "
                        f"{', '.join(str(s) for s in seen)}); expected {expected}; {_ROOT_HINT}")


def _listing(folder: Path, pattern: str) -> dict[str, Path]:
    """``{id: path}`` for the files in ``folder`` whose name fully matches ``pattern`` (group 1 = id);
    hidden files (e.g. macOS ``._IMG_1.jpg``) are ignored.

    Raises:
        DataError: two files with one id (e.g. ``IMG_3.jpg`` and ``IMG_3.png``), naming both: which one is the
            photo cannot be guessed (directory order would decide silently).
    """
    rx = re.compile(pattern, re.IGNORECASE)
    out: dict[str, Path] = {}
    clashes: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        m = rx.fullmatch(p.name)
        if m and p.is_file():
            if m.group(1) in out:
                clashes.append(f"{out[m.group(1)].name} and {p.name}")
            out[m.group(1)] = p
    if clashes:
        raise DataError(f"{folder}: {len(clashes)} id(s) with two files ({_few(clashes)}); keep one file per image "
                        f"(move the stray copy out of the folder)")
    return out


def _few(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_NAMES])
    return shown + (f" and {len(names) - _MAX_NAMES} more" if len(names) > _MAX_NAMES else "")


def _pair(label: str, images: dict[str, Path], anns: dict[str, Path], ann_for: Callable[[str], str],
          image_for: Callable[[str], str]) -> list[tuple[str, Path, Path]]:
    """Match images and annotations by id; raise one DataError listing every unmatched file."""
    no_ann = sorted(set(images) - set(anns), key=natural_key)
    no_img = sorted(set(anns) - set(images), key=natural_key)
    unmatched_error(label, {"image(s) without annotation": [f"{images[i].name} (missing {ann_for(i)})" for i in no_ann],
                            "annotation(s) without image": [f"{anns[i].name} (missing {image_for(i)})"
                                                            for i in no_img]},
                    "restore the missing files from the original archive or remove the unmatched ones")
    return [(i, images[i], anns[i]) for i in sorted(images, key=natural_key)]


def unmatched_error(label: str, groups: dict[str, list[str]], fix: str) -> None:
    """Raise one DataError listing every non-empty group of unmatched files (``"<n> <group>: a, b and 3 more"``).

    Raises:
        DataError: when any group is non-empty."""
    parts = [f"{len(items)} {group}: {_few(items)}" for group, items in groups.items() if items]
    if parts:
        raise DataError(f"{label}: {'; '.join(parts)}; {fix}")


# --------------------------------------------------------------------------------------------- base


class _Annotation:
    """Points read from an annotation file plus per-image meta and per-head arrays (filtered with points)."""

    __slots__ = ("points", "meta", "per_head")

    def __init__(self, points: np.ndarray, meta: dict | None = None, per_head: dict | None = None):
        self.points, self.meta, self.per_head = points, meta or {}, per_head or {}


class _FolderDataset:
    """Shared logic: split selection, held-out val, SampleRef construction, point filtering."""

    #: whether the dataset ships an official val split
    official_val: bool = False

    def __init__(self, name: str, root: Path, *, val_fraction: float = 0.1, seed: int = 0):
        self.name = name
        self.root = root
        self.val_fraction = val_fraction
        self.seed = seed
        self._cache: dict[str, list[SampleRef]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, root={str(self.root)!r})"

    # subclasses ------------------------------------------------------------------------------
    def _official(self, split: str) -> list[tuple[str, Path, Path | None]]:
        """``(id, image_path, annotation_path)`` of an official split, naturally sorted."""
        raise NotImplementedError

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        raise NotImplementedError

    # protocol --------------------------------------------------------------------------------
    def samples(self, split: str) -> list[SampleRef]:
        """The split's images in natural order.

        Raises:
            ConfigError: ``split`` is not train, val or test.
            DataRootError: the split's folder is missing.
            DataError: images without annotations or annotations without images.
        """
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r} for dataset {self.name}; use one of {', '.join(SPLITS)}")
        if split not in self._cache:
            if self.official_val or split == "test":
                self._cache[split] = [self._ref(split, *t) for t in self._official(split)]
            else:
                train, val = split_train_val([self._ref("train", *t) for t in self._official("train")],
                                             self.val_fraction, self.seed)
                self._cache["train"], self._cache["val"] = train, val
        return list(self._cache[split])

    def _ref(self, split: str, id: str, image_path: Path, annotation_path: Path | None) -> SampleRef:
        return SampleRef(dataset=self.name, split=split, id=id, image_path=image_path,
                         annotation_path=annotation_path, loader=self._load, image_loader=self._load_image)

    def _load_image(self, ref: SampleRef) -> np.ndarray:
        return read_image(ref.image_path)

    def _load(self, ref: SampleRef) -> Sample:
        ann = self._read_annotation(ref)
        image, imeta = read_image_with_meta(ref.image_path)
        h, w = image.shape[:2]
        keep = filter_points(ann.points, h, w)
        n_dropped = int((~keep).sum())
        if n_dropped:
            log.warning("%s/%s/%s: dropped %d of %d annotated points outside the %dx%d (WxH) image",
                        self.name, ref.split, ref.id, n_dropped, len(keep), w, h)
        meta = {**imeta, **ann.meta, "image_path": str(ref.image_path),
                "annotation_path": str(ref.annotation_path), "n_points_annotated": int(len(keep)),
                "n_points_dropped": n_dropped}
        for key, arr in ann.per_head.items():
            meta[key] = arr[keep]
        return Sample(id=ref.id, image=image, points=ann.points[keep], meta=meta)


# --------------------------------------------------------------------------------------------- ShanghaiTech


class ShanghaiTech(_FolderDataset):
    """ShanghaiTech part A or B (Zhang et al., CVPR 2016).

    ``root`` may be the data root (holding ``ShanghaiTech/``), the ``ShanghaiTech`` folder, or a part
    folder itself; ``part_A``/``part_A_final`` and ``ground-truth``/``ground_truth`` are both accepted.
    Splits: ``test`` = ``test_data`` (A: 182, B: 316 images); ``train``/``val`` = ``train_data`` (A: 300,
    B: 400) with a seeded ``val_fraction`` held out (see :func:`~harness.data.splits.split_train_val`).
    Points: ``image_info[0,0][0,0]['location']`` of ``GT_IMG_n.mat``.
    """

    def __init__(self, root: str | Path | None, part: str = "A", *, name: str | None = None,
                 val_fraction: float = 0.1, seed: int = 0):
        part = part.upper()
        if part not in ("A", "B"):
            raise ConfigError(f"ShanghaiTech has parts A and B, not {part!r}")
        data_root = resolve_data_root(root)
        names = (f"part_{part}", f"part_{part}_final")
        cands: list[Path] = []
        if data_root.name in names:
            cands.append(data_root)
        for base in (data_root, data_root / "ShanghaiTech", data_root / "ShanghaiTech_Crowd_Counting_Dataset"):
            cands += [base / n for n in names]
        folder = _find_dataset_dir(
            f"ShanghaiTech part {part}", data_root, cands,
            lambda p: (p / "train_data").is_dir() or (p / "test_data").is_dir(),
            f"ShanghaiTech/part_{part}/{{train,test}}_data/images")
        super().__init__(name or f"SH{part}", folder, val_fraction=val_fraction, seed=seed)
        self.part = part

    def _official(self, split: str) -> list[tuple[str, Path, Path]]:
        sub = self.root / ("train_data" if split == "train" else "test_data")
        img_dir = sub / "images"
        gt_dir = next((sub / g for g in ("ground-truth", "ground_truth") if (sub / g).is_dir()), None)
        if not img_dir.is_dir() or gt_dir is None:
            missing = img_dir if not img_dir.is_dir() else sub / "ground-truth"
            raise DataRootError(f"{self.name} {split}: folder {missing} is missing (expected {sub}/images and "
                                f"{sub}/ground-truth); re-extract ShanghaiTech or {_ROOT_HINT}")
        images = _listing(img_dir, r"(.+)" + _IMAGE_RE)
        anns = _listing(gt_dir, r"GT_(.+)\.mat")
        return _pair(f"{self.name} {split} ({sub})", images, anns,
                     ann_for=lambda i: f"{gt_dir.name}/GT_{i}.mat", image_for=lambda i: f"images/{i}.jpg")

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        path = ref.annotation_path
        mat = load_mat(path)
        loc = _dig(mat.get("image_info"), "location")
        if loc is None:
            keys = ", ".join(k for k in mat if not k.startswith("__")) or "(none)"
            raise DataError(f"{path}: expected key path image_info[0,0][0,0]['location'] (an (N, 2) array of "
                            f"x, y head points) but found top-level keys: {keys}; re-download the "
                            f"ShanghaiTech ground truth")
        number = _scalar(_dig(mat.get("image_info"), "number"))
        return _Annotation(_as_points(loc, path, "image_info[0,0][0,0]['location']", expected=number))


# --------------------------------------------------------------------------------------------- UCF


def _ann_points(path: Path, dataset: str) -> np.ndarray:
    mat = load_mat(path)
    if "annPoints" not in mat:
        keys = ", ".join(k for k in mat if not k.startswith("__")) or "(none)"
        raise DataError(f"{path}: expected key 'annPoints' (an (N, 2) array of x, y head points) but found "
                        f"keys: {keys}; re-download the {dataset} annotations")
    return _as_points(mat["annPoints"], path, "annPoints")


class UCFCC50(_FolderDataset):
    """UCF_CC_50 (Idrees et al., CVPR 2013): 50 grayscale images of dense crowds (read as RGB).

    The standard 5-fold protocol: fold ``k`` (1..5) tests on images ``10(k-1)+1 .. 10k`` and trains on the
    other 40 (``val`` = a seeded ``val_fraction`` of those 40). ``root`` may be the data root (holding
    ``UCF_CC_50/``) or the ``UCF_CC_50`` folder itself. Points: ``annPoints`` of ``n_ann.mat``.
    """

    def __init__(self, root: str | Path | None, fold: int = 1, *, name: str | None = None,
                 val_fraction: float = 0.1, seed: int = 0):
        if fold not in (1, 2, 3, 4, 5):
            raise ConfigError(f"UCF_CC_50 has folds 1..5, not {fold!r}")
        data_root = resolve_data_root(root)
        folder = _find_dataset_dir(
            "UCF_CC_50", data_root, [data_root / "UCF_CC_50", data_root / "UCF-CC-50", data_root],
            lambda p: any(p.glob("*_ann.mat")), "UCF_CC_50/{1..50}.jpg + {1..50}_ann.mat")
        super().__init__(name or f"UCF50-F{fold}", folder,
                         val_fraction=val_fraction, seed=seed)
        self.fold = fold

    def _official(self, split: str) -> list[tuple[str, Path, Path]]:
        images = _listing(self.root, r"(\d+)" + _IMAGE_RE)
        anns = _listing(self.root, r"(\d+)_ann\.mat")
        pairs = _pair(f"{self.name} ({self.root})", images, anns, ann_for=lambda i: f"{i}_ann.mat",
                      image_for=lambda i: f"{i}.jpg")
        lo, hi = 10 * (self.fold - 1) + 1, 10 * self.fold
        in_fold = [t for t in pairs if lo <= int(t[0]) <= hi]
        return in_fold if split == "test" else [t for t in pairs if not lo <= int(t[0]) <= hi]

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        return _Annotation(_ann_points(ref.annotation_path, "UCF_CC_50"))


class UCFCC50Pooled(_FolderDataset):
    """UCF_CC_50 scored by its standard protocol: all 50 images, pooled over the 5 folds (Idrees et al., CVPR 2013).

    ``samples("test")`` lists all 50 images and ``folds`` holds the 5 :class:`UCFCC50` folds: a method that trains on
    UCF_CC_50 (``UCF50→UCF50``) or looks at its unlabelled images is fitted once per fold and scored on that fold's
    10 test images; a method that does neither (e.g. ``SHA→UCF50``) is fitted once and scored on all 50 — the same
    numbers, pooled (see :func:`harness.cell.plan_fits`). As a *source* for another target, ``train``/``val`` are
    all 50 images with a seeded ``val_fraction`` held out.
    """

    protocol = "5-fold pooled"

    def __init__(self, root: str | Path | None, *, name: str = "UCF50", val_fraction: float = 0.1, seed: int = 0):
        self.folds = [UCFCC50(root, k, val_fraction=val_fraction, seed=seed) for k in range(1, 6)]
        super().__init__(name, self.folds[0].root, val_fraction=val_fraction, seed=seed)

    def _official(self, split: str) -> list[tuple[str, Path, Path]]:
        return sorted((t for f in self.folds for t in f._official("test")), key=lambda t: natural_key(t[0]))

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        return _Annotation(_ann_points(ref.annotation_path, "UCF_CC_50"))


class UCFQNRF(_FolderDataset):
    """UCF-QNRF (Idrees et al., ECCV 2018): 1201 train / 334 test images.

    ``root`` may be the data root (holding ``UCF-QNRF_ECCV18/`` or ``UCF-QNRF/``) or that folder itself.
    ``Train/img_nnnn.jpg`` + ``img_nnnn_ann.mat`` (``annPoints``); ``Test/`` likewise. No official val:
    a seeded ``val_fraction`` of Train is held out.
    """

    def __init__(self, root: str | Path | None, *, name: str = "QNRF", val_fraction: float = 0.1, seed: int = 0):
        data_root = resolve_data_root(root)
        folder = _find_dataset_dir(
            "UCF-QNRF", data_root,
            [data_root / "UCF-QNRF_ECCV18", data_root / "UCF-QNRF", data_root / "UCF_QNRF", data_root],
            lambda p: (p / "Train").is_dir() or (p / "Test").is_dir(),
            "UCF-QNRF_ECCV18/{Train,Test}/img_nnnn.jpg")
        super().__init__(name, folder, val_fraction=val_fraction, seed=seed)

    def _official(self, split: str) -> list[tuple[str, Path, Path]]:
        sub = self.root / ("Train" if split == "train" else "Test")
        if not sub.is_dir():
            raise DataRootError(f"{self.name} {split}: folder {sub} is missing; re-extract UCF-QNRF or {_ROOT_HINT}")
        images = _listing(sub, r"(.+)" + _IMAGE_RE)
        anns = _listing(sub, r"(.+)_ann\.mat")
        return _pair(f"{self.name} {split} ({sub})", images, anns, ann_for=lambda i: f"{i}_ann.mat",
                     image_for=lambda i: f"{i}.jpg")

    def _read_annotation(self, ref: SampleRef) -> _Annotation:
        return _Annotation(_ann_points(ref.annotation_path, "UCF-QNRF"))
