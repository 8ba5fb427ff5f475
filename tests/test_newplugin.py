"""The third-party plugin kit: ``harness new-plugin NAME`` writes a distribution that installs, whose own tests
pass, that ``pytest --harness-plugin`` checks from any folder, and whose method appears in ``harness plugins``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.errors import ConfigError
from harness.newplugin import write_plugin

PY = sys.executable


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600)


def test_new_plugin_installs_passes_its_tests_and_the_contract_checks(tmp_path):
    res = CliRunner().invoke(main, ["new-plugin", "kit-demo", "--out", str(tmp_path), "--title", "A kit demo"])
    assert res.exit_code == 0, res.output
    root = tmp_path / "harness-kit-demo"
    assert (root / "harness_kit_demo" / "plugin.py").is_file() and "| component | paper" in (root / "README.md").read_text()
    install = run(PY, "-m", "pip", "install", "--isolated", "-q", "--no-deps", "--no-build-isolation", "-e",
                  str(root))
    assert install.returncode == 0, install.stderr[-2000:]
    try:
        own = run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=root)
        assert own.returncode == 0, own.stdout[-3000:]
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        contracts = run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--harness-plugin", "kit_demo",
                        cwd=elsewhere)
        assert contracts.returncode == 0 and " passed" in contracts.stdout, contracts.stdout[-3000:]
        listed = run(str(Path(PY).parent / "harness"), "plugins", "--json")
        assert '"kit-demo"' in listed.stdout and '"kit_demo"' in listed.stdout
    finally:
        run(PY, "-m", "pip", "uninstall", "-y", "-q", "harness-kit-demo")


def test_new_plugin_refuses_bad_names_and_existing_folders(tmp_path):
    with pytest.raises(ConfigError, match="lower-case"):
        write_plugin("My_Method", tmp_path)
    write_plugin("ok", tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        write_plugin("ok", tmp_path)
