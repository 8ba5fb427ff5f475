"""Architectures, preprocessing, strict weight loading, counter registration and the overlay PNG
(no real data or weights needed; tiny inputs)."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from harness.errors import DataError, WeightsError
from harness.models.base import TorchDensityCounter, imagenet_preprocess
from harness.models.csrnet import CSRNet, load_csrnet_npz
from harness.models.mcnn import MCNN, load_mcnn_h5, mcnn_preprocess, rgb_to_gray_cv2
from harness.models.rescsrnet import ResCSRNet, rescsrnet_counter
from harness import Counter
from harness.visualize import colormap, save_density_overlay


def _mcnn_h5(path, model=None, drop=None, reshape=None):
    model = model or MCNN()
    with h5py.File(path, "w") as h5:
        for k, v in model.state_dict().items():
            key = f"DME.{k}"
            if key == drop:
                continue
            arr = v.numpy()
            if key == reshape:
                arr = arr[:-1]
            h5.create_dataset(key, data=arr)
    return path


# ------------------------------------------------------------------------------------- architectures


def test_mcnn_layout_matches_released_weights_and_stride():
    m = MCNN()
    keys = set(m.state_dict())
    # the released files' key set (crowdcount-mcnn port): 4 convs per column at indices 0,2,4,5 + fuse
    expected = {f"{b}.{i}.conv.{p}" for b in ("branch1", "branch2", "branch3") for i in (0, 2, 4, 5)
                for p in ("weight", "bias")} | {"fuse.0.conv.weight", "fuse.0.conv.bias"}
    assert keys == expected
    assert m.branch1[0].conv.kernel_size == (9, 9) and m.branch3[5].conv.kernel_size == (3, 3)
    assert m.fuse[0].conv.in_channels == 30
    out = m(torch.rand(2, 1, 37, 50) * 255)
    assert out.shape == (2, 1, 9, 12)  # floor(37/4), floor(50/4)
    assert (out >= 0).all()  # ReLU after the fuse conv, as in the port


def test_csrnet_layout_and_shapes():
    m = CSRNet()
    sd = m.state_dict()
    assert len(sd) == 34
    assert {"frontend.0.weight", "frontend.21.bias", "backend.10.weight", "output_layer.weight"} <= set(sd)
    assert m.backend[0].dilation == (2, 2) and m.frontend[0].dilation == (1, 1)
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.frontend) == 3
    assert m(torch.randn(1, 3, 35, 50)).shape == (1, 1, 4, 6)  # floor(35/8), floor(50/8)


@pytest.mark.parametrize("h,w", [(64, 96), (35, 50)])
def test_rescsrnet_shape_stride_and_width(h, w):
    c = rescsrnet_counter(width=0.125, seed=0)
    assert c.stride == 8 and c.provenance.weights == "random-init" and not c.provenance.trained_on
    assert c.model.backend_channels == [64, 64, 64, 32, 16, 8]
    out = c.train_forward(torch.randn(2, 3, h, w))
    assert out.shape == (2, 1, -(-h // 8), -(-w // 8)) == (2, 1, *c.output_size(h, w))
    # head = resnet18 up to layer2 (128 channels): the last four children were removed
    names = [n for n, _ in ResCSRNet(width=0.125).head.named_children()]
    assert names == ["0", "1", "2", "3", "4", "5"] and c.model.head[5][0].conv1.out_channels == 128


def test_rescsrnet_seed_is_deterministic_and_trainable():
    a, b, c = (rescsrnet_counter(width=0.125, seed=s) for s in (1, 1, 2))
    pa, pb, pc = (next(x.model.backend.parameters()) for x in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    a.model.train()
    out = a.train_forward(torch.randn(1, 3, 32, 32))
    out.sum().backward()
    assert a.model.output_layer.weight.grad is not None and a.model.head[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------- preprocessing


def test_gray_conversion_matches_opencv_rgb2gray():
    # OpenCV COLOR_RGB2GRAY gives 76 / 150 / 29 for pure red / green / blue, 255 for white
    img = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    assert rgb_to_gray_cv2(img).tolist() == [[76, 150, 29, 255, 0]]
    rng = np.random.default_rng(0)
    rnd = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(rnd).convert("L"), dtype=int)  # ITU-R 601-2 luma as well
    assert np.abs(rgb_to_gray_cv2(rnd).astype(int) - pil).max() <= 1
    x = mcnn_preprocess(rnd)
    assert x.shape == (1, 1, 20, 30) and x.dtype == torch.float32 and x.max() > 1.0  # 0-255, not normalised


def test_imagenet_preprocess_normalises_and_keeps_resolution():
    mean_px = np.round(np.array([0.485, 0.456, 0.406]) * 255).astype(np.uint8)
    img = np.broadcast_to(mean_px, (7, 11, 3)).copy()
    x = imagenet_preprocess(img)
    assert x.shape == (1, 3, 7, 11) and x.abs().max() < 0.01
    white = imagenet_preprocess(np.full((2, 2, 3), 255, np.uint8))
    assert torch.allclose(white[0, :, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))


def test_predict_returns_density_summing_to_count_and_rejects_bad_images():
    c = rescsrnet_counter(width=0.125, seed=0)
    assert isinstance(c, Counter)
    c.model.train()
    img = np.random.default_rng(1).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    p = c.predict(img)
    assert p.density.dtype == np.float32 and p.density.shape == c.output_size(45, 70) == (6, 9)
    assert p.count == pytest.approx(float(p.density.astype(np.float64).sum()), rel=1e-6)
    assert c.model.training  # predict restores the mode it found
    for bad in (img.astype(np.float32), img[..., 0], img[..., :2], [[1, 2, 3]]):
        with pytest.raises(DataError, match="uint8 RGB"):
            c.predict(bad)


# ------------------------------------------------------------------------------------- strict loading


def test_mcnn_h5_loads_strictly(tmp_path):
    src = MCNN()
    loaded = load_mcnn_h5(MCNN(), _mcnn_h5(tmp_path / "ok.h5", src))
    for k, v in src.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(WeightsError, match=r"missing.*branch2\.4\.conv\.bias"):
        load_mcnn_h5(MCNN(), _mcnn_h5(tmp_path / "miss.h5", drop="DME.branch2.4.conv.bias"))
    with pytest.raises(WeightsError, match=r"DME\.fuse\.0\.conv\.weight has shape"):
        load_mcnn_h5(MCNN(), _mcnn_h5(tmp_path / "shape.h5", reshape="DME.fuse.0.conv.weight"))
    with h5py.File(_mcnn_h5(tmp_path / "extra.h5"), "a") as h5:
        h5.create_dataset("DME.branch4.0.conv.weight", data=np.zeros(3))
    with pytest.raises(WeightsError, match="unexpected"):
        load_mcnn_h5(MCNN(), tmp_path / "extra.h5")


def test_mcnn_garbled_or_missing_file_is_one_line_weights_error(tmp_path):
    bad = tmp_path / "mcnn_shtechA_660.h5"
    bad.write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(WeightsError) as e:
        load_mcnn_h5(MCNN(), bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value) and "HARNESS_WEIGHTS" in str(e.value)
    with pytest.raises(WeightsError, match="does not exist"):
        load_mcnn_h5(MCNN(), tmp_path / "nope.h5")


def test_csrnet_npz_loads_strictly(tmp_path):
    src = CSRNet()
    arrays = {k: v.numpy() for k, v in src.state_dict().items()}
    np.savez(tmp_path / "ok.npz", **arrays)
    m = load_csrnet_npz(CSRNet(), tmp_path / "ok.npz")
    assert torch.equal(m.output_layer.weight, src.output_layer.weight)
    np.savez(tmp_path / "miss.npz", **{k: v for k, v in arrays.items() if k != "backend.4.bias"})
    with pytest.raises(WeightsError, match=r"missing \['backend\.4\.bias'\]"):
        load_csrnet_npz(CSRNet(), tmp_path / "miss.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="unreadable"):
        load_csrnet_npz(CSRNet(), tmp_path / "junk.npz")


# ------------------------------------------------------------------------------------- registration


def test_counters_registered_with_provenance_flags():
    from harness.plugins import build_registries

    regs = build_registries()
    assert "counters" not in regs.errors
    reg = regs.counters
    assert {"mcnn-sha", "mcnn-shb", "csrnet-sha", "rescsrnet"} <= set(reg.names())
    assert reg.resolve("mcnn_sha") == "mcnn-sha"
    assert reg.get("mcnn-sha").trained_on == {"SHA"} and reg.get("mcnn-shb").trained_on == {"SHB"}
    assert reg.get("csrnet-sha").trained_on == {"SHA"} and reg.get("rescsrnet").trained_on == frozenset()
    c = reg.get("rescsrnet").factory(width=0.125, seed=3)
    assert isinstance(c, TorchDensityCounter) and c.provenance.trained_on == frozenset()


def test_counter_plugin_does_not_import_torch():
    code = ("import sys, harness.plugins as p; p.build_registries(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------- overlay


def test_colormap_endpoints():
    assert colormap(np.array([0.0, 1.0, 2.0])).tolist() == [[0, 0, 128], [255, 0, 0], [255, 0, 0]]


def test_density_overlay_png_has_image_size(tmp_path):
    img = np.full((60, 90, 3), 128, np.uint8)
    dens = np.zeros((15, 22), np.float32)
    dens[7, 11] = 3.0
    path = save_density_overlay(img, dens, 3.0, tmp_path / "sub" / "o.png")
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (90, 60) and im.mode == "RGB"
        arr = np.asarray(im).astype(int)
    assert (np.abs(arr[30, 45] - 128).sum()) > 30  # coloured where the density peaks
    assert (arr[55, 5] == 128).all()  # untouched where it is zero
    assert (arr[2, 2] == 0).all()  # count label box, top-left
    with pytest.raises(DataError):
        save_density_overlay(img, np.zeros((3,)), 1.0, tmp_path / "bad.png")



@pytest.mark.parametrize("build", ["mcnn", "csrnet", "rescsrnet"])
def test_tiled_inference_equals_untiled(build):
    """Above max_pixels the counters run in overlapping tiles: count and density unchanged (within 1e-3) on an
    odd-sized image that also fits whole; the tiles are what bounds memory on 9000 × 6000 photos."""
    from harness.models.csrnet import csrnet_counter
    from harness.models.mcnn import mcnn_counter
    from harness.models.rescsrnet import rescsrnet_counter

    make = {"mcnn": lambda: mcnn_counter("SHA", weights="random"), "csrnet": lambda: csrnet_counter(weights="random"),
            "rescsrnet": lambda: rescsrnet_counter(width=0.25, seed=0)}[build]
    counter = make()
    for p in counter.model.parameters():  # positive weights: no dead ReLU hides a stitching error
        p.data = p.data.abs() * 0.5
    image = np.random.default_rng(1).integers(0, 255, (389, 517, 3), dtype=np.uint8)
    whole = counter.predict(image)
    counter.max_pixels, counter.tile_size = 1, 128
    tiled = counter.predict(image)
    assert tiled.density.shape == whole.density.shape
    np.testing.assert_allclose(tiled.density, whole.density, rtol=1e-3, atol=1e-3 * np.abs(whole.density).max())
    assert tiled.count == pytest.approx(whole.count, rel=1e-3)


def test_sasnet_layout_fusion_and_the_authors_checkpoint_format(tmp_path, monkeypatch):
    """SASNet (Song et al., AAAI 2021) at its real size: the VGG-16-BN encoder in five stages, five decoder levels with
    a multi-branch density head and a confidence head each, the per-patch soft-max over the levels; a checkpoint saved
    as the authors' ``main.py`` loads it (a bare state dict, loaded strictly; a ``module.``-prefixed one too) predicts the
    same; the map is the density × 1000 (``log_para``) at the input's resolution, any image size; absent, one line.
    The key layout and parameter count are those of the authors' ``model.py`` (commit 3e2b78a: 321 keys,
    38,898,698 parameters; ``MultiBranchModule``'s branch names, bias-free ``BasicConv2d``)."""
    import torch

    from harness import WeightsError
    from harness.models.sasnet import LOG_PARA, SASNet, sasnet_counter

    net = SASNet()
    keys = net.state_dict()
    assert [k for k in keys if k.startswith("features") and k.endswith(".weight") and keys[k].ndim == 4][:3] == [
        "features1.0.weight", "features1.3.weight", "features2.1.weight"]  # vgg16_bn().features[0:6], [6:13] (pool first)
    assert keys["density_head5.1.conv.weight"].shape == (1, 2048, 1, 1)  # [three branches, x]: 4 × 512 channels
    assert keys["density_head5.0.branch3x3dbl_2.conv.weight"].shape == (512, 256, 5, 5)
    assert "density_head5.0.branch1x1.conv.bias" not in keys and "density_head5.0.branch1x1.bn.running_mean" in keys
    assert net.density_head5[0].branch1x1.bn.eps == 1e-3
    assert len(keys) == 321 and sum(p.numel() for p in net.parameters()) == 38_898_698  # model.py's
    # the module's concatenation order is [1x1, 3x3, 5x5 branches, x]: its last c channels are the input
    head = net.density_head5[0].eval()
    with torch.no_grad():
        z = torch.randn(1, 512, 4, 4)
        assert torch.equal(head(z)[:, 3 * 512:], z)
    assert keys["de_pred4.0.conv.weight"].shape == (512, 1024, 3, 3)  # conv4 features ++ the upsampled level 5
    assert keys["confidence_head1.1.conv.weight"].shape == (1, 32, 1, 1)
    x = torch.randn(1, 3, 64, 96)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, 1, 64, 96)  # the input's resolution
    counter = sasnet_counter("SHA", weights="random")
    image = (np.random.default_rng(0).random((70, 101, 3)) * 255).astype(np.uint8)  # not a multiple of 32
    p = counter.predict(image)
    assert p.density.shape == (70, 101) and p.count == pytest.approx(float(p.density.sum()), rel=1e-5)
    # the authors' checkpoint format: the bare model's state dict (main.py: model.load_state_dict(torch.load(path)))
    path = tmp_path / "SHHA.pth"
    torch.save(counter.model.net.state_dict(), path)
    assert sasnet_counter("SHA", weights=path).predict(image).count == pytest.approx(p.count, rel=1e-5)
    # a DataParallel-saved one (``module.`` prefixes) loads too
    torch.save({f"module.{k}": v for k, v in counter.model.net.state_dict().items()}, path)
    loaded = sasnet_counter("SHA", weights=path)
    assert loaded.predict(image).count == pytest.approx(p.count, rel=1e-5)
    assert loaded.provenance.trained_on == frozenset({"SHA"}) and LOG_PARA == 1000
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "weights"))
    with pytest.raises(WeightsError, match=r"sasnet/SHHB.pth not found: download SHHB.pth from the "
                                           r"TencentYoutuResearch/CrowdCounting-SASNet README"):
        sasnet_counter("SHB")
    # in a dry run the missing file gives the architecture, recorded as such (found by the Table IV dry run)
    from harness.stages import Meter, metering

    meter = Meter(max_units=1)
    with metering(meter, "spade-table4 SHA→SHA"):
        stand_in = sasnet_counter("SHB")
    assert stand_in.provenance.trained_on == frozenset() and stand_in.stride == 1
    (component, how), = meter.weights["spade-table4 SHA→SHA"].items()
    assert component == "SASNet-SHB (SHHB.pth)" and how.startswith("architecture only (SASNet-SHB weights ")
