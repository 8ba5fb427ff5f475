"""The spade strategy end to end through the runner (ShanghaiTech B→A when HARNESS_DATA is set, else the synthetic
pair): masks of source images, a GauGAN trained on the source and shared by cells through the cache, k images per mask
with distinct recorded seeds, the shared pipeline's pool and leakage flags, generation resumed after an interrupt,
edited masks passed back, and ``harness spade inspect`` beside a PromptMix pool."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from harness import MethodSpec, hookimpl
from harness.cli import main
from harness.io import ArtifactCache
from harness.plugins import build_registries
from harness.runner import execute, plan_run
from harness_spade.generator import GauGANGenerator
from harness_spade.plugin import TINY

RANDOM = {"weights": "random"}
POOL = {"annotators": ["mcnn-sha", "mcnn-shb"], "exclude_target_trained": False, "keep": "mcnn-shb",
        "annotator_options": {"mcnn-sha": RANDOM, "mcnn-shb": RANDOM}, "r_mix": 1.0}
BASE = {**TINY, "max_masks": 2, "images_per_mask": 2, "pool": POOL}


def methods(**extra):
    class Methods:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec("spade-test", "spade", {"smoke": BASE}))
            register(MethodSpec("spade-test-r50", "spade", {"smoke": {**BASE, "pool": {**POOL, "r_mix": 0.5}}}))
            for name, opts in extra.items():
                register(MethodSpec(name, "spade", {"smoke": {**BASE, **opts}}))
            register(MethodSpec("pm-test", "promptmix", {"smoke": {
                "counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": TINY["train"],
                "captioner": "tiny", "max_captioned_images": 2, "images_per_prompt": 2, "generator_model": "tiny",
                "steps": 2, "max_side": 64, "pool": POOL}}))

    return Methods()


def run(domains, out, names, **extra):
    src, tgt, root = domains
    regs = build_registries(extra_plugins=[methods(**extra)])
    plan = plan_run(f"{src}→{tgt}", names, "0", "smoke", regs, root, limit_test=2)
    return execute(plan, out, "cpu", progress=False, cache=ArtifactCache(out.parent / "cache"))


def cell(domains, out, method):
    return out / method / f"{domains[0]}→{domains[1]}" / "seed-0-n2"


def pool(domains, out, method):
    return json.loads((cell(domains, out, method) / "synthetic.json").read_text())


def metrics(domains, out, method):
    return json.loads((cell(domains, out, method) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def shared(domains, tmp_path_factory):
    """One run of two spade cells (r_mix 1 and 0.5) and, when the plugin is installed, a PromptMix cell."""
    out = tmp_path_factory.mktemp("spade") / "run"
    names = "spade-test,spade-test-r50" + (",pm-test" if _has_promptmix() else "")
    summary = run(domains, out, names)
    assert not summary.failed, summary.failed
    return out


def _has_promptmix() -> bool:
    from harness.plugins import get_registries

    return "promptmix" in {e.spec.name for e in get_registries().strategies}


def test_pool_masks_shared_gan_and_flags(domains, shared):
    src, tgt, _ = domains
    doc = pool(domains, shared, "spade-test")
    assert doc["method"] == "spade" and doc["masks"] == "SHTA_V2" and doc["label_names"] == ["background",
                                                                                            "dense crowd"]
    ims = doc["images"]
    assert len(ims) == 4 and len({im["seed"] for im in ims}) == 4  # 2 masks × k = 2, distinct recorded seeds
    assert len({im["meta"]["mask_id"] for im in ims}) == 2
    assert all(im["size"] == [64, 64] and Image.open(im["path"]).size == (64, 64) for im in ims)
    assert all(im["meta"]["source_image"].startswith(f"{src}/train/") for im in ims)  # source masks only
    key = doc["generator"]
    assert key["model"] == "gaugan" and len(key["weights_sha256"]) == 64
    # the editable masks of the cell: one 8-bit PNG per mask, ids named in labels.txt
    folder = cell(domains, shared, "spade-test") / "masks"
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted({im["meta"]["mask_id"] for im in ims})
    assert (folder / "labels.txt").read_text().splitlines()[1:] == ["0\tbackground", "1\tdense crowd"]
    assert all(im["meta"]["mask_path"] == str(folder / f"{im['meta']['mask_id']}.png") for im in ims)
    # q from both annotators, pseudo-labels from the kept one (the shared pipeline)
    assert doc["kept_annotator"] == "mcnn-shb" and all(im["q"] is not None and im["kept"] for im in ims)
    # the r_mix 0.5 cell trained no GAN of its own: same weights, so the very same cached images
    other = pool(domains, shared, "spade-test-r50")
    assert other["generator"] == key and [im["path"] for im in other["images"]] == [im["path"] for im in ims]
    m, m50 = metrics(domains, shared, "spade-test"), metrics(domains, shared, "spade-test-r50")
    assert m["provenance_notes"]["gan_cached"] is False and m50["provenance_notes"]["gan_cached"] is True
    assert m["provenance_notes"]["synthetic_per_epoch"] == 2 and m50["provenance_notes"]["synthetic_per_epoch"] == 1
    # leakage flags from the shared pipeline: the labels behind every component whose output reaches the counter
    # (random-weight annotators here: none; the GAN and the counter: the source's)
    assert m["uses_target_images"] is False
    seen = {d for c in m["components"] if c["labels_reach_counter"] for d in c["provenance"]["trained_on"]}
    assert m["target_labels_seen"] is (tgt in seen) and m["labels_used"] == sorted(seen | {src}) == [src]
    comps = {c["name"]: c for c in m["components"]}
    assert comps["head-mask"]["kind"] == "segmenter"
    assert comps["gaugan"]["provenance"]["trained_on"] == [src]
    assert src in m["labels_used"]


def test_generation_resumes_after_an_interrupt(domains, tmp_path, monkeypatch):
    calls = []
    real = GauGANGenerator.generate

    def flaky(self, requests):
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while generating the 3rd image
        calls.append(requests[0].seed)
        return real(self, requests)

    monkeypatch.setattr(GauGANGenerator, "generate", flaky)
    out = tmp_path / "run"
    assert run(domains, out, "spade-test").interrupted
    done, again = list(calls), []
    monkeypatch.setattr(GauGANGenerator, "generate",
                        lambda self, requests: (again.append(requests[0].seed), real(self, requests))[1])
    summary = run(domains, out, "spade-test")
    assert not summary.failed
    assert len(done) == 2 and sorted(again) == sorted(set(range(4)) - set(done))  # only the missing images
    assert metrics(domains, out, "spade-test")["provenance_notes"]["gan_cached"] is True  # the GAN was kept too


def test_edited_masks_are_passed_back(domains, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert not run(domains, out, "spade-test").failed
    before = pool(domains, out, "spade-test")
    edited = tmp_path / "edited"
    edited.mkdir()
    first, second = sorted({im["meta"]["mask_id"] for im in before["images"]})
    for mid in (first, second):
        lab = np.asarray(Image.open(cell(domains, out, "spade-test") / "masks" / f"{mid}.png"))
        if mid == first:
            lab = lab.copy()
            lab[: lab.shape[0] // 2] = 1  # paint a dense crowd over the top half
        Image.fromarray(lab).save(edited / f"{mid}.png")
    generated = []
    real = GauGANGenerator.generate
    monkeypatch.setattr(GauGANGenerator, "generate",
                        lambda self, requests: (generated.append(requests[0].meta["mask_id"]), real(self, requests))[1])
    assert not run(domains, out, "spade-edit", **{"spade-edit": {"mask_dir": str(edited)}}).failed
    after = pool(domains, out, "spade-edit")
    assert generated == [first, first]  # only the edited mask's k images are new
    paths = {im["meta"]["mask_id"]: set() for im in after["images"]}
    for im in before["images"]:
        paths[im["meta"]["mask_id"]].add(im["path"])
    assert all((im["path"] in paths[im["meta"]["mask_id"]]) == (im["meta"]["mask_id"] == second)
               for im in after["images"])
    written = np.asarray(Image.open(cell(domains, out, "spade-edit") / "masks" / f"{first}.png"))
    assert (written[: written.shape[0] // 2] == 1).all()  # the bag of masks used, in the cell folder
    # a mask with an id the configuration does not have is refused in one line
    bad = np.asarray(Image.open(edited / f"{second}.png")).copy()
    bad[0, 0] = 9
    Image.fromarray(bad).save(edited / f"{second}.png")
    summary = run(domains, out, "spade-bad", **{"spade-bad": {"mask_dir": str(edited)}})
    assert len(summary.failed) == 1 and "holds label id(s) 9 outside 0..1" in summary.failed[0][1]


def test_inspect_fig5_and_fig6(domains, shared):
    r = CliRunner().invoke(main, ["spade", "inspect", str(shared)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    folder = shared / "spade-inspect"
    slug = domains[0].replace("-", "-")
    assert (folder / f"fig5-{slug}.png").stat().st_size > 0
    assert (folder / f"fig6b-q-count-{slug}.png").stat().st_size > 0 and (folder / f"fig6c-counts-{slug}.png").exists()
    assert f"spade ({domains[0]}) q, count distance: n 4," in r.output  # the two spade cells share their 4 images
    if _has_promptmix():
        assert f"promptmix ({domains[0]}) q, count distance: n 4," in r.output
    assert "Fig. 6a (q, MAE distance): no values" in r.output
    r = CliRunner().invoke(main, ["spade", "inspect", str(shared.parent / "nothing")])
    assert r.exit_code != 0 and "is not a folder" in r.output
