"""The one state-dict reader/loader and the ImageNet initialisations (docs/design.md §9): files of torchvision's real
key layout load into torchvision and timm backbones; absent or mismatched weights are one line; nothing downloads."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torchvision

from harness import CellContext, WeightsError
from harness.io import ArtifactCache
from harness.models.pretrained import (IMAGENET_WEIGHTS, imagenet_file, load_into, pretrained_backbone,
                                       read_state_dict)


@pytest.fixture
def weights_root(tmp_path, monkeypatch):
    """An empty ``$HARNESS_WEIGHTS`` and torch hub cache: nothing real can be found by accident."""
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (tmp_path / "weights" / "imagenet").mkdir(parents=True)
    return tmp_path / "weights"


def test_file_names_are_torchvisions():
    assert imagenet_file("resnet50") == ("resnet50-0676ba61.pth",
                                         "https://download.pytorch.org/models/resnet50-0676ba61.pth")
    assert imagenet_file("vgg16_bn")[0] == "vgg16_bn-6c64b313.pth"
    assert set(IMAGENET_WEIGHTS) == {"resnet18", "resnet50", "vgg16", "vgg16_bn", "vgg19"}
    with pytest.raises(WeightsError, match="no ImageNet weights are known for backbone 'resnet7'"):
        imagenet_file("resnet7")


@pytest.mark.parametrize("arch", sorted(IMAGENET_WEIGHTS))
def test_absent_imagenet_weights_are_one_line_naming_file_url_and_place(weights_root, arch):
    with pytest.raises(WeightsError) as err:
        pretrained_backbone(torch.nn.Linear(1, 1), arch, "imagenet", option="backbone_weights")
    msg, (fname, url) = str(err.value), imagenet_file(arch)
    assert "\n" not in msg and url in msg and str(weights_root / "imagenet" / fname) in msg
    assert "'backbone_weights'" in msg


def test_resnet50_file_loads_into_torchvision_and_timm_feature_backbones(weights_root):
    """torchvision's ResNet-50 layout (with its ``fc``) into timm's ``resnet50`` as a feature extractor (the CSP
    detector's and SYRAC's backbone): every backbone key comes from the file, the classifier is dropped."""
    import timm

    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None)
    path = weights_root / "imagenet" / imagenet_file("resnet50")[0]
    torch.save(ref.state_dict(), path)
    feats = timm.create_model("resnet50", pretrained=False, features_only=True, out_indices=(2, 3, 4))
    init = pretrained_backbone(feats, "resnet50", "imagenet")
    assert init.trained_on == ("ImageNet",) and init.path == str(path) and len(init.sha256) == 64
    assert init.report["initialised_keys"] == 0
    own = feats.state_dict()
    assert all(torch.equal(own[k], ref.state_dict()[k]) for k in own if not k.endswith("num_batches_tracked"))
    assert init.provenance().trained_on == frozenset({"ImageNet"})
    # the torch hub cache is the second place looked in (where torchvision itself keeps the file)
    path.rename(weights_root / "elsewhere.pth")
    hub = torch.hub.get_dir() + "/checkpoints"
    import os
    os.makedirs(hub)
    os.replace(weights_root / "elsewhere.pth", f"{hub}/{imagenet_file('resnet50')[0]}")
    assert pretrained_backbone(torchvision.models.resnet50(weights=None), "resnet50", "imagenet",
                               ignore=()).path.startswith(hub)


def test_vgg16_bn_features_of_the_real_layout_load_into_a_truncated_front_end(weights_root):
    """The first ten convolutions of VGG-16-BN (DSSINet's / Φ's front end) from the full file: keys beyond the
    front end are unused, not an error, when asked for; a narrower network is refused in one line."""
    torch.manual_seed(0)
    ref = torchvision.models.vgg16_bn(weights=None).features
    state = {f"features.{k}": v for k, v in ref.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    path = weights_root / "imagenet" / imagenet_file("vgg16_bn")[0]
    torch.save(state, path)
    front = torch.nn.Sequential(*list(torchvision.models.vgg16_bn(weights=None).features)[:33])  # conv4_3 + BN + ReLU
    init = pretrained_backbone(front, "vgg16_bn", "imagenet", select="features.", allow_unused=True)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in front.state_dict().items())
    assert init.report["loaded_keys"] == len(front.state_dict())
    with pytest.raises(WeightsError, match="keys the network lacks"):
        pretrained_backbone(front, "vgg16_bn", "imagenet", select="features.")
    narrow = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1))
    with pytest.raises(WeightsError, match=r"another shape \(e\.g\. 0\.weight") as err:
        pretrained_backbone(narrow, "vgg16_bn", "imagenet", select="features.", allow_unused=True)
    assert "\n" not in str(err.value)


def test_reader_formats_containers_and_errors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sd = net.state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in sd.items()})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("wrapped.pth", "w.npz", "w.safetensors"):
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    (tmp_path / "junk.pth").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="junk.pth cannot be read") as err:
        read_state_dict(tmp_path / "junk.pth", "test weights")
    assert "\n" not in str(err.value)
    torch.save({"epoch": 1}, tmp_path / "nodict.pth")
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_state_dict(tmp_path / "nodict.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")
    # a new head may stay at its initialisation only where allowed
    bigger = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1))
    with pytest.raises(WeightsError, match="not in the file"):
        load_into(bigger, sd, "test", "x.pth")
    rep = load_into(bigger, sd, "test", "x.pth", allow_missing=("2.",))
    assert rep.missing == ("2.bias", "2.weight")


def test_no_plugin_reads_weights_by_itself():
    """``torch.load`` appears only in the core's reader (issue: one state-dict loader, not one per plugin)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    users = sorted(str(p.relative_to(root)) for d in ("harness", "plugins") for p in (root / d).rglob("*.py")
                   if "/tests/" not in str(p) and "torch.load(" in p.read_text())
    assert users == ["harness/models/pretrained.py"]


