"""`harness config` of the Table IV methods shows the report's values (Aarhus PromptMix / SPADE report: Table III's
training, §IV-C's protocol and split, §IV-B-3's annotators, Table IV's ratios); the GauGAN row of the SPADE plugin too."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from harness.cli import main


def config(method: str, profile: str = "paper") -> dict:
    r = CliRunner().invoke(main, ["config", method, "--profile", profile, "--json"])
    assert r.exit_code == 0, r.output
    return {row["key"]: row["value"] for row in json.loads(r.output)["options"]}


@pytest.mark.parametrize("name,r_mix", [("r0", 0.0), ("r50", 0.5), ("r100", 1.0), ("r500", 5.0), ("r1000", 10.0)])
def test_table4_rows_are_the_reports_protocol(name, r_mix):
    v = config(f"promptmix-table4-{name}")
    assert v["pool.r_mix"] == r_mix                                                    # Table IV's rows, §V-B
    assert v["train.epochs"] == 200 and v["train.select"] == "last"                     # "after 200 epochs", §V-B
    assert v["train.val_fraction"] == 0.2 and v["pool.synthetic_in_val"] is True       # 240 / 60, same ratio, §IV-C
    assert v["train.train_mae"] is True                                                # Table IV's train MAE
    assert (v["train.lr"], v["train.weight_decay"], v["train.optimizer"]) == (1e-3, 1e-4, "adamw")  # Table III
    assert (v["train.gamma"], v["train.batch_size"], v["pool.max_synthetic"]) == (0.99, 1, 3000)     # Table III
    assert v["pool.annotators"] == ["sasnet-sha", "sasnet-shb"] and v["pool.keep"] == "target"      # §IV-B-3
    assert v["pool.exclude_target_trained"] is False
    assert v["counter"] == "rescsrnet" and v["counter_options.init"] == "imagenet"      # §III-E
    assert v["images_per_prompt"] == 10 and v["steps"] == 50                            # Table I, §IV-A-2
    smoke = config(f"promptmix-table4-{name}", "smoke")
    assert smoke["train.select"] == "last" and smoke["pool.synthetic_in_val"] is True
    assert smoke["pool.annotators"] == ["csrnet-sha", "mcnn-shb"]  # stand-ins: SASNet's files are not shipped


def test_gaugan_row_of_table4():
    pytest.importorskip("harness_spade")
    v = config("spade-table4")
    assert v["train.epochs"] == 200 and v["train.select"] == "last" and v["pool.synthetic_in_val"] is True
    assert v["pool.max_synthetic"] == 830 and v["pool.r_mix"] == 2.77                  # §IV-C: 830 images
    assert v["gan.init_generator"] == "coco_pretrained" and v["gan.vgg_weights"] == "imagenet"  # §III-B transfer
    assert v["pool.annotators"] == ["sasnet-sha", "sasnet-shb"] and v["pool.keep"] == "target"
