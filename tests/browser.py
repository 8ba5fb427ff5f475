"""Debian's Chromium for the browser tests (driven by playwright with ``executable_path``; never ``playwright
install``), the flags it needs on a machine without a network, and where screenshots are kept as test artefacts."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("HARNESS_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p), None)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "no Chromium: install Debian's chromium (`apt-get install chromium`)"
