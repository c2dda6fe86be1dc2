#!/usr/bin/env bash
# The daemon at full size on a GPU, end to end: a random-weight Qwen2.5-VL-3B checkpoint (no download), CAMERAS
# built-in test-pattern cameras (1 fps each) in eager mode, one question and then CLIENTS questions at once
# through `livewatch ask` over the WebSocket API, first-token times over both protocols (tools/protocol_ttft.py),
# the status (decode path, fused kernels, every camera's encode
# lag), and a SIGTERM stop. It fails if a camera's prefix is more than 2 s behind its frames at the end.
#
#   tools/gpu_smoke.sh [OUT_DIR]     (env: PYTHON=python3, CLIENTS=8, CAMERAS=16, PORT=8799, MODEL_DIR=reuse a
#                                     checkpoint)
#
# Writes daemon.log, status.json and every answer as JSON into OUT_DIR (default .gpu-smoke/) and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-.gpu-smoke}
CLIENTS=${CLIENTS:-8}
CAMERAS=${CAMERAS:-16}
PORT=${PORT:-8799}
URL=ws://127.0.0.1:$PORT
WORK=$(mktemp -d)
MODEL=${MODEL_DIR:-$WORK/model}
mkdir -p "$OUT"

[ -f "$MODEL/config.json" ] || "$PY" tools/make_tiny_model.py "$MODEL" --arch qwen2.5-vl-3b --device cuda
{
    printf '[model]\nencode_mode = "%s"\n' "${ENCODE_MODE:-eager}"
    for i in $(seq "$CAMERAS"); do
        printf '[cameras.cam%s]\nurl = "testsrc://?size=1280x720&rate=5"\n' "$i"
    done
} >"$WORK/config.toml"
"$PY" -m livewatch serve --config "$WORK/config.toml" --model "$MODEL" --port "$PORT" --state-dir "$WORK/state" \
    >"$OUT/daemon.log" 2>&1 &
DAEMON=$!
trap 'kill "$DAEMON" 2>/dev/null || true; rm -rf "$WORK"' EXIT

for _ in $(seq 300); do
    "$PY" -m livewatch status --url "$URL" --json >"$OUT/status.json" 2>/dev/null && break
    kill -0 "$DAEMON" 2>/dev/null || { tail -20 "$OUT/daemon.log"; exit 1; }
    sleep 1
done
sleep 20 # a few frame pairs of every camera reach the memory and the engine

ask() { "$PY" -m livewatch ask --url "$URL" --json --max-tokens 128 --camera cam1 "$@"; }
ask "What is on the screen?" >"$OUT/answer-first.json"
ask "And what changed since?" >"$OUT/answer-followup.json"
clients=()
for i in $(seq "$CLIENTS"); do
    ask "Question $i: describe the pattern." >"$OUT/answer-concurrent-$i.json" &
    clients+=($!)
done
failed=0
for pid in "${clients[@]}"; do wait "$pid" || failed=$((failed + 1)); done
# time to first token over the WebSocket protocol and the OpenAI-compatible API, interleaved, same follow-up
"$PY" tools/protocol_ttft.py --port "$PORT" --camera cam1 --n "${TTFT_ROUNDS:-20}" >"$OUT/protocol-ttft.json"
"$PY" -m livewatch status --url "$URL" --json >"$OUT/status.json"
kill -TERM "$DAEMON"
rc=0
wait "$DAEMON" || rc=$?
trap 'rm -rf "$WORK"' EXIT

"$PY" - "$OUT" "$CLIENTS" "$failed" "$rc" <<'EOF'
import json, pathlib, sys

out, clients, failed, rc = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
status = json.loads((out / "status.json").read_text())
engine = status["engine"]
dec = engine["decoder"]
print(f"model {engine['model']} on {engine['device']} {engine['dtype']}; decoder {dec['mode']}, kernels "
      f"{dec.get('kernels')} {dec.get('kernels_off', '')}; capture {dec['capture_s']} s; mean batch {dec['mean_batch']}")
for name in ("first", "followup"):
    m = json.loads((out / f"answer-{name}.json").read_text())["metrics"]
    print(f"{name}: ttft {m['ttft_ms']} ms, encode {m['encode_ms']} ms, {m['output_tokens']} tokens at "
          f"{m['decode_tokens_per_s']} tok/s, {m['frames_in_context']} frames, cache_reused {m['cache_reused']}")
ms = [json.loads(p.read_text())["metrics"] for p in sorted(out.glob("answer-concurrent-*.json"))]
if ms:
    print(f"{len(ms)} at once: slowest ttft {max(m['ttft_ms'] for m in ms)} ms, slowest total "
          f"{max(m['total_ms'] for m in ms)} ms, {sum(m['output_tokens'] for m in ms)} tokens")
cams = engine["cameras"]
lags = sorted(c["encode_lag_s"] for c in cams.values())
behind = [name for name, c in cams.items() if c["encode_lag_s"] > 2.0]
print(f"{len(cams)} cameras in {engine['encode_mode']} mode: {sum(c['cache_valid'] for c in cams.values())} prefixes holding their newest "
      f"frames at the last status, encode lag max {lags[-1] if lags else None} s, {sum(c['encode_count'] for c in cams.values())} "
      f"encodes; vision {engine.get('encoder', {}).get('vision', {}).get('mode')}; behind by > 2 s: {behind or 'none'}")
ttft = json.loads((out / "protocol-ttft.json").read_text())
print(f"client-side first token over {ttft['rounds']} rounds: {ttft['client_ttft']}; daemon's own: {ttft['daemon_ttft']}; "
      f"OpenAI API minus WebSocket (medians): {ttft['openai_minus_websocket_median_ms']} ms")
print(f"clients failed: {failed} of {clients}; daemon exit code after SIGTERM: {rc}")
sys.exit(1 if failed or rc or behind or dec.get("kernels") != "triton" else 0)
EOF
