"""The promptmix strategy end to end through the runner on real ShanghaiTech images, with the tiny captioner
and Stable Diffusion and the real pretrained annotators (MCNN-SHA/SHB, CSRNet-SHA): pool contents, real
pseudo-counts and q, leakage and target-image flags, the r0 baseline, cache reuse, resume after an interrupt,
and ``harness promptmix inspect``."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from harness import (ConfigError, MethodSpec, PseudoLabel, StableDiffusionGenerator, hookimpl, parse_or_raise,
                     quality_score)
from harness.cli import main
from harness.io import ArtifactCache
from harness.plugins import build_registries
from harness.runner import execute, plan_run

TRAIN = {"epochs": 1, "crop_size": 64, "max_side": 256, "max_train_images": 3, "max_val_images": 2}
BASE = {"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": TRAIN, "captioner": "tiny",
        "max_captioned_images": 2, "images_per_prompt": 2, "generator_model": "tiny", "steps": 2, "max_side": 64}
POOL = {"annotators": ["mcnn-sha", "mcnn-shb"], "r_mix": 1.0}


class TinyMethods:
    @hookimpl
    def harness_register_methods(self, register):
        def m(name, pool=None, **kw):
            register(MethodSpec(name, "promptmix", {"smoke": {**BASE, **kw, "pool": {**POOL, **(pool or {})}}}))
        m("pm-test")
        m("pm-test-r0", pool={"r_mix": 0.0})
        m("pm-test-table4", train={**TRAIN, "val_fraction": 0.2, "select": "last", "train_mae": True},
          pool={"exclude_target_trained": False, "keep": "target", "synthetic_in_val": True})
        m("pm-test-report", pool={"exclude_target_trained": False, "keep": "target"})
        m("pm-test-target", caption_from="target", pool={"annotators": ["csrnet-sha", "mcnn-sha", "mcnn-shb"],
                                                         "exclude_target_trained": False, "keep": "mcnn-sha",
                                                         "quality_distance": "mae"})
        register(MethodSpec("so-test", "source-only", {"smoke": {k: BASE[k] for k in
                                                                  ("counter", "counter_options", "train")}}))


@pytest.fixture(scope="module")
def regs():
    return build_registries(extra_plugins=[TinyMethods()])


def run(regs, data_root, out, methods, matrix="SHA→SHB"):
    """Run with a cache of the test's own (prompts, images, annotations), next to ``out``."""
    plan = plan_run(matrix, methods, "0", "smoke", regs, data_root, limit_test=2)
    return execute(plan, out, "cpu", progress=False, cache=ArtifactCache(out.parent / "cache"))


def cell(out, method, pair="SHA→SHB"):
    return out / method / pair / "seed-0-n2"


def metrics(out, method, pair="SHA→SHB"):
    return json.loads((cell(out, method, pair) / "metrics.json").read_text())


