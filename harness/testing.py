"""The contract checks of the harness, for its own tests and for third-party plugin authors (docs/design.md §5).

As a library: :func:`check_counter`, :func:`check_generator`, :func:`check_annotator`, :func:`check_segmenter`,
:func:`check_strategy`, :func:`check_method_profiles` and :func:`check_tiny_model` exercise one registered component
the way the runner does (built with its spec's ``tiny_options`` through :meth:`harness.CellContext.build`, a
strategy fitted on the built-in synthetic pair through the planner and the runner); ``tests/test_contracts.py`` runs
them over every registered component.

As a pytest plugin (entry point ``pytest11``, loaded wherever crowd-harness is installed):
``pytest --harness-plugin NAME`` (repeatable; the ``harness`` entry-point name or the plugin's module) adds the same
checks for every component that plugin registers, from any folder — what an author outside this repository runs::

    pip install -e ./harness-mymethod
    pytest --harness-plugin mymethod
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

CONTRACT_TESTS = Path(__file__).with_name("contract_tests.py")
#: the buildable kinds and their check functions (names below)
BUILDABLE = ("counter", "generator", "annotator", "segmenter")


def registries():
    from .plugins import get_registries

    return get_registries()


def plugin_entries(kind: str, plugins: list[str] | None = None, regs: Any = None) -> list:
    """Registry entries of ``kind`` (all, or those registered by the named plugins).

    Raises:
        PluginError: a named plugin is not loaded, or failed to load (its error in one line)."""
    from .errors import PluginError

    regs = regs or registries()
    if plugins:
        known = {p.name: p for p in regs.plugins} | {p.module: p for p in regs.plugins}
        for name in plugins:
            info = known.get(name)
            if info is None:
                raise PluginError(f"plugin {name!r} is not loaded (loaded: {', '.join(sorted(p.name for p in regs.plugins))})"
                                  f"; pip install it (its pyproject declares [project.entry-points.harness])")
            if info.error:
                raise PluginError(f"plugin {name!r} failed to load: {info.error}")
        names = {known[n].name for n in plugins}
        return [e for e in regs.by_kind(kind) if e.plugin in names]
    return list(regs.by_kind(kind))


def contract_context(tmp_path: Path, regs: Any = None, *, cache_root: Path | None = None, options: Any = None):
    """A :class:`~harness.CellContext` on the built-in synthetic source (SYN-SPARSE → SYN-DENSE) with its workdir
    ``tmp_path`` (and ``checkpoints/`` in it) and its artefact cache in ``cache_root`` (default ``tmp_path/cache``;
    pass one folder to several contexts to test cache hits)."""
    from .context import CellContext
    from .data.synthetic import SyntheticCrowds
    from .io import ArtifactCache

    (Path(tmp_path) / "checkpoints").mkdir(parents=True, exist_ok=True)
    return CellContext(source=SyntheticCrowds("SYN-SPARSE"), source_name="SYN-SPARSE", target_name="SYN-DENSE",
                       target_images=[], profile="smoke", seed=0, device="cpu", workdir=Path(tmp_path),
                       cache=ArtifactCache(Path(cache_root) if cache_root else Path(tmp_path) / "cache"),
                       registries=regs or registries(), options=options, log=logging.getLogger("contracts"))


def _image(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def check_counter(entry, ctx) -> None:
    """Built with its tiny options, a counter predicts a valid :class:`~harness.Prediction` (finite count; a density
    map or points when it localises) and is recorded in the cell's components."""
    from .evaluation import validate_prediction
    from .types import Prediction, counter_localises

    counter = ctx.build("counter", entry.spec.name, **entry.spec.tiny_options)
    pred = counter.predict(_image())
    validate_prediction(pred, f"counter {entry.spec.name}")
    assert isinstance(pred, Prediction) and math.isfinite(pred.count)
    if counter_localises(counter):
        assert pred.density is not None or pred.points is not None, "a localising counter gives a map or points"
    assert ctx.components[-1]["kind"] == "counter" and ctx.components[-1]["name"] == entry.spec.name


