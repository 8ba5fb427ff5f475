"""WIDER FACE in its original layout (Yang et al., CVPR 2016; the split's readme.txt: per image its path, the face
count, then one line ``x1 y1 w h blur expression illumination invalid occlusion pose`` per face; a face-less image
has count 0 and one line of zeros), and CSP's pre-training stage on it (RDBT §4.2)."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from harness import DataError, parse_or_raise
from harness.plugins import get_registries
from harness_rdbt.config import RDBTConfig
from harness_rdbt.strategy import SourceModels
from harness_rdbt.widerface import WiderFace, parse_bbx_gt

GT = """0--Parade/0_Parade_marchingband_1_5.jpg
3
10 12 8 10 0 0 0 0 0 0 
30 4 6 6 2 0 0 1 0 0 
50 50 0 0 0 0 0 0 0 0 
1--Handshaking/1_Handshaking_1_2.jpg
0
0 0 0 0 0 0 0 0 0 0 
"""


def write_widerface(root, n_copies: int = 1):
    base = root / "WIDER_FACE"
    for split in ("train", "val"):
        for rel, size in (("0--Parade/0_Parade_marchingband_1_5.jpg", (48, 64)),
                          ("1--Handshaking/1_Handshaking_1_2.jpg", (40, 40))):
            p = base / f"WIDER_{split}" / "images" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(p)
    (base / "wider_face_split").mkdir(parents=True)
    for split in ("train", "val"):
        (base / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt").write_text(GT)
    (base / "wider_face_split" / "wider_face_test_filelist.txt").write_text("2--Demonstration/a.jpg\n")
    return root


def test_bbx_gt_format_centres_boxes_and_flags(tmp_path):
    ds = get_registries().datasets.get("WIDERFACE").factory(write_widerface(tmp_path))
    assert isinstance(ds, WiderFace) and ds.eval_split == "val"
    refs = ds.samples("train")
    assert [r.id for r in refs] == ["0--Parade/0_Parade_marchingband_1_5.jpg", "1--Handshaking/1_Handshaking_1_2.jpg"]
    s = refs[0].load()
    assert s.image.shape == (48, 64, 3)
    np.testing.assert_allclose(s.points, [[14.0, 17.0], [33.0, 7.0]])  # centres x1 + w/2, y1 + h/2
    np.testing.assert_allclose(s.meta["boxes"], [[10, 12, 8, 10], [30, 4, 6, 6]])
    assert s.meta["invalid"].tolist() == [0, 1] and s.meta["blur"].tolist() == [0, 2] and s.meta["n_dropped"] == 1
    empty = refs[1].load()
    assert empty.points.shape == (0, 2) and empty.meta["boxes"].shape == (0, 4)
    assert [r.id for r in ds.samples("test")] == ["2--Demonstration/a.jpg"]
    with pytest.raises(DataError, match="withheld"):
        ds.samples("test")[0].load()


def test_missing_or_malformed_widerface_is_one_line(tmp_path):
    with pytest.raises(DataError, match="WIDER_train.zip.*WIDER_FACE/") as err:
        WiderFace(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="declares 3 faces"):
        parse_bbx_gt("a/b.jpg\n3\n1 2 3 4 0 0 0 0 0 0\n", "gt.txt")
    with pytest.raises(DataError, match=r"gt.txt:2: expected the face count"):
        parse_bbx_gt("a/b.jpg\nx\n", "gt.txt")


def test_csp_is_pretrained_on_widerface_before_the_source_and_cached(tmp_path):
    """csp_pretrain=widerface: D first trains on WIDER FACE boxes (its own cached fit), then on the source."""
    write_widerface(tmp_path / "data")
    regs = get_registries()
    opts = {"max_side": 64, "resnet_width": 0.0625, "crop_size": 32, "batch_size": 1, "d_steps": 1,
            "source_images": 1, "csp_pretrain": "widerface", "widerface_root": str(tmp_path / "data"),
            "widerface_steps": 2, "checkpoint_every": 1}
    cfg = parse_or_raise(RDBTConfig, opts)

    def ctx(sub):
        from harness.testing import contract_context

        return contract_context(tmp_path / sub, regs, cache_root=tmp_path / "cache", options=cfg)

    first = SourceModels(cfg, ctx("a"))
    first.get("D")
    assert first.notes["D-widerface"]["cached"] is False and first.notes["D-widerface"]["images"] == 2
    assert np.isfinite(first.notes["D-widerface"]["final_loss"])
    assert (tmp_path / "cache" / "rdbt-widerface").is_dir()
    # another source stage (more source steps) reuses the cached WIDER FACE detector
    cfg2 = parse_or_raise(RDBTConfig, {**opts, "d_steps": 2})
    second = SourceModels(cfg2, ctx("b"))
    second.get("D")
    assert second.notes["D-widerface"]["cached"] is True and second.notes["D"]["cached"] is False
    assert first.key("D") != SourceModels(parse_or_raise(RDBTConfig, {**opts, "csp_pretrain": "none"}),
                                          ctx("c")).key("D")
    # where WIDER FACE lies is not part of the identity (a finished D is reused); a D still to train needs it
    missing = parse_or_raise(RDBTConfig, {**opts, "d_steps": 3, "widerface_root": str(tmp_path / "nothing")})
    with pytest.raises(DataError, match="WIDER FACE not found"):
        SourceModels(missing, ctx("d")).get("D")
