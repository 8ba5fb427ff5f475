"""The masks: HM on images with known points (thresholding at 0.01, area growing with density, a real ShanghaiTech
image when the data are there), the DeepLabV3 segmenters (tiny, a local weights file, missing weights in one line),
stacking into the report's configurations, the content-addressed cache and the editable mask files."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from harness import ArtifactCache, CellContext, ConfigError, DataError, Segmentation, WeightsError, density_map
from harness.plugins import get_registries
from harness_spade.masks import (CONFIGS, VOC_CLASSES, DeepLabSegmenter, HeadMaskSegmenter, MaskBuilder, mask_ids,
                                 read_mask_file, stack, write_mask)


def grid(spacing: float, x0=20, y0=20, size=80) -> np.ndarray:
    xs = np.arange(x0, x0 + size, spacing) + 0.5
    return np.array([(x, y) for x in xs for y in np.arange(y0, y0 + size, spacing) + 0.5])


def test_head_mask_thresholds_the_density_at_001():
    img = np.zeros((120, 160, 3), np.uint8)
    pts = np.concatenate([grid(4, 10, 10, 40), grid(25, 80, 20, 75)])  # a dense block and a sparse one
    hm = HeadMaskSegmenter()
    out = hm.segment(img, pts)
    dens = density_map(pts, (120, 160))
    assert out.labels.dtype == np.int32 and out.labels.shape == (120, 160)
    assert np.array_equal(out.labels, (dens > 0.01).astype(np.int32))  # exactly the report's threshold
    assert out.label_names == ("background", "dense crowd")
    assert out.labels[10:50, 10:50].mean() > 0.8 and out.labels[:, 80:].sum() == 0  # dense marked, sparse not
    # the threshold is strict and in people per pixel
    assert np.array_equal(HeadMaskSegmenter(threshold=0.05).segment(img, pts).labels, (dens > 0.05).astype(np.int32))


def test_head_mask_area_grows_with_density():
    img = np.zeros((140, 140, 3), np.uint8)
    areas = [HeadMaskSegmenter().segment(img, grid(s, 20, 20, 100)).labels.sum() for s in (20, 12, 8, 5, 3)]
    assert areas[0] == 0 and all(a < b for a, b in zip(areas, areas[1:])), areas
    # fixed kernel: more heads in the same place, larger area
    hm = HeadMaskSegmenter(kernel="fixed", sigma=4.0)
    rng = np.random.default_rng(0)
    pts = rng.uniform(30, 110, (400, 2))
    fixed = [hm.segment(img, pts[:n]).labels.sum() for n in (25, 100, 400)]
    assert fixed[0] < fixed[1] < fixed[2]


def test_head_mask_needs_points():
    with pytest.raises(ConfigError, match="needs the image's head points") as err:
        HeadMaskSegmenter().segment(np.zeros((8, 8, 3), np.uint8), None)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="threshold"):
        HeadMaskSegmenter(threshold=0)


def test_head_mask_on_a_real_image(data_root):
    sha = get_registries().datasets.get("SHA").factory(data_root)
    sample = next(s for s in (r.load() for r in sha.samples("train")[:20]) if s.count > 300)
    hm = HeadMaskSegmenter()
    labels = hm.segment(sample.image, sample.points).labels
    assert labels.shape == sample.image.shape[:2]
    assert np.array_equal(labels, (density_map(sample.points, labels.shape) > 0.01).astype(np.int32))
    assert 0 < labels.mean() < 1
    rng = np.random.default_rng(0)
    order = rng.permutation(sample.count)
    areas = [hm.segment(sample.image, sample.points[order[:int(f * sample.count)]]).labels.sum()
             for f in (0.25, 0.5, 1.0)]
    assert areas[0] < areas[1] < areas[2] == labels.sum()  # more heads (denser crowd), more dense-crowd area


def test_deeplab_segmenters_tiny_file_and_missing_weights(tmp_path, monkeypatch):
    img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    ss = DeepLabSegmenter("surroundings-segmentation", arch="deeplabv3_mobilenet_v3_large", weights="tiny")
    out = ss.segment(img)
    assert out.labels.shape == (40, 56) and out.labels.max() < 21 and ss.label_names == VOC_CLASSES
    cm = DeepLabSegmenter("crowd-segmentation", arch="deeplabv3_mobilenet_v3_large", weights="tiny",
                          crowd_classes=(15,))
    assert cm.label_names == ("background", "crowd")
    crowd = cm.segment(img).labels
    logits = cm.model(((torch.nn.functional.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255,
                                                        size=(520, 728), mode="bilinear", align_corners=False)
                        - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                       / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)))["out"]
    cls = torch.nn.functional.interpolate(logits, size=(40, 56), mode="bilinear", align_corners=False).argmax(1)[0]
    assert np.array_equal(crowd, (cls.numpy() == 15).astype(np.int32))
    # a local state-dict file: same network, its path and hash in the provenance and the key
    path = tmp_path / "deeplab.pth"
    torch.save(ss.model.state_dict(), path)
    loaded = DeepLabSegmenter("surroundings-segmentation", arch="deeplabv3_mobilenet_v3_large", weights=str(path))
    assert np.array_equal(loaded.segment(img).labels, out.labels)
    assert loaded.provenance.sha256 and loaded.key()["sha256"] == loaded.provenance.sha256 != ss.key()["sha256"]
    assert str(path.resolve()) in loaded.provenance.weights
    for weights, pattern in ((str(tmp_path / "nope.pth"), "does not exist"), ("torchvision", "download https://")):
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
        with pytest.raises(WeightsError, match=pattern) as err:
            DeepLabSegmenter("crowd-segmentation", arch="deeplabv3_mobilenet_v3_large", weights=weights)
        assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="does not fit"):
        DeepLabSegmenter("x", arch="deeplabv3_mobilenet_v3_large", weights=str(path), num_classes=19)
    with pytest.raises(ConfigError, match="crowd_classes"):
        DeepLabSegmenter("x", arch="deeplabv3_mobilenet_v3_large", weights="tiny", crowd_classes=(30,))


def test_stacking_the_report_configurations():
    ss = Segmentation(np.array([[0, 1, 2], [2, 1, 0]]), ("background", "road", "building"))
    cm = Segmentation(np.array([[0, 1, 1], [0, 0, 0]]), ("background", "crowd"))
    hm = Segmentation(np.array([[0, 0, 1], [1, 0, 0]]), ("background", "dense crowd"))
    out = stack([ss, cm, hm])
    # SS ids as they are; CM's crowd = 3; HM's dense crowd = 4, painted last (on top)
    assert out.label_names == ("background", "road", "building", "crowd", "dense crowd")
    assert out.labels.tolist() == [[0, 3, 4], [4, 1, 0]]
    assert stack([hm]).labels.tolist() == hm.labels.tolist()
    with pytest.raises(ConfigError, match="different shapes"):
        stack([ss, Segmentation(np.zeros((3, 3), int), ("background", "x"))])
    assert CONFIGS["SHTA_V2"] == ("head-mask",) and len(CONFIGS["SSU_V2"]) == 3


def test_mask_builder_23_labels_cache_and_files(tmp_path):
    regs = get_registries()
    ctx = CellContext(source=None, source_name="SYN-SPARSE", target_name="SYN-DENSE", target_images=[],
                      profile="smoke", seed=0, device="cpu", workdir=tmp_path, cache=ArtifactCache(tmp_path / "c"),
                      registries=regs, options=None, log=logging.getLogger("t"))
    segs = [ctx.build("segmenter", n, **({} if n == "head-mask" else {"weights": "tiny",
                                                                      "arch": "deeplabv3_mobilenet_v3_large"}))
            for n in CONFIGS["SHTA_V3"]]
    assert [c["name"] for c in ctx.components] == list(CONFIGS["SHTA_V3"])
    builder = MaskBuilder(segs, ctx.cache)
    assert len(builder.label_names) == 23 and builder.label_names[-2:] == ("crowd", "dense crowd")
    img = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    pts = grid(3, 10, 10, 20)
    labels = builder.build(img, pts)
    assert labels.dtype == np.uint8 and labels.shape == (48, 64) and labels.max() < 23
    assert (labels[12:28, 12:28] == 22).mean() > 0.9  # HM on top of everything
    calls = []
    for s in segs:
        orig = s.segment
        s.segment = lambda *a, _o=orig, **k: (calls.append(1), _o(*a, **k))[1]
    assert np.array_equal(builder.build(img, pts), labels) and not calls  # every part from the cache
    builder.build(img, pts[:5])  # other points: HM again (its key holds them), SS and CM cached
    assert len(calls) == 1
    # editable files: 8-bit PNG of ids, read back exactly; ids out of range refused in one line
    (tmp_path / "m").mkdir()
    write_mask(tmp_path / "m" / "IMG_1.png", labels)
    assert np.array_equal(read_mask_file(tmp_path / "m" / "IMG_1.png", 23), labels)
    assert list(mask_ids(tmp_path / "m")) == ["IMG_1"]
    with pytest.raises(DataError, match=r"id\(s\) .*22 outside 0\.\.1") as err:
        read_mask_file(tmp_path / "m" / "IMG_1.png", 2)
    assert "\n" not in str(err.value)
    from PIL import Image

    Image.fromarray(np.stack([labels, labels * 0, labels], -1)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour image"):
        read_mask_file(tmp_path / "colour.png", 23)
    with pytest.raises(DataError, match="no .png mask"):
        mask_ids(tmp_path / "c")
