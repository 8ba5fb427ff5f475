"""``harness new-plugin NAME``: a ready third-party method distribution whose tests pass right away.

It writes ``harness-NAME/`` with a ``pyproject.toml`` declaring the ``harness`` entry point, a strategy composed of
core pieces (a counter built through the cell and trained on the source with :func:`harness.fit_density_counter`),
its method with ``smoke`` and ``paper`` profiles, a README with the paper ↔ profile table to fill in, and tests
(the method in a matrix on the built-in synthetic pair, and the contract checks of :mod:`harness.testing`). The
author then replaces the strategy's ``fit`` with the method.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "harness-{name}"
version = "0.1.0"
description = "{title} for crowd-harness"
requires-python = ">=3.10"
# torch / torchvision come from crowd-harness (no pins here: nothing may pull another torch)
dependencies = ["crowd-harness"]

[project.entry-points.harness]
{module_name} = "{module}.plugin"

[tool.setuptools.packages.find]
include = ["{module}*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

INIT = '''"""harness-{name}: {title} as a crowd-harness plugin (see README.md)."""
__version__ = "0.1.0"
'''

STRATEGY = '''"""The ``{name}`` strategy. Replace :meth:`{cls}.fit` with the method: it receives a :class:`harness.CellContext`
(the labelled source, the target's unlabelled train images, the cell's seed, device, precision, cache and log) and
returns a counter. Compose core pieces (``ctx.build``, :func:`harness.fit_density_counter`,
:func:`harness.fit_with_synthetic`, :func:`harness.train`, ``ctx.cached_fit``); import only from ``harness``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness import DensityTrainOptions, component, fit_density_counter


@dataclass
class {cls}Options:
    """Options of ``{name}`` (every value of the paper belongs here, with its section in the docstring).

    Attributes:
        counter: registry name of the counter trained on the source (e.g. ``rescsrnet``).
        counter_options: keyword options of the counter's factory.
        train: :class:`harness.DensityTrainOptions` of the source training.
    """

    counter: str = component("counter", default="rescsrnet")
    counter_options: dict = field(default_factory=dict)
    train: DensityTrainOptions = field(default_factory=lambda: DensityTrainOptions(epochs=1))


class {cls}:
    """{title} (options: :class:`{cls}Options`)."""

    def __init__(self, options: {cls}Options):
        self.opts = options

    def fit(self, ctx):
        o = self.opts
        ctx.log.info("{name}: training %s on %s", o.counter, ctx.source_name)
        return fit_density_counter(ctx, o.counter, o.counter_options, o.train)
'''

PLUGIN = '''"""harness-{name}'s hook implementations (entry point ``{module_name}`` of the ``harness`` group)."""
from __future__ import annotations

from harness import PAPER_TRAIN, SMOKE_TRAIN, TINY_TRAIN, MethodSpec, StrategySpec, hookimpl

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = {api}

#: ``smoke``: CPU minutes; ``paper``: the paper's values (fill in README.md's table and cite its sections)
SMOKE = {{"counter": "rescsrnet", "counter_options": {{"width": 0.125}}, "train": dict(SMOKE_TRAIN)}}
PAPER = {{"counter": "rescsrnet", "counter_options": {{"width": 1.0}}, "train": dict(PAPER_TRAIN)}}
TINY = {{"counter": "rescsrnet", "counter_options": {{"width": 0.125}}, "train": dict(TINY_TRAIN)}}


def _strategy(options):
    from .strategy import {cls}

    return {cls}(options)


@hookimpl
def harness_register_strategies(register):
    from .strategy import {cls}Options

    register(StrategySpec("{name}", _strategy, options={cls}Options, uses_target_images=False, tiny_options=TINY,
                          description="{title}"))


@hookimpl
def harness_register_methods(register):
    register(MethodSpec("{name}", "{name}", profiles={{"smoke": SMOKE, "paper": PAPER}}, description="{title}"))
'''

TESTS = '''"""harness-{name}: the method runs in a matrix, and its components pass the harness's contract checks (also:
``pytest --harness-plugin {module_name}``)."""
from __future__ import annotations

import pytest

from harness import testing
from harness.io import ArtifactCache
from harness.runner import execute, plan_run


def test_the_method_runs_in_a_matrix(tmp_path):
    from harness.plugins import build_registries
    from {module} import plugin
    from harness import MethodSpec, hookimpl

    class Tiny:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec("{name}-tiny", "{name}", {{"smoke": plugin.TINY}}))

    regs = build_registries(extra_plugins=[Tiny()])
    plan = plan_run("SYN-SPARSE→SYN-DENSE", "{name}-tiny,zero", "0", "smoke", regs, None, limit_test=2)
    summary = execute(plan, tmp_path / "run", "cpu", progress=False, cache=ArtifactCache(tmp_path / "cache"))
    assert not summary.failed and len(summary.finished) == 2


@pytest.mark.parametrize("kind", ["strategy", "method"])
def test_contracts(kind, tmp_path):
    entries = testing.plugin_entries(kind, ["{module_name}"])
    assert entries
    for entry in entries:
        if kind == "strategy":
            testing.check_strategy(entry, tmp_path / entry.spec.name)
        else:
            testing.check_method_profiles(entry)
'''

README = '''# harness-{name} — {title} as a crowd-harness method

```bash
pip install -e .                       # registers the `{module_name}` plugin (entry point group `harness`)
harness plugins                        # it is listed, with its strategy and method
harness config {name} --profile paper  # every option of the paper profile and where it comes from
harness run --matrix 'SHA→SHB,SHB→SHA' --methods {name},zero,source-mean --profile smoke
pytest                                 # this package's tests
pytest --harness-plugin {module_name}        # the harness's contract checks on every component it registers
```

## Paper ↔ `paper` profile

One row per component or hyper-parameter of the paper: its section or table, the profile's value and the test that
checks it; a deviation only where it cannot be avoided, with the reason.

| component | paper (section) | `paper` profile | status / test |
|---|---|---|---|
| counter | … | `counter` rescsrnet | … |
| training | … | `train` (epochs, lr, batch, …) | … |

Headline row to reproduce: … (the command above with `--profile paper --device cuda`).
'''


def write_plugin(name: str, out: str | Path = ".", title: str | None = None) -> Path:
    """Write the distribution ``<out>/harness-<name>/`` (see the module notes) and return its folder.

    Raises:
        ConfigError: a name that is not lower-case words joined by ``-``, or a folder that already exists."""
    from .hookspecs import API_VERSION

    if not NAME_RE.match(name):
        raise ConfigError(f"plugin name {name!r}: use lower-case letters and digits, words joined by '-' "
                          f"(e.g. my-method)")
    root = Path(out) / f"harness-{name}"
    if root.exists():
        raise ConfigError(f"{root} already exists: choose another name or --out folder")
    module = "harness_" + name.replace("-", "_")
    cls = "".join(w.capitalize() for w in name.split("-"))
    fields = {"name": name, "module": module, "module_name": name.replace("-", "_"), "cls": cls,
              "title": title or f"The {name} method", "api": API_VERSION}
    files = {"pyproject.toml": PYPROJECT, f"{module}/__init__.py": INIT, f"{module}/strategy.py": STRATEGY,
             f"{module}/plugin.py": PLUGIN, f"tests/test_{module}.py": TESTS, "README.md": README}
    for rel, template in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields), encoding="utf-8")
    return root


__all__ = ["write_plugin"]
