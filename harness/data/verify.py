"""``harness datasets verify``: a downloaded dataset against its official release (what a user runs after a download).

Official split sizes (images):

- ShanghaiTech Part A 300 train / 182 test, Part B 400 / 316 (Zhang et al., CVPR 2016, §5.1);
- UCF-QNRF 1201 train / 334 test (Idrees et al., ECCV 2018, §4);
- JHU-Crowd++ 2272 train / 500 val / 1600 test (Sindagi et al., TPAMI 2020, §3);
- NWPU-Crowd 3109 train / 500 val / 1500 test, test labels withheld (Wang et al., TPAMI 2020, §3);
- UCF_CC_50 50 images (Idrees et al., CVPR 2013).

The harness holds out a seeded part of ``train`` as ``val`` where a dataset has no official validation split, so
``train + val`` is compared with the official train size there. Every annotation of a labelled split is read with the
dataset's own reader (the image files are not decoded); missing or extra files are reported by the readers
themselves (one line listing them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: dataset name -> official images per split (``train`` includes the harness's held-out ``val`` unless listed)
OFFICIAL = {"SHA": {"train": 300, "test": 182}, "SHB": {"train": 400, "test": 316},
            "QNRF": {"train": 1201, "test": 334}, "JHU": {"train": 2272, "val": 500, "test": 1600},
            "NWPU": {"train": 3109, "val": 500, "test": 1500}, "UCF50": {"test": 50}}


@dataclass
class Verification:
    """One dataset's check: ``rows`` of ``(split, found, official, ok)`` and one-line ``problems``."""

    dataset: str
    rows: list[tuple[str, int, int | None, bool]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(r[3] for r in self.rows)


def verify_dataset(name: str, ds: Any, read_annotations: bool = True) -> Verification:
    """Compare ``ds`` (an opened dataset registered as ``name``) with :data:`OFFICIAL` and read its annotations.

    Never raises for a data problem: each becomes a line of ``problems``."""
    from ..errors import HarnessError

    out = Verification(name)
    official = OFFICIAL.get(name, {})
    try:
        sizes = {s: len(ds.samples(s)) for s in ("train", "val", "test")}
    except HarnessError as exc:
        out.problems.append(str(exc))
        return out
    held_out = not getattr(ds, "official_val", False)
    if name == "UCF50":
        sizes = {"test": sizes["test"]}
    elif held_out:
        sizes = {"train": sizes["train"] + sizes["val"], "test": sizes["test"]}
    for split, n in sizes.items():
        want = official.get(split)
        label = "train+val" if held_out and split == "train" and name != "UCF50" else split
        out.rows.append((label, n, want, want is None or n == want))
        if want is not None and n != want:
            out.problems.append(f"{name} {label}: {n} images, the official release has {want}")
    if read_annotations:
        reader = getattr(ds, "_read_annotation", None)
        for split in ("train", "val", "test"):
            for ref in ds.samples(split):
                if ref.annotation_path is None:
                    continue  # withheld test labels (NWPU-Crowd)
                try:
                    reader(ref) if reader is not None else ref.load()
                except HarnessError as exc:
                    out.problems.append(str(exc))
    return out


__all__ = ["OFFICIAL", "Verification", "verify_dataset"]