def test_pool_pseudo_labels_flags_and_reuse(regs, data_root, weights_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    summary = run(regs, data_root, out, "pm-test,pm-test-report")
    assert not summary.failed, summary.failed
    # default: the annotator trained on the target (MCNN-SHB) is left out -> one annotator, no q, no leak
    pool = json.loads((cell(out, "pm-test") / "synthetic.json").read_text())
    assert [a["counter"] for a in pool["annotators"]] == ["mcnn-sha"] and pool["kept_annotator"] == "mcnn-sha"
    assert len(pool["images"]) == 4 and all(im["q"] is None and im["kept"] for im in pool["images"])
    assert len({im["seed"] for im in pool["images"]}) == 4  # distinct recorded seeds
    m = metrics(out, "pm-test")
    assert m["target_labels_seen"] is False and m["uses_target_images"] is False
    assert m["labels_used"] == ["SHA"] and m["provenance_notes"]["synthetic_per_epoch"] == 3
    prompts = (cell(out, "pm-test") / "prompts.txt").read_text().splitlines()[1:]
    assert len(prompts) == 2 and all(p.endswith(("colour photo", "greyscale photo")) for p in prompts)

    # the report's choice: both annotators, pseudo-labels from MCNN-SHB (trained on the target): flagged
    report = json.loads((cell(out, "pm-test-report") / "synthetic.json").read_text())
    assert report["kept_annotator"] == "mcnn-shb"
    assert metrics(out, "pm-test-report")["target_labels_seen"] is True
    assert metrics(out, "pm-test-report")["labels_used"] == ["SHA", "SHB"]
    # the same images (content-addressed cache) and real annotations: recompute them with the counters
    assert [im["path"] for im in report["images"]] == [im["path"] for im in pool["images"]]
    counters = {n: regs.counters.get(n).factory(device="cpu") for n in ("mcnn-sha", "mcnn-shb")}
    for im in report["images"]:
        img = np.asarray(Image.open(im["path"]).convert("RGB"))
        counts = {n: c.predict(img).count for n, c in counters.items()}
        assert im["counts"] == {n: pytest.approx(v, abs=1e-3) for n, v in counts.items()}
        assert im["q"] == pytest.approx(quality_score([PseudoLabel(v) for v in counts.values()]))
        pts = np.load(im["points_path"])
        assert len(pts) == round(counts["mcnn-shb"]) and im["pseudo_count"] == pytest.approx(counts["mcnn-shb"])

    # inspect: contact sheets and the q histogram
    r = CliRunner().invoke(main, ["promptmix", "inspect", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    sheets = sorted((out / "promptmix-inspect").glob("contact-sheet-*.png"))
    assert len(sheets) == 2 and (out / "promptmix-inspect" / "q-histogram.png").stat().st_size > 0
    assert "SHA captions (mcnn-sha+mcnn-shb, count): 4 images, 4 kept; q mean" in r.output
    r = CliRunner().invoke(main, ["promptmix", "inspect", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "is not a folder" in r.output


def test_target_captions_mae_filter_and_r0_baseline(regs, data_root, weights_root, tmp_path):
    out = tmp_path / "run"
    summary = run(regs, data_root, out, "pm-test-target,pm-test-r0,so-test", matrix="SHB→SHA")
    assert not summary.failed, summary.failed
    m = metrics(out, "pm-test-target", "SHB→SHA")
    assert m["uses_target_images"] is True  # captions of SHA's unlabelled train images
    assert m["target_labels_seen"] is True  # CSRNet-SHA / MCNN-SHA decided the filter and the labels
    pool = json.loads((cell(out, "pm-test-target", "SHB→SHA") / "synthetic.json").read_text())
    assert pool["quality_distance"] == "mae" and pool["kept_annotator"] == "mcnn-sha"
    qs = sorted(im["q"] for im in pool["images"])
    assert len(qs) == 4 and all(0 <= q <= 2 for q in qs) and pool["n_kept"] == 4  # no threshold: all kept
    # r_mix = 0 is the source-only baseline: no pool, the very same weights and numbers
    assert not (cell(out, "pm-test-r0", "SHB→SHA") / "synthetic.json").exists()
    r0, so = metrics(out, "pm-test-r0", "SHB→SHA"), metrics(out, "so-test", "SHB→SHA")
    assert r0["mae"] == so["mae"] and r0["uses_target_images"] is False and r0["labels_used"] == ["SHB"]

    # a threshold between the scores filters exactly the images above it (images and annotations reused)
    threshold = (qs[1] + qs[2]) / 2

    class Filtered:
        @hookimpl
        def harness_register_methods(self, register):
            opts = regs.methods.get("pm-test-target").profiles["smoke"]
            for name, limit in (("pm-test-filter", threshold), ("pm-test-filter-all", qs[0] / 2)):
                register(MethodSpec(name, "promptmix", {"smoke": {**opts, "pool": {**opts["pool"],
                                                                                    "max_quality": limit}}}))

    regs2 = build_registries(extra_plugins=[TinyMethods(), Filtered()])
    summary = run(regs2, data_root, out, "pm-test-filter,pm-test-filter-all", matrix="SHB→SHA")
    filtered = json.loads((cell(out, "pm-test-filter", "SHB→SHA") / "synthetic.json").read_text())
    assert [im["kept"] for im in filtered["images"]] == [im["q"] <= threshold for im in filtered["images"]]
    assert filtered["n_kept"] == 2 and metrics(out, "pm-test-filter", "SHB→SHA")["provenance_notes"][
        "synthetic_per_epoch"] == 2  # r_mix 100 % of 3 real images, capped by the 2 kept
    assert [c.method for c, _ in summary.failed] == ["pm-test-filter-all"]
    assert "every synthetic image was filtered out" in summary.failed[0][1]


def test_interrupted_generation_resumes_without_regenerating(regs, data_root, weights_root, tmp_path,
                                                             monkeypatch):
    calls = []
    real = StableDiffusionGenerator.generate

    def flaky(self, requests):
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while generating the 4th image
        calls.append(requests[0].seed)
        return real(self, requests)

    monkeypatch.setattr(StableDiffusionGenerator, "generate", flaky)
    out = tmp_path / "run"
    assert run(regs, data_root, out, "pm-test").interrupted
    assert not (cell(out, "pm-test") / "metrics.json").exists()
    done = list(calls)
    regenerated = []

    def counting(self, requests):
        regenerated.append(requests[0].seed)
        return real(self, requests)

    monkeypatch.setattr(StableDiffusionGenerator, "generate", counting)
    summary = run(regs, data_root, out, "pm-test")
    assert not summary.failed
    assert len(done) == 3 and len(regenerated) == 1 and regenerated[0] not in done
    assert (cell(out, "pm-test") / "metrics.json").exists()


def test_prompt_file_adds_to_or_replaces_the_captions(regs, data_root, tmp_path):
    from types import SimpleNamespace

    from harness_promptmix.strategy import PromptMix as _PromptMix
    from harness_promptmix.strategy import PromptMixOptions

    def PromptMix(**options):
        return _PromptMix(parse_or_raise(PromptMixOptions, options))

    f = tmp_path / "prompts.txt"
    f.write_text("# extra prompts\na packed stadium seen from above\nprotesters filling a square\n")
    ctx = SimpleNamespace(source=regs.datasets.get("SHB").factory(data_root), target_images=[], seed=0,
                          device="cpu", cache=ArtifactCache(tmp_path / "cache"))
    opts = {k: BASE[k] for k in ("counter", "counter_options", "train", "max_captioned_images")}
    added = PromptMix(**opts, captioner="tiny", prompt_file=str(f)).build_prompts(ctx)
    assert len(added) == 4 and [p for p, _ in added[2:]] == ["a packed stadium seen from above",
                                                               "protesters filling a square"]
    assert added[0][0].endswith(", 1024x768 pixels, colour photo") and added[2][1] == added[0][1] == (768, 1024)
    # replace: the captioner is never loaded (this id would fail offline), file prompts only
    replaced = PromptMix(**opts, captioner="no-such-org/no-such-captioner", prompt_file=str(f),
                         prompt_file_mode="replace").build_prompts(ctx)
    assert replaced == [("a packed stadium seen from above", (512, 512)), ("protesters filling a square", (512, 512))]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no prompt"):  # a bad file fails when the run is planned
        PromptMix(**opts, prompt_file=str(tmp_path / "empty.txt"))


def test_table4_protocol_holds_synthetic_images_in_validation_and_reports_the_last_epoch(regs, data_root,
                                                                                       weights_root, tmp_path):
    """The report's Table IV protocol (§IV-C): SHA→SHA in-domain, the 300 labelled SHA images split 240 / 60, the
    synthetic pool split at the same ratio with r_mix × the real val images joining validation, the last epoch's
    weights, and the train / validation / test MAE of that model."""
    out = tmp_path / "run"
    summary = run(regs, data_root, out, "pm-test-table4", matrix="SHA→SHA")
    assert not summary.failed, summary.failed
    m = metrics(out, "pm-test-table4", "SHA→SHA")
    notes = m["provenance_notes"]
    # 4 generated images: 1 (20 %) held out for validation, r_mix 1.0 × 2 real val images -> 1 (all there is)
    assert notes["synthetic_in_val"] == 1 and notes["synthetic_per_epoch"] == 3
    assert notes["selection_split"] == "none (last epoch; val: source val (60 held out of 300) + 1 synthetic)"
    assert m["selection_split"] == notes["selection_split"]
    assert notes["best_epoch"] == notes["epochs"] == 1  # the last epoch, whatever the val MAE said
    assert np.isfinite(notes["train_mae"]) and np.isfinite(notes["last_val_mae"]) and np.isfinite(m["mae"])
    assert m["in_domain"] is True and m["target_labels_seen"] is True  # SHA's labels train the counter
