"""The density-map report (seed 003) as the report states it: circle maps drawn with PIL at 224 × 224 (§6), the
first model's 2 031 681 and the latest model's 4 501 889 parameters (§7, §8 Keras summaries), the fully connected
regressor (§12), the train / validation RMSE protocol (§13), and the Gaussian maps it proposes (§11)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from harness import ConfigError, parse_or_raise
from harness.cli import main
from harness.plugins import get_registries
from harness_dmap.maps import circle_map, gaussian_map
from harness_dmap.models import CountRegressor, NoPoolMapNet, VGGMapNet
from harness_dmap.plugin import TINY
from harness_dmap.config import DmapOptions
from harness_dmap.strategy import Dmap


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def test_networks_have_the_reports_keras_parameter_counts():
    assert n_params(VGGMapNet()) == 2_031_681      # §7 "Total params: 2,031,681"
    assert n_params(NoPoolMapNet()) == 4_501_889   # §8 "Total params: 4,501,889"
    # §12: dense_9 202 112 956, dense_10 / dense_11 16 228 812, dense_12 4029
    assert n_params(CountRegressor(224, 4028, 3)) == 202_112_956 + 2 * 16_228_812 + 4029
    x = torch.rand(1, 3, 224, 224)
    assert VGGMapNet(0.125)(x).shape == NoPoolMapNet(0.125)(x).shape == (1, 1, 224, 224)


def test_vgg_layers_load_torchvision_imagenet_features_of_the_real_layout(tmp_path, monkeypatch):
    import torchvision

    folder = tmp_path / "imagenet"
    folder.mkdir()
    state = torchvision.models.vgg16().state_dict()
    torch.save(state, folder / "vgg16-397923af.pth")
    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    net, _, init = Dmap(parse_or_raise(DmapOptions, {"network": "vgg", "vgg_init": "imagenet"})).build(0)
    assert init is not None and "ImageNet" in init.trained_on
    assert torch.equal(net.features[14].weight, state["features.14.weight"])  # block3_conv3


def test_circle_maps_are_pil_discs_at_the_network_size_and_gaussian_maps_sum_to_the_count():
    pts = np.array([[100.0, 50.0], [300.0, 150.0]])  # in a 200 × 400 image
    m = circle_map(pts, (200, 400), 224, radius=2.0)
    assert m.shape == (224, 224) and set(np.unique(m)) == {0.0, 1.0}
    assert m[56, 56] == 1.0 and m[168, 168] == 1.0 and m[112, 112] == 0.0  # heads moved with the resize
    assert 9 <= m.sum() <= 2 * 25  # two discs of radius 2
    g = gaussian_map(pts, (200, 400), 224, sigma=2.0)
    assert g.sum() == pytest.approx(2.0, abs=1e-3)


def test_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="network 'alexnet'.*maps 'square'"):
        parse_or_raise(DmapOptions, {"network": "alexnet", "maps": "square"})
    with pytest.raises(ConfigError, match="needs width 1.0"):
        parse_or_raise(DmapOptions, {"network": "vgg", "vgg_init": "imagenet", "width": 0.5})


def test_paper_profile_is_the_reports():
    res = CliRunner().invoke(main, ["config", "dmap-nopool", "--profile", "paper", "--json"])
    v = {r["key"]: r["value"] for r in json.loads(res.output)["options"]}
    assert v["network"] == "nopool" and v["maps"] == "circle" and v["input_size"] == 224  # §4, §6, §8
    assert v["regressor_hidden"] == 4028 and v["regressor_layers"] == 3 and v["width"] == 1.0  # §12
    assert v["train_images"] == 2000                                                         # §9
    vgg = {r["key"]: r["value"] for r in json.loads(CliRunner().invoke(
        main, ["config", "dmap-vgg", "--profile", "paper", "--json"]).output)["options"]}
    assert vgg["network"] == "vgg" and vgg["vgg_init"] == "imagenet"                         # §7
    gauss = {r["key"]: r["value"] for r in json.loads(CliRunner().invoke(
        main, ["config", "dmap-nopool-gaussian", "--profile", "paper", "--json"]).output)["options"]}
    assert gauss["maps"] == "gaussian"                                                       # §11


def test_fit_records_train_and_validation_rmse_and_is_cached(tmp_path):
    from harness.testing import contract_context

    src = get_registries().datasets.get("SYN-SPARSE").factory(None)
    o = parse_or_raise(DmapOptions, {**TINY, "network": "nopool", "train_images": 3, "val_images": 2})

    def ctx(sub):
        return contract_context(tmp_path / sub, cache_root=tmp_path / "cache", options=o)

    c1 = ctx("a")
    counter = Dmap(o).fit(c1)
    notes = c1.provenance_notes
    assert notes["train_images"] == 3 and notes["val_images"] == 2 and notes["cached"] is False
    assert np.isfinite(notes["train_rmse"]) and np.isfinite(notes["val_rmse"])
    img = src.samples("test")[0].load().image
    pred = counter.predict(img)
    assert pred.count >= 0 and pred.density.shape == (16, 16) and "count:integral" in pred.extras
    assert pred.points.shape[1] == 2 and (pred.points[:, 0] <= img.shape[1]).all()
    c2 = ctx("b")
    again = Dmap(o).fit(c2)
    assert c2.provenance_notes["cached"] is True and again.predict(img).count == pytest.approx(pred.count)
