#!/usr/bin/env bash
# Set up and run livewatch on a fresh machine.
#
#   tools/dev.sh setup   create .venv and install livewatch with its test tools (idempotent)
#   tools/dev.sh test    setup, then run the whole test suite (what CI runs)
#   tools/dev.sh run     setup, then run the livewatch command with the given arguments
#
# Python >= 3.11 must be on PATH as python3 (or set PYTHON). Packages come from PyPI; PyTorch is installed first,
# pinned, so pip does not pick a newer CUDA build.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${LIVEWATCH_VENV:-.venv}
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.livewatch-installed"
    local want
    want=$(cat pyproject.toml tools/dev.sh | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "${TORCH_PINS[@]}"
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    echo "$want" >"$stamp"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup)
        setup
        ;;
    test)
        setup
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    run)
        setup
        exec "$VENV/bin/livewatch" "$@"
        ;;
    *)
        echo "usage: tools/dev.sh setup|test|run [args...]" >&2
        exit 2
        ;;
esac
