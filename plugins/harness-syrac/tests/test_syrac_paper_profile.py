"""The ``paper`` profile is the paper: ``harness config syrac --profile paper --json`` shows SYRAC §4.1's values
("Implementation": ResNet50 pre-trained on ImageNet; 40 epochs; Adam, lr 5e-5; every image resized to
(640, 853, 3); Stable Diffusion 2.1, strength 0.45, guidance 7.5, 50 steps; 15 % of the synthesised ranking data
held out for model selection) and §3.2 (noisy counts N ∈ {1, 5, 10, 50, 100, 200}); ``syrac-authors-code`` differs
only where the authors' code does (15 epochs, [-1, 1] inputs)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import main


def _config(method: str, profile: str = "paper") -> dict:
    res = CliRunner().invoke(main, ["config", method, "--profile", profile, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["method"] == method and doc["profile"] == profile
    return {r["key"]: (r["value"], r["source"]) for r in doc["options"]}


def test_paper_profile_has_section_4_1_values():
    c = _config("syrac")
    values = {k: v for k, (v, _) in c.items()}
    assert values["backbone"] == "resnet50" and values["init_weights"] == "imagenet"        # §4.1 ResNet50, ImageNet
    assert values["train.epochs"] == 40 and values["train.lr"] == 5e-5                       # §4.1 40 epochs, 5e-5
    assert values["input_size"] == [640, 853] and values["generation_size"] == [640, 853]   # §4.1 (640, 853, 3)
    assert values["noisy_size"] == [640, 853]
    assert values["generator_model"] == "stabilityai/stable-diffusion-2-1"                   # §4.1 SD 2.1
    assert (values["strength"], values["guidance_scale"], values["steps"]) == (0.45, 7.5, 50)
    assert values["train.val_fraction"] == 0.15                                              # §4.1 15 % held out
    assert values["noisy_counts"] == [1, 5, 10, 50, 100, 200]                                # §3.2
    assert values["pretrain"] == "synthetic-rank" and values["train.augment"] is True        # §4.1 augmentations
    assert c["train.epochs"][1] == "profile" and c["noisy_counts"][1] == "default"


def test_authors_code_variant_differs_only_where_the_code_does():
    paper, code = _config("syrac"), _config("syrac-authors-code")
    diff = {k for k in paper if paper[k][0] != code[k][0]}
    assert diff == {"train.epochs", "normalisation"} and code["train.epochs"][0] == 15
    assert _config("syrac-authors-code", "smoke")["train.epochs"] == _config("syrac", "smoke")["train.epochs"]


def test_unknown_profile_is_one_line():
    res = CliRunner().invoke(main, ["config", "syrac", "--profile", "nope"])
    assert res.exit_code != 0 and "has no profile 'nope'" in res.output and "Traceback" not in res.output


def test_missing_imagenet_encoder_is_refused_before_generation_and_architecture_only_in_a_dry_run(tmp_path,
                                                                                                 monkeypatch):
    """The paper profile's ImageNet ResNet-50: without the file a real run stops in one line before any generation;
    a dry run goes on with the architecture and records it (every SYRAC cell of the SHA↔SHB paper dry run once
    failed here)."""
    from harness import WeightsError
    from harness.plugins import get_registries
    from harness.runner import plan_run
    from harness.stages import Meter, metering

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    regs = get_registries()
    plan = plan_run("SYN-PARK→SYN-STREET", "syrac", "0", "paper", regs, None)
    strategy = regs.strategies.get("syrac").factory(plan.strategy_options["syrac"])
    with pytest.raises(WeightsError, match="resnet50-0676ba61.pth"):
        strategy._init_weights()
    meter = Meter(1)
    with metering(meter, "cell"):
        assert strategy._init_weights() == "imagenet"
    assert any("architecture only" in v for v in meter.weights["cell"].values())