def check_generator(entry, ctx) -> None:
    """A generator answers one request per declared mode with an ``(H, W, 3) uint8`` image and a stable ``key()``."""
    from .types import GenerationRequest

    gen = ctx.build("generator", entry.spec.name, **entry.spec.tiny_options)
    reqs = []
    if "text" in entry.spec.modes:
        reqs.append(GenerationRequest(seed=1, size=(32, 48), prompt="a crowd", negative_prompt="nobody"))
    if "image" in entry.spec.modes:
        reqs.append(GenerationRequest(seed=1, size=(32, 48), prompt="an empty square", init_image=_image(),
                                      strength=0.5))
    if "mask" in entry.spec.modes:
        reqs.append(GenerationRequest(seed=1, size=(32, 48), label_mask=np.zeros((32, 48), np.int32)))
    assert reqs, f"generator {entry.spec.name} declares no known mode: {entry.spec.modes}"
    out = gen.generate(reqs)
    assert len(out) == len(reqs) and all(o.request == r for o, r in zip(out, reqs))
    assert all(o.image.dtype == np.uint8 and o.image.ndim == 3 and o.image.shape[2] == 3 for o in out)
    assert isinstance(gen.key(), dict) and gen.key() == gen.key()


def check_annotator(entry, ctx) -> None:
    """An annotator gives a :class:`~harness.PseudoLabel` with a finite count, a ``key()`` and a name."""
    from .types import PseudoLabel

    ann = ctx.build("annotator", entry.spec.name, **entry.spec.tiny_options)
    label = ann.annotate(_image())
    assert isinstance(label, PseudoLabel) and math.isfinite(label.count)
    assert isinstance(ann.key(), dict) and ann.name


def check_segmenter(entry, ctx) -> None:
    """A segmenter gives an integer ``(H, W)`` label map within its ``label_names``."""
    from .types import Segmentation

    seg = ctx.build("segmenter", entry.spec.name, **entry.spec.tiny_options)
    img = _image()
    out = seg.segment(img, np.array([[10.0, 10.0], [30.0, 20.0]]))
    assert isinstance(out, Segmentation) and out.labels.shape == img.shape[:2]
    assert np.issubdtype(out.labels.dtype, np.integer)
    assert out.labels.min() >= 0 and out.labels.max() < len(out.label_names) == len(seg.label_names)


def check_strategy(entry, tmp_path: Path) -> dict:
    """A seconds-long fit with the strategy's tiny options on SYN-SPARSE→SYN-DENSE through the planner and the
    runner, scored on 2 images; returns the cell's metrics."""
    import json

    from .hookspecs import hookimpl
    from .io import ArtifactCache
    from .plugins import build_registries
    from .runner import execute, plan_run
    from .specs import MethodSpec

    class Tiny:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec(f"tiny-{entry.spec.name}", entry.spec.name, {"smoke": dict(entry.spec.tiny_options)}))

    regs = build_registries(extra_plugins=[Tiny()])
    plan = plan_run("SYN-SPARSE→SYN-DENSE", f"tiny-{entry.spec.name}", "0", "smoke", regs, None, limit_test=2)
    summary = execute(plan, Path(tmp_path) / "run", "cpu", progress=False,
                      cache=ArtifactCache(Path(tmp_path) / "cache"))
    assert not summary.failed, summary.failed
    metrics = json.loads(next((Path(tmp_path) / "run").rglob("metrics.json")).read_text())
    assert metrics["n_images"] == 2 and metrics["mae"] is not None
    return metrics


def check_method_profiles(entry, regs: Any = None) -> None:
    """Every profile of a method parses into its strategy's options with its component references resolved."""
    from .planning import method_options

    regs = regs or registries()
    assert entry.spec.profiles, f"method {entry.spec.name} has no profile"
    for profile in entry.spec.profiles:
        parsed, problems = method_options(regs, entry.spec.name, profile)
        assert not problems and parsed is not None, (entry.spec.name, profile, problems)


def check_tiny_model(entry, tmp_path: Path) -> None:
    """A tiny model builder writes a folder, and reuses it on the second call."""
    first = Path(entry.spec.build(Path(tmp_path) / entry.spec.name, 0))
    assert first.is_dir() and any(first.iterdir())
    assert Path(entry.spec.build(Path(tmp_path) / entry.spec.name, 0)) == first


# ----------------------------------------------------------------------------------------- pytest plugin


def pytest_addoption(parser) -> None:
    group = parser.getgroup("harness", "crowd-harness contract tests")
    group.addoption("--harness-plugin", action="append", default=[], metavar="NAME",
                    help="run the crowd-harness contract tests on every component of this installed plugin "
                         "(repeatable)")


def pytest_configure(config) -> None:
    if config.getoption("harness_plugin", default=None):
        config.args.append(str(CONTRACT_TESTS))


__all__ = ["check_counter", "check_generator", "check_annotator", "check_segmenter", "check_strategy",
           "check_method_profiles", "check_tiny_model", "contract_context", "plugin_entries", "BUILDABLE",
           "CONTRACT_TESTS"]
