"""Data fingerprints (harness.fingerprints): content of the annotation files and sizes of the images, not times;
memoised under the files' stat signature so unchanged data is not read again, recomputed from the bytes otherwise."""
from __future__ import annotations

import os
from types import SimpleNamespace

from harness.fingerprints import data_fingerprint


class _Dataset:
    name = "TINY"

    def __init__(self, root):
        self.root = root

    def samples(self, split):
        return [SimpleNamespace(id=f"{split}_{i}", image_path=self.root / f"{split}_{i}.jpg",
                                annotation_path=self.root / f"{split}_{i}.mat") for i in range(3)]


def _make(root):
    root.mkdir()
    for split in ("train", "test"):
        for i in range(3):
            (root / f"{split}_{i}.jpg").write_bytes(b"\xff\xd8" + bytes(10 * i))
            (root / f"{split}_{i}.mat").write_bytes(f"points {split} {i}".encode())
    return _Dataset(root)


def test_fingerprint_is_memoised_by_stat_signature_and_follows_the_bytes(tmp_path):
    ds, memo = _make(tmp_path / "data"), tmp_path / "memo"
    fresh = data_fingerprint(ds, ("train", "test"), memo_dir=None)
    assert data_fingerprint(ds, ("train", "test"), memo_dir=memo) == fresh
    (entry,) = memo.glob("*.json")
    # the memo is what an unchanged listing reads (proved by planting another value in it)
    entry.write_text('{"fingerprint": "planted"}')
    assert data_fingerprint(ds, ("train", "test"), memo_dir=memo) == "planted"
    # a copy (new modification time, same bytes) recomputes, and gets the same value
    ann = tmp_path / "data" / "test_1.mat"
    st = ann.stat()
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert data_fingerprint(ds, ("train", "test"), memo_dir=memo) == fresh
    # other bytes of the same size: another fingerprint, even with the old modification time restored
    ann.write_bytes(b"points test 9")
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = data_fingerprint(ds, ("train", "test"), memo_dir=memo)
    assert changed != fresh and changed == data_fingerprint(ds, ("train", "test"), memo_dir=None)
    # an unreadable memo is recomputed, never an error
    for p in memo.glob("*.json"):
        p.write_text("{not json")
    assert data_fingerprint(ds, ("train", "test"), memo_dir=memo) == changed
