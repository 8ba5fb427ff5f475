"""RDBT's ``paper`` profile against the paper (Liu et al., ACM MM 2020, §4.2 "Implementation details"): DSSINet on a
VGG16 backbone, CSP on ResNet-50, Φ's first 10 convolutions "from a VGG16 net pre-trained on ILSVRC"; target
fine-tuning of R's last two layers with Adam 1e-6 and of D with Adam 1e-5; two 224 × 224 patches per image; 4
iterations ("Normally, we stop after 4 iterations", §4.4). The ImageNet files load with torchvision's real key
layout through the core; absent, one line each."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision
from click.testing import CliRunner

from harness import WeightsError
from harness.cli import main
from harness_rdbt.config import PAPER, RDBTConfig
from harness_rdbt.strategy import build_d, build_phi, build_r


def _values(method: str) -> dict:
    res = CliRunner().invoke(main, ["config", method, "--profile", "paper", "--json"])
    assert res.exit_code == 0, res.output
    return {r["key"]: r["value"] for r in json.loads(res.output)["options"]}


def test_paper_profile_has_section_4_2_values():
    v = _values("rdbt")
    assert v["vgg_init"] == "imagenet" and v["vgg_batchnorm"] is False        # DSSINet/Φ: ImageNet VGG16 (no BN)
    assert v["csp_backbone"] == "resnet50" and v["csp_init"] == "imagenet"    # CSP: ResNet-50
    assert v["r_finetune_lr"] == 1e-6 and v["d_finetune_lr"] == 1e-5         # §4.2 fine-tuning on T
    assert v["patch_size"] == 224 and v["patches_per_image"] == 2            # §3.4 two 224 × 224 patches
    assert v["density_range"] == [0.5, 0.7] and v["cycles"] == 4             # §3.4 / §4.4
    assert v["mse_weight"] == 0.0 and v["ssim_weight"] == 1.0               # §3.2 R: DMS-SSIM loss alone
    assert v["phi_threshold"] == 0.2 and v["vgg_width"] == 1.0 and v["dssinet_scales"] == [1.0, 0.5, 2.0]
    assert v["phi_encoder"] == "dilated-vgg16"                                # §3.3 "dilated VGG-16 structure [14]"
    assert v["csp_pretrain"] == "widerface"                                   # §4.2 CSP pre-trained on WiderFace
    assert _values("regnet")["vgg_init"] == "imagenet" and _values("detnet")["csp_init"] == "imagenet"


@pytest.fixture
def imagenet_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (tmp_path / "imagenet").mkdir()
    return tmp_path / "imagenet"


def test_paper_networks_start_from_imagenet_files_of_the_real_layout(imagenet_dir):
    cfg = RDBTConfig.from_options(PAPER)
    with pytest.raises(WeightsError, match="vgg16-397923af.pth") as err:
        build_r(cfg, seed=0)
    assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="resnet50-0676ba61.pth"):
        build_d(cfg, seed=0)
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).features.state_dict()
    torch.save({**{f"features.{k}": v for k, v in vgg.items()}, "classifier.6.bias": torch.zeros(1000)},
               imagenet_dir / "vgg16-397923af.pth")
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(resnet, imagenet_dir / "resnet50-0676ba61.pth")
    R, Phi, D = build_r(cfg, seed=0), build_phi(cfg, seed=0), build_d(cfg, seed=0)
    for front in (R.frontend, Phi.frontend):  # the first 10 convolutions (VGG-16 features 0..22)
        own = front.state_dict()
        assert own and all(torch.equal(own[k], vgg[k]) for k in own)
    own = D.backbone.state_dict()
    assert all(torch.equal(own[k], resnet[k]) for k in own if not k.endswith("num_batches_tracked"))


def test_paper_r_loss_is_dms_ssim_alone():
    """§3.2: R "is trained ... with the proposed dilated multi-scale structural similarity loss" — no MSE term."""
    import numpy as np

    from harness_rdbt.config import SMOKE, TINY
    from harness_rdbt.training import r_loss

    cfg = RDBTConfig.from_options({**TINY, "mse_weight": 0.0})
    R = build_r(cfg, seed=0).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    dens = [rng.random((64, 64)).astype(np.float32) / 100]
    with torch.no_grad():
        got = float(r_loss(R, images, dens, cfg, "cpu"))
        both = float(r_loss(R, images, dens, RDBTConfig.from_options({**TINY}), "cpu"))
    assert got > 0 and both > got  # the smoke profile keeps its MSE term
    assert RDBTConfig.from_options(SMOKE).mse_weight == 1.0
    with pytest.raises(Exception, match="not both 0"):
        RDBTConfig.from_options({**TINY, "mse_weight": 0.0, "ssim_weight": 0.0})