# ------------------------------------------------------------------------------------------ cached fits


def _ctx(tmp_path, precision="fp32", seed=0):
    from harness.data.synthetic import SyntheticCrowds

    return CellContext(source=SyntheticCrowds("SYN-SPARSE"), source_name="SYN-SPARSE", target_name="SYN-DENSE",
                       target_images=[], profile="smoke", seed=seed, device="cpu", workdir=tmp_path,
                       cache=ArtifactCache(tmp_path / "cache"), registries=None, options=None,
                       log=logging.getLogger("test"), precision=precision)


def test_cached_fit_never_crosses_precision_threads_or_seed(tmp_path):
    """A bf16 cell does not reuse an fp32 model, nor a one-thread cell a two-thread one; the same conditions do."""
    trained = []

    def create(tmp):
        trained.append(1)
        torch.save({"w": torch.ones(1)}, tmp)

    key = {"options": {"lr": 1e-3}}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        p32, hit = _ctx(tmp_path).cached_fit("model", key, create)
        assert not hit and len(trained) == 1
        ctx = _ctx(tmp_path)
        assert ctx.cached_fit("model", key, create) == (p32, True) and len(trained) == 1
        assert ctx.provenance_notes["cached_fits"]["model"] == {"hit": True, "key": p32.stem[:16]}
        pbf, hit = _ctx(tmp_path, precision="bf16").cached_fit("model", key, create)
        assert not hit and pbf != p32 and len(trained) == 2
        torch.set_num_threads(1)
        p1, hit = _ctx(tmp_path).cached_fit("model", key, create)
        assert not hit and p1 not in (p32, pbf) and len(trained) == 3
        torch.set_num_threads(2)
        assert not _ctx(tmp_path, seed=1).cached_fit("model", key, create)[1] and len(trained) == 4
    finally:
        torch.set_num_threads(before)
    conditions = _ctx(tmp_path).fit_conditions()
    assert {"seed", "source", "precision", "device_kind", "threads", "harness_version"} <= set(conditions)


def test_rescsrnet_head_starts_from_the_imagenet_resnet18_of_the_real_layout(tmp_path, monkeypatch):
    """The report's student is "based on a modified ResNet-18 architecture which is pretrained on ImageNet"
    (§III-E): `init: imagenet` loads torchvision's resnet18 file (conv1, bn1, layer1, layer2) into the head; absent,
    one line naming the file; the counter's provenance carries ImageNet labels."""
    import torchvision

    from harness import WeightsError
    from harness.models.rescsrnet import rescsrnet_counter

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (tmp_path / "imagenet").mkdir()
    with pytest.raises(WeightsError, match="resnet18-f37072fd.pth") as err:
        rescsrnet_counter(width=0.125, init="imagenet")
    assert "\n" not in str(err.value)
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "imagenet" / "resnet18-f37072fd.pth")
    counter = rescsrnet_counter(width=0.125, init="imagenet", seed=0)
    head = counter.model.head.state_dict()
    assert torch.equal(head["0.weight"], state["conv1.weight"]) and torch.equal(head["5.1.bn2.bias"],
                                                                                state["layer2.1.bn2.bias"])
    assert counter.provenance.trained_on == frozenset({"ImageNet"})
    assert rescsrnet_counter(width=0.125, seed=0).provenance.trained_on == frozenset()
