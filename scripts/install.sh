#!/usr/bin/env bash
# Create .venv and install crowd-harness with its test extras and the method plugins under plugins/.
# torch/torchvision come from the package registry's standard build (CUDA build; it runs on CPU too).
# --isolated ignores machine-wide pip configuration that may prefer a local CPU-only torch wheel with which
# the registry's torchvision cannot load its compiled operators.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# a download that fails (a connection drop, a truncated wheel failing its registry hash) is retried twice, without pip's
# cache so a bad cached file is not reused
pip_install() {
  local i
  for i in 1 2 3; do
    if [ "$i" = 1 ]; then .venv/bin/python -m pip install --isolated --disable-pip-version-check -q "$@" && return 0
    else .venv/bin/python -m pip install --isolated --disable-pip-version-check --no-cache-dir -q "$@" && return 0; fi
    [ "$i" = 3 ] || { echo "pip install failed (attempt $i of 3); retrying" >&2; sleep 10; }
  done
  return 1
}
pip_install torch==2.13.0 torchvision==0.28.0
plugin_args=()
for p in plugins/*/pyproject.toml; do [ -e "$p" ] && plugin_args+=(-e "$(dirname "$p")"); done
pip_install -e ".[test,diffusion]" "${plugin_args[@]}"
echo "installed: $(.venv/bin/harness --version 2>/dev/null || echo crowd-harness)"
