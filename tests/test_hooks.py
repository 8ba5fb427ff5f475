"""One test per hook spec (``test_hook_<hook name>``, checked by ``test_contracts.py``): a plugin object registers a
component through the hook, and the harness uses it the way a method would."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner

from harness import (AnnotatorSpec, CellContext, CommandSpec, CounterSpec, DatasetSpec, GenerationRequest,
                     GeneratorSpec, MethodSpec, PoolOptions, Prediction, Provenance, PseudoLabel, Sample, SampleRef,
                     Segmentation, SegmenterSpec, StrategySpec, SyntheticImage, TinyModelSpec, build_pool,
                     hookimpl, resolve_model)
from harness.io import ArtifactCache
from harness.plugins import build_registries
from harness.runner import execute, plan_run


class TinyDataset:
    """Three 16×16 images per split with 2 + i heads each."""

    def __init__(self, name):
        self.name, self.root = name, None

    def _load(self, ref):
        i = int(ref.id)
        pts = np.array([[2.0 + 3 * k, 4.0] for k in range(2 + i)])
        return Sample(ref.id, np.full((16, 16, 3), 40 * i, np.uint8), pts)

    def samples(self, split):
        return [SampleRef(self.name, split, str(i), None, None, self._load, lambda r: self._load(r).image)
                for i in range(3)]


class HeadCounter:
    """Counts bright pixels / 10 (a stand-in for a pretrained counter trained on TINY-A)."""

    name = "head-counter"
    provenance = Provenance("head.pt", trained_on=frozenset({"TINY-A"}))
    stride = 1

    def predict(self, image):
        d = image[..., 0].astype(np.float32) / 2550
        return Prediction(count=float(d.sum()), density=d)


class FlatGenerator:
    provenance = Provenance("flat")

    def key(self):
        return {"flat": 1}

    def generate(self, requests):
        return [SyntheticImage(np.full((*r.size, 3), r.seed % 256, np.uint8), request=r) for r in requests]


class FixedAnnotator:
    name = "fixed"
    provenance = Provenance("fixed.pt", trained_on=frozenset({"TINY-B"}))

    def key(self):
        return {"fixed": 1}

    def annotate(self, image):
        return PseudoLabel(count=5.0)


class HalfSegmenter:
    name = "half"
    label_names = ("top", "bottom")
    provenance = Provenance("none")

    def key(self):
        return {"half": 1}

    def segment(self, image, points=None):
        labels = np.zeros(image.shape[:2], np.int32)
        labels[image.shape[0] // 2:] = 1
        return Segmentation(labels, self.label_names)


@dataclass
class PretrainedOptions:
    pass


class UsePretrained:
    def __init__(self, options):
        pass

    def fit(self, ctx):
        ctx.provenance_notes["selection_split"] = "none (pretrained)"
        return ctx.build("counter", "head-counter")


class Everything:
    @hookimpl
    def harness_register_datasets(self, register):
        register(DatasetSpec("TINY-A", lambda root: TinyDataset("TINY-A"), needs_root=False))
        register(DatasetSpec("TINY-B", lambda root: TinyDataset("TINY-B"), needs_root=False))

    @hookimpl
    def harness_register_counters(self, register):
        register(CounterSpec("head-counter", lambda device="cpu": HeadCounter(), trained_on=frozenset({"TINY-A"})))

    @hookimpl
    def harness_register_generators(self, register):
        register(GeneratorSpec("flat", lambda device="cpu": FlatGenerator()))

    @hookimpl
    def harness_register_annotators(self, register):
        register(AnnotatorSpec("fixed", lambda device="cpu": FixedAnnotator()))

    @hookimpl
    def harness_register_segmenters(self, register):
        register(SegmenterSpec("half", lambda device="cpu": HalfSegmenter()))

    @hookimpl
    def harness_register_strategies(self, register):
        register(StrategySpec("use-pretrained", UsePretrained, options=PretrainedOptions))

    @hookimpl
    def harness_register_methods(self, register):
        register(MethodSpec("head-counter-as-is", "use-pretrained", {"smoke": {}}))

    @hookimpl
    def harness_register_commands(self, register):
        import click

        @click.command("hello")
        def hello():
            """Say hello."""
            click.echo("hello from a plugin")

        register(CommandSpec("hello", hello))

    @hookimpl
    def harness_register_tiny_models(self, register):
        def build(folder, seed):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "weights.txt").write_text(f"seed {seed}")
            return folder

        register(TinyModelSpec("toy-net", build, version=3))


REGS = build_registries(extra_plugins=[Everything()])


def ctx(tmp_path, target="TINY-B") -> CellContext:
    return CellContext(source=TinyDataset("TINY-A"), source_name="TINY-A", target_name=target, target_images=[],
                       profile="smoke", seed=0, device="cpu", workdir=tmp_path, cache=ArtifactCache(tmp_path / "c"),
                       registries=REGS, options=None, log=logging.getLogger("hooks"))


def run(tmp_path, matrix):
    plan = plan_run(matrix, "head-counter-as-is", "0", "smoke", REGS, None)
    return execute(plan, tmp_path / "run", "cpu", progress=False, cache=ArtifactCache(tmp_path / "c"))


def test_hook_harness_register_datasets(tmp_path):
    assert REGS.datasets.resolve("tiny-a") == "TINY-A"
    summary = run(tmp_path, "TINY-A→TINY-B")
    assert not summary.failed
    assert (tmp_path / "run/head-counter-as-is/TINY-A→TINY-B/seed-0/predictions.csv").read_text().count("\n") == 4


def test_hook_harness_register_counters(tmp_path):
    import json

    run(tmp_path, "TINY-B→TINY-A")
    m = json.loads((tmp_path / "run/head-counter-as-is/TINY-B→TINY-A/seed-0/metrics.json").read_text())
    # the registered counter's provenance reaches the flags: its weights saw the target's labels
    assert m["target_labels_seen"] is True and m["labels_used"] == ["TINY-A"]
    assert m["components"][0]["name"] == "head-counter" and m["map"] is not None


def test_hook_harness_register_strategies(tmp_path):
    assert REGS.strategies.get("use-pretrained").options is PretrainedOptions
    assert not run(tmp_path, "TINY-A→TINY-B").failed


def test_hook_harness_register_methods():
    assert REGS.methods.get("head-counter-as-is").strategy == "use-pretrained"
    assert plan_run("TINY-A→TINY-B", "head-counter-as-is", "0", "smoke", REGS, None).cells


def test_hook_harness_register_generators(tmp_path):
    c = ctx(tmp_path)
    gen = c.build("generator", "flat")
    reqs = [GenerationRequest(seed=s, size=(8, 12)) for s in (10, 200)]
    pool = build_pool(c, gen, reqs, PoolOptions(annotators=("head-counter",), keep="head-counter"))
    assert [r.pseudo_count for r in pool.records] == pytest.approx([8 * 12 * 10 / 2550, 8 * 12 * 200 / 2550])
    assert (tmp_path / "synthetic.json").exists()


def test_hook_harness_register_annotators(tmp_path):
    c = ctx(tmp_path, target="TINY-B")
    ann = c.build("annotator", "fixed")
    assert ann.annotate(np.zeros((4, 4, 3), np.uint8)).count == 5.0
    assert c.labels_seen() == frozenset({"TINY-B"})  # its labels count as seen by the cell's counter


def test_hook_harness_register_segmenters(tmp_path):
    seg = ctx(tmp_path).build("segmenter", "half")
    out = seg.segment(np.zeros((6, 4, 3), np.uint8))
    assert out.labels[:3].max() == 0 and out.labels[3:].min() == 1 and out.label_names == ("top", "bottom")


def test_hook_harness_register_commands(monkeypatch):
    import harness.plugins
    from harness.cli import main

    monkeypatch.setattr(harness.plugins, "_REGISTRIES", REGS)
    r = CliRunner().invoke(main, ["hello"])
    assert r.exit_code == 0 and r.output == "hello from a plugin\n"
    assert "hello" in CliRunner().invoke(main, ["--help"]).output


def test_hook_harness_register_tiny_models(tmp_path):
    from harness.errors import UnknownNameError

    m = resolve_model("tiny:7", kind="toy_net", cache_root=tmp_path, registries=REGS)
    assert m.tiny and m.folder == tmp_path / "tiny" / "toy-net-v3-seed7"
    assert (m.folder / "weights.txt").read_text() == "seed 7" and m.identity["tiny_version"] == 3
    assert "stable-diffusion" in REGS.tiny_models  # the core's own builders come through the same hook
    with pytest.raises(UnknownNameError, match="toy-net"):
        resolve_model("tiny", kind="toy-nett", cache_root=tmp_path, registries=REGS)


def test_component_names_that_would_leave_the_run_folder_are_refused_at_registration():
    """A plugin method named like a path is refused (the plugin records the one-line error; the others load) and
    a cell can never be a folder outside its run folder."""
    import pytest as _pytest

    from harness import ConfigError, MethodSpec, hookimpl
    from harness.planning import Cell
    from harness.plugins import build_registries

    class Hostile:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec("../../../somewhere/escaped", "source-only"))

    with _pytest.warns(UserWarning, match="registers method name .* which is not allowed"):
        regs = build_registries(extra_plugins=[Hostile()])
    info = next(p for p in regs.plugins if p.error)
    assert "not allowed" in info.error and "escaped" in info.error and "\n" not in info.error
    assert "source-only-mcnn-sha" in regs.methods.names()
    with _pytest.raises(ConfigError, match="inside the run folder"):
        Cell("../x", "SHA", "SHB", 0).relpath


def test_build_passes_exactly_the_cell_arguments_a_spec_declares(tmp_path):
    """No signature inspection: a factory gets the build_args its spec declares (options win), nothing else."""
    from harness.registry import Registry

    seen = []

    def factory(**kw):
        seen.append(kw)
        return HeadCounter()

    regs = build_registries()
    counters = Registry("counter")
    counters.register(CounterSpec("plain", factory, build_args=()), "t")
    counters.register(CounterSpec("seeded", factory, build_args=("device", "seed", "cache_root", "registries")), "t")
    regs._by_kind["counter"] = regs.counters = counters
    c = CellContext(source=TinyDataset("TINY-A"), source_name="TINY-A", target_name="TINY-B", target_images=[],
                    profile="smoke", seed=41, device="cpu", workdir=tmp_path, cache=ArtifactCache(tmp_path / "c"),
                    registries=regs, options=None, log=logging.getLogger("hooks"))
    c.build("counter", "plain", width=2)
    c.build("counter", "seeded")
    c.build("counter", "seeded", seed=5)
    assert seen[0] == {"width": 2}
    assert seen[1] == {"device": "cpu", "seed": 41, "cache_root": tmp_path / "c", "registries": regs}
    assert seen[2]["seed"] == 5
    with pytest.raises(ValueError, match="build_args.*'workdir'.*device, cache_root, registries, seed"):
        CounterSpec("bad", factory, build_args=("device", "workdir"))


def test_a_plugin_written_for_another_api_version_is_refused_in_one_line():
    import warnings

    from harness.hookspecs import API_VERSION

    class Future:
        HARNESS_API = API_VERSION + 1

        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec("from-the-future", "source-only", {"smoke": {}}))

    class Current(Future):
        HARNESS_API = API_VERSION

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        regs = build_registries(extra_plugins=[Future()])
    info = next(p for p in regs.plugins if p.name == "Future")
    assert f"plugin API {API_VERSION + 1}" in info.error and "\n" not in info.error
    assert "from-the-future" not in regs.methods
    assert "from-the-future" in build_registries(extra_plugins=[Current()]).methods
    # every plugin shipped here declares the API it is written for
    import importlib

    for mod in ("harness_promptmix", "harness_rdbt", "harness_syrac", "harness_ldm", "harness_spade", "harness_dmap"):
        assert importlib.import_module(f"{mod}.plugin").HARNESS_API == API_VERSION
