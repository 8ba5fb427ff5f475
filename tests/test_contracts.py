"""Contract tests (timm's ``test_models.py`` style): every registered counter, generator, annotator and segmenter is
built with its spec's tiny options through :meth:`harness.CellContext.build` and exercised; every strategy fits with
its tiny options on the built-in synthetic datasets through the runner; every method's profiles parse; plugins
import only the public ``harness`` API; and every hook spec has a ``test_hook_<name>`` test (datasette style)."""
from __future__ import annotations

import ast
import inspect
import logging
import math
from pathlib import Path

import numpy as np
import pytest

import harness.hookspecs
from harness import CellContext, GenerationRequest, MethodSpec, Prediction, PseudoLabel, Segmentation, hookimpl
from harness.evaluation import validate_prediction
from harness.io import ArtifactCache
from harness.planning import method_options
from harness.plugins import build_registries, get_registries

REPO = Path(__file__).resolve().parents[1]
REGS = get_registries()


def entries(kind: str) -> list:
    return [pytest.param(e, id=e.spec.name) for e in REGS.by_kind(kind)]


@pytest.fixture
def ctx(tmp_path):
    from harness.data.synthetic import SyntheticCrowds

    return CellContext(source=SyntheticCrowds("SYN-SPARSE"), source_name="SYN-SPARSE", target_name="SYN-DENSE",
                       target_images=[], profile="smoke", seed=0, device="cpu", workdir=tmp_path,
                       cache=ArtifactCache(tmp_path / "cache"), registries=REGS, options=None,
                       log=logging.getLogger("contracts"))


def image(h=48, w=64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("entry", entries("counter"))
def test_counter_contract(entry, ctx):
    counter = ctx.build("counter", entry.spec.name, **entry.spec.tiny_options)
    pred = counter.predict(image())
    validate_prediction(pred, f"counter {entry.spec.name}")
    assert isinstance(pred, Prediction) and math.isfinite(pred.count)
    if getattr(counter, "localises", True):
        assert pred.density is not None or pred.points is not None
    assert ctx.components[-1]["kind"] == "counter" and ctx.components[-1]["name"] == entry.spec.name


@pytest.mark.parametrize("entry", entries("generator"))
def test_generator_contract(entry, ctx):
    gen = ctx.build("generator", entry.spec.name, **entry.spec.tiny_options)
    reqs = []
    if "text" in entry.spec.modes:
        reqs.append(GenerationRequest(seed=1, size=(32, 48), prompt="a crowd", negative_prompt="nobody"))
    if "image" in entry.spec.modes:
        reqs.append(GenerationRequest(seed=1, size=(32, 48), prompt="an empty square", init_image=image(),
                                      strength=0.5))
    if "mask" in entry.spec.modes:
        reqs.append(GenerationRequest(seed=1, size=(32, 48), label_mask=np.zeros((32, 48), np.int32)))
    assert reqs, f"generator {entry.spec.name} declares no known mode: {entry.spec.modes}"
    out = gen.generate(reqs)
    assert len(out) == len(reqs) and all(o.request == r for o, r in zip(out, reqs))
    assert all(o.image.dtype == np.uint8 and o.image.ndim == 3 and o.image.shape[2] == 3 for o in out)
    assert isinstance(gen.key(), dict) and gen.key() == gen.key()


@pytest.mark.parametrize("entry", entries("annotator"))
def test_annotator_contract(entry, ctx):
    ann = ctx.build("annotator", entry.spec.name, **entry.spec.tiny_options)
    label = ann.annotate(image())
    assert isinstance(label, PseudoLabel) and math.isfinite(label.count)
    assert isinstance(ann.key(), dict) and ann.name


@pytest.mark.parametrize("entry", entries("segmenter"))
def test_segmenter_contract(entry, ctx):
    seg = ctx.build("segmenter", entry.spec.name, **entry.spec.tiny_options)
    img = image()
    out = seg.segment(img, np.array([[10.0, 10.0], [30.0, 20.0]]))
    assert isinstance(out, Segmentation) and out.labels.shape == img.shape[:2]
    assert np.issubdtype(out.labels.dtype, np.integer)
    assert out.labels.min() >= 0 and out.labels.max() < len(out.label_names) == len(seg.label_names)


@pytest.mark.parametrize("entry", entries("strategy"))
def test_strategy_contract_fits_with_tiny_options(entry, tmp_path):
    """A seconds-long fit on SYN-SPARSE→SYN-DENSE through the planner and the runner, scored on 2 images."""
    from harness.runner import execute, plan_run

    class Tiny:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec(f"tiny-{entry.spec.name}", entry.spec.name, {"smoke": dict(entry.spec.tiny_options)}))

    regs = build_registries(extra_plugins=[Tiny()])
    plan = plan_run("SYN-SPARSE→SYN-DENSE", f"tiny-{entry.spec.name}", "0", "smoke", regs, None, limit_test=2)
    summary = execute(plan, tmp_path / "run", "cpu", progress=False, cache=ArtifactCache(tmp_path / "cache"))
    assert not summary.failed, summary.failed
    metrics = next((tmp_path / "run").rglob("metrics.json"))
    assert "mae" in metrics.read_text()


def test_every_strategy_has_a_method_and_every_method_profile_parses():
    strategies = {m.spec.strategy for m in REGS.methods}
    assert {s.spec.name for s in REGS.strategies} <= strategies
    for entry in REGS.methods:
        for profile in entry.spec.profiles:
            parsed, problems = method_options(REGS, entry.spec.name, profile)
            assert not problems and parsed is not None, (entry.spec.name, profile, problems)


def test_plugins_import_only_the_public_api():
    offenders = []
    for path in sorted(REPO.glob("plugins/*/harness_*/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.startswith("harness.")]
    assert not offenders, offenders


def test_every_hook_spec_has_a_test():
    hooks = [n for n, f in inspect.getmembers(harness.hookspecs, inspect.isfunction) if n.startswith("harness_")]
    assert len(hooks) >= 8
    source = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    missing = [h for h in hooks if f"def test_hook_{h}(" not in source]
    assert not missing, f"hook specs without a test_hook_<name> test: {missing}"


def test_docstring_references_point_at_sections_of_the_design_doc():
    import re

    doc = (REPO / "docs" / "design.md").read_text()
    sections = {int(n) for n in re.findall(r"^## (\d+)\. ", doc, flags=re.M)}
    refs = []
    for path in list(REPO.glob("harness/**/*.py")) + list(REPO.glob("plugins/*/harness_*/**/*.py")):
        text = path.read_text()
        assert "DESIGN.md" not in text, f"{path} cites DESIGN.md, which users do not have"
        for group in re.findall(r"design\.md (§\d+(?:, §\d+)*)", text):
            refs += [(path.name, int(n)) for n in re.findall(r"§(\d+)", group)]
    assert len(refs) > 20 and all(n in sections for _, n in refs), [r for r in refs if r[1] not in sections]
