"""The contract tests that ``pytest --harness-plugin NAME`` runs on an installed plugin (:mod:`harness.testing`):
each buildable component built with its tiny options, each strategy fitted on the synthetic pair through the runner,
each method's profiles parsed, each tiny model builder run, and the plugin loaded without error."""
from __future__ import annotations

import pytest

from harness import testing

KINDS = {"counter_entry": "counter", "generator_entry": "generator", "annotator_entry": "annotator",
         "segmenter_entry": "segmenter", "strategy_entry": "strategy", "method_entry": "method",
         "tiny_model_entry": "tiny_model"}


def pytest_generate_tests(metafunc):
    plugins = metafunc.config.getoption("harness_plugin", default=None) or None
    for arg, kind in KINDS.items():
        if arg in metafunc.fixturenames:
            found = testing.plugin_entries(kind, plugins)
            metafunc.parametrize(arg, found or [pytest.param(None, marks=pytest.mark.skip(
                reason=f"the plugin registers no {kind}"))], ids=[e.spec.name for e in found] or None)


def test_plugin_loads_and_registers_something(request):
    plugins = request.config.getoption("harness_plugin", default=None)
    found = [e for kind in KINDS.values() for e in testing.plugin_entries(kind, plugins)]
    assert found, f"plugins {plugins} register no component"


def test_counter(counter_entry, tmp_path):
    testing.check_counter(counter_entry, testing.contract_context(tmp_path))


def test_generator(generator_entry, tmp_path):
    testing.check_generator(generator_entry, testing.contract_context(tmp_path))


def test_annotator(annotator_entry, tmp_path):
    testing.check_annotator(annotator_entry, testing.contract_context(tmp_path))


def test_segmenter(segmenter_entry, tmp_path):
    testing.check_segmenter(segmenter_entry, testing.contract_context(tmp_path))


def test_strategy_fits_with_tiny_options(strategy_entry, tmp_path):
    testing.check_strategy(strategy_entry, tmp_path)


def test_method_profiles_parse(method_entry):
    testing.check_method_profiles(method_entry)


def test_tiny_model_builder(tiny_model_entry, tmp_path):
    testing.check_tiny_model(tiny_model_entry, tmp_path)
