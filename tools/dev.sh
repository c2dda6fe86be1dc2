#!/usr/bin/env bash
# Set up and run livewatch on a fresh machine.
#
#   tools/dev.sh setup   create .venv and install livewatch with its test tools (idempotent)
#   tools/dev.sh test    setup, then run the whole test suite (what CI runs): quick tests, then the slow ones;
#                        with arguments, pytest with those (tools/dev.sh test -m "not slow": the quick run)
#   tools/dev.sh serve   setup, then start the daemon on its embedded default: the test-pattern camera "demo"
#                        (extra arguments go to `livewatch serve`, e.g. --model DIR)
#   tools/dev.sh tiny    setup, then write the tiny random-weight checkpoint to .cache/tiny-model, print its path
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

# Debian packages the tests need: GStreamer's RTSP server (driven by the system python3) for the capture tests,
# systemd-analyze to verify the service unit, the Mosquitto broker for the MQTT sink tests (tests/mqtt_broker.py
# runs its own on a free loopback port; openssl makes its TLS test certificate), and Chromium for the web page's
# tests (Playwright drives Debian's browser through executable_path: its own browser download cannot work here).
TEST_DEBS=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
           gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools systemd mosquitto openssl chromium)

test_system_packages() {
    if [ -x /usr/bin/python3 ] && command -v gst-launch-1.0 >/dev/null &&
        /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null &&
        gst-inspect-1.0 x264enc >/dev/null 2>&1 && command -v systemd-analyze >/dev/null &&
        { [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null; } && command -v openssl >/dev/null &&
        command -v chromium >/dev/null; then
        return 0
    fi
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${TEST_DEBS[@]}" >/dev/null
        gst-inspect-1.0 x264enc >/dev/null  # fail here, clearly, if the install did not bring the encoder
        [ -x /usr/sbin/mosquitto ]  # and if it did not bring the broker
        command -v chromium >/dev/null  # or the browser
    else
        echo "tools/dev.sh: the RTSP and MQTT tests need these Debian packages (run as root to install them):" >&2
        echo "  apt-get install ${TEST_DEBS[*]}" >&2
        return 1
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    setup)
        setup
        ;;
    test)
        test_system_packages
        setup
        if [ $# -gt 0 ]; then  # your own selection, e.g. -m "not slow" (the quick run) or one file
            exec "$VENV/bin/python" -m pytest "$@"
        fi
        # the whole suite, as CI runs it: the quick tests first (a failure shows early), then the slow ones
        "$VENV/bin/python" -m pytest -m "not slow"
        exec "$VENV/bin/python" -m pytest -m slow
        ;;
    serve)
        setup
        exec "$VENV/bin/livewatch" serve --config config.toml "$@"
        ;;
    tiny)
        setup >&2
        [ -f .cache/tiny-model/config.json ] || "$VENV/bin/python" tools/make_tiny_model.py .cache/tiny-model >&2
        echo "$PWD/.cache/tiny-model"
        ;;
    run)
        setup
        exec "$VENV/bin/livewatch" "$@"
        ;;
    *)
        echo "usage: tools/dev.sh setup|test|serve|tiny|run [args...]" >&2
        exit 2
        ;;
esac
