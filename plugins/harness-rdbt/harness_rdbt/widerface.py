"""WIDER FACE (Yang, Luo, Loy & Tang, "WIDER FACE: A Face Detection Benchmark", CVPR 2016) in its original layout:
the face-detection data RDBT pre-trains its detector CSP on before the source stage (RDBT §4.2).

Layout, as distributed at http://shuoyang1213.me/WIDERFACE/ (``WIDER_train.zip``, ``WIDER_val.zip``,
``WIDER_test.zip``, ``wider_face_split.zip``), unpacked into ``<data root>/WIDER_FACE/``::

    WIDER_train/images/<event>/<name>.jpg        12 880 images (61 events)
    WIDER_val/images/<event>/<name>.jpg           3 226 images
    WIDER_test/images/<event>/<name>.jpg         16 097 images (labels withheld by the authors)
    wider_face_split/wider_face_train_bbx_gt.txt
    wider_face_split/wider_face_val_bbx_gt.txt
    wider_face_split/wider_face_test_filelist.txt

``wider_face_<split>_bbx_gt.txt`` (the split's ``readme.txt``): per image, its path relative to
``WIDER_<split>/images/``, the number of faces N, then N lines ``x1 y1 w h blur expression illumination invalid
occlusion pose`` (box corner and size in pixels; the six attributes are integer flags). An image with no face has
N = 0 followed by one line of zeros.

A :class:`WiderFace` sample's ``points`` are the box centres ``(x1 + w/2, y1 + h/2)``; ``meta["boxes"]`` holds the
``(N, 4)`` boxes ``x1, y1, w, h`` and ``meta["invalid"]`` / ``meta["blur"]`` / ``meta["occlusion"]`` the per-box flags
(the detector's pre-training drops invalid boxes). Boxes of zero width or height are dropped (``meta["n_dropped"]``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from harness import DataError, Sample, SampleRef, read_image

FOLDERS = ("WIDER_FACE", "WIDERFACE", "widerface", "WIDER")
GT_FILES = {"train": "wider_face_train_bbx_gt.txt", "val": "wider_face_val_bbx_gt.txt"}
TEST_LIST = "wider_face_test_filelist.txt"
#: the official split sizes (CVPR 2016 §3: 40 % / 10 % / 50 % of 32 203 images)
OFFICIAL = {"train": 12880, "val": 3226, "test": 16097}
HOW = ("download WIDER_train.zip, WIDER_val.zip and wider_face_split.zip from http://shuoyang1213.me/WIDERFACE/ "
       "and unpack them into DATA_ROOT/WIDER_FACE/ (pass --data-root or set HARNESS_DATA)")


def parse_bbx_gt(text: str, where: str) -> dict[str, np.ndarray]:
    """``{relative image path: (N, 10) float64}`` of a ``wider_face_*_bbx_gt.txt`` (see the module notes).

    Raises:
        DataError: a malformed file (one line naming the file, the line and the fix)."""
    lines = text.splitlines()
    out: dict[str, np.ndarray] = {}
    i = 0
    while i < len(lines):
        name = lines[i].strip()
        if not name:
            i += 1
            continue
        if not re.search(r"\.(jpe?g|png)$", name, re.I):
            raise DataError(f"{where}:{i + 1}: expected an image path, got {name[:60]!r}; re-download "
                            f"wider_face_split.zip")
        try:
            n = int(lines[i + 1].split()[0])
        except (IndexError, ValueError):
            raise DataError(f"{where}:{i + 2}: expected the face count of {name}; re-download "
                            f"wider_face_split.zip") from None
        rows = lines[i + 2:i + 2 + max(n, 1)]
        try:
            boxes = np.array([[float(v) for v in r.split()[:10]] for r in rows], dtype=np.float64).reshape(-1, 10)
        except ValueError:
            raise DataError(f"{where}:{i + 3}: the boxes of {name} are not numbers; re-download "
                            f"wider_face_split.zip") from None
        if len(rows) < max(n, 1) or boxes.shape[0] != max(n, 1):
            raise DataError(f"{where}: {name} declares {n} faces but the file ends or a line is short; "
                            f"re-download wider_face_split.zip")
        out[name] = boxes[:n]
        i += 2 + max(n, 1)
    return out


class WiderFace:
    """WIDER FACE ``train`` / ``val`` (labelled) and ``test`` (images only); scored on ``val``.

    ``samples(split)`` lists the split in the annotation file's order (event folders, then files). Image ids are the
    paths relative to ``WIDER_<split>/images/`` (``"0--Parade/0_Parade_marchingband_1_5.jpg"``).

    Raises:
        DataError: the dataset folder or an annotation file is missing (one line saying what to download and
            where to put it), or an annotation file is malformed."""

    eval_split = "val"
    protocol = "WIDER FACE (Yang et al. 2016): face boxes; points are box centres"

    def __init__(self, root: str | Path | None, name: str = "WIDERFACE"):
        self.name = name
        if root is None:
            raise DataError(f"{name} needs a data root: {HOW}")
        base = Path(root)
        found = [base / f for f in FOLDERS if (base / f / "wider_face_split").is_dir()]
        if (base / "wider_face_split").is_dir():
            found.insert(0, base)
        if not found:
            raise DataError(f"WIDER FACE not found under {base} (looked for {', '.join(FOLDERS)}/wider_face_split): "
                            f"{HOW}")
        self.root = found[0]
        self._gt: dict[str, dict[str, np.ndarray]] = {}

    def _boxes(self, split: str) -> dict[str, np.ndarray]:
        if split not in self._gt:
            path = self.root / "wider_face_split" / GT_FILES[split]
            if not path.is_file():
                raise DataError(f"{path} not found: {HOW}")
            self._gt[split] = parse_bbx_gt(path.read_text(encoding="utf-8", errors="replace"), str(path))
        return self._gt[split]

    def _image(self, split: str, rel: str) -> Path:
        return self.root / f"WIDER_{split}" / "images" / rel

    def samples(self, split: str) -> list[SampleRef]:
        if split == "test":
            path = self.root / "wider_face_split" / TEST_LIST
            names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()] \
                if path.is_file() else []
            return [SampleRef(self.name, split, n, self._image(split, n), None, self._load_test, self._read)
                    for n in names]
        if split not in GT_FILES:
            raise DataError(f"{self.name} has splits train, val and test, not {split!r}")
        ann = self.root / "wider_face_split" / GT_FILES[split]
        return [SampleRef(self.name, split, rel, self._image(split, rel), ann, self._load, self._read)
                for rel in self._boxes(split)]

    def _read(self, ref: SampleRef) -> np.ndarray:
        return read_image(ref.image_path)

    def _load_test(self, ref: SampleRef) -> Sample:
        raise DataError(f"{self.name} test labels are withheld by the WIDER FACE authors: use the val split")

    def _load(self, ref: SampleRef) -> Sample:
        image = read_image(ref.image_path)
        b = self._boxes(ref.split)[ref.id]
        keep = (b[:, 2] > 0) & (b[:, 3] > 0)
        kept = b[keep]
        h, w = image.shape[:2]
        centres = np.stack([kept[:, 0] + kept[:, 2] / 2, kept[:, 1] + kept[:, 3] / 2], axis=1).reshape(-1, 2)
        inside = (centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & (centres[:, 1] < h)
        kept, centres = kept[inside], centres[inside]
        meta = {"boxes": kept[:, :4].copy(), "blur": kept[:, 4].astype(int), "invalid": kept[:, 7].astype(int),
                "occlusion": kept[:, 8].astype(int), "n_dropped": int(len(b) - len(kept)),
                "image_path": str(ref.image_path)}
        return Sample(ref.id, image, centres, meta)


__all__ = ["WiderFace", "parse_bbx_gt", "OFFICIAL"]
