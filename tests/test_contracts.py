"""Contract tests (timm's ``test_models.py`` style): every registered counter, generator, annotator and segmenter is
built with its spec's tiny options through :meth:`harness.CellContext.build` and exercised; every strategy fits with
its tiny options on the built-in synthetic datasets through the runner; every method's profiles parse; plugins
import only the public ``harness`` API; and every hook spec has a ``test_hook_<name>`` test (datasette style)."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import harness.hookspecs
from harness import testing
from harness.plugins import build_registries, get_registries

REPO = Path(__file__).resolve().parents[1]
REGS = get_registries()


def entries(kind: str) -> list:
    return [pytest.param(e, id=e.spec.name) for e in REGS.by_kind(kind)]


@pytest.fixture
def ctx(tmp_path):
    return testing.contract_context(tmp_path, REGS)


@pytest.mark.parametrize("entry", entries("counter"))
def test_counter_contract(entry, ctx):
    testing.check_counter(entry, ctx)


@pytest.mark.parametrize("entry", entries("generator"))
def test_generator_contract(entry, ctx):
    testing.check_generator(entry, ctx)


@pytest.mark.parametrize("entry", entries("annotator"))
def test_annotator_contract(entry, ctx):
    testing.check_annotator(entry, ctx)


@pytest.mark.parametrize("entry", entries("segmenter"))
def test_segmenter_contract(entry, ctx):
    testing.check_segmenter(entry, ctx)


@pytest.mark.parametrize("entry", entries("strategy"))
def test_strategy_contract_fits_with_tiny_options(entry, tmp_path):
    """A seconds-long fit on SYN-SPARSE→SYN-DENSE through the planner and the runner, scored on 2 images."""
    testing.check_strategy(entry, tmp_path)


@pytest.mark.parametrize("entry", entries("tiny_model"))
def test_tiny_model_contract(entry, tmp_path):
    testing.check_tiny_model(entry, tmp_path)


def test_a_broken_component_fails_its_check(ctx):
    """The checks can fail: a counter that localises but gives neither map nor points is caught."""
    from harness import CounterSpec, Prediction, Provenance
    from harness.registry import Registry

    class Blind:
        name, provenance = "blind", Provenance("x")

        def predict(self, image):
            return Prediction(count=1.0)

    counters = Registry("counter")
    counters.register(CounterSpec("blind", lambda device="cpu": Blind()), "t")
    ctx.registries = build_registries()
    ctx.registries._by_kind["counter"] = ctx.registries.counters = counters
    with pytest.raises(AssertionError, match="localising counter"):
        testing.check_counter(counters.entry("blind"), ctx)


def test_every_strategy_has_a_method_and_every_method_profile_parses():
    strategies = {m.spec.strategy for m in REGS.methods}
    assert {s.spec.name for s in REGS.strategies} <= strategies
    for entry in REGS.methods:
        testing.check_method_profiles(entry, REGS)


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
