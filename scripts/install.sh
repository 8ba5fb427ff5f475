#!/usr/bin/env bash
# Create .venv and install crowd-harness with its test extras and the method plugins under plugins/.
# torch/torchvision come from the package registry's standard build (CUDA build; it runs on CPU too).
# --isolated ignores machine-wide pip configuration that may prefer a local CPU-only torch wheel with which
# the registry's torchvision cannot load its compiled operators.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_install() { .venv/bin/python -m pip install --isolated --disable-pip-version-check -q "$@"; }
pip_install torch==2.13.0 torchvision==0.28.0
plugin_args=()
for p in plugins/*/pyproject.toml; do [ -e "$p" ] && plugin_args+=(-e "$(dirname "$p")"); done
pip_install -e ".[test,diffusion]" "${plugin_args[@]}"
echo "installed: $(.venv/bin/harness --version 2>/dev/null || echo crowd-harness)"
