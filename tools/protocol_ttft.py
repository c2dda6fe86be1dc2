#!/usr/bin/env python3
"""Time to first token as a client sees it, over both protocols of one running daemon, interleaved.

    python tools/protocol_ttft.py --port 8765 --camera cam1 [--n 20] [--token T]

Each round asks the same follow-up question once over the WebSocket protocol and once over the OpenAI-compatible
API (streamed, POST /v1/chat/completions), in alternating order, and times from the request's first byte sent to
its first token received (its whole answer when no text was streamed: a random-weight checkpoint with the tiny
test tokenizer picks ids outside its vocabulary, which decode to nothing; ``rounds_without_text`` counts those);
the daemon's own ``ttft_ms`` comes from the answers' metrics. Prints one JSON object with the medians and p95s
per protocol and the difference of the medians. Only the standard library and
``websockets`` (the daemon's dependency) are needed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time

from websockets.sync.client import connect

SILENT: list[int] = []  # rounds whose answer streamed no text (timed to the answer's end)


def ws_round(url: str, headers: dict[str, str], camera: str, question: str, i: int,
             max_tokens: int = 8) -> tuple[float, float]:
    with connect(url, additional_headers=headers) as ws:
        start = time.perf_counter()
        ws.send(json.dumps({"type": "ask", "id": i, "camera": camera, "question": question,
                            "max_tokens": max_tokens}))
        first = None
        while True:
            reply = json.loads(ws.recv(timeout=60))
            if reply["type"] == "token" and first is None:
                first = time.perf_counter()
            if reply["type"] == "answer":
                if first is None:
                    SILENT.append(1)
                return ((first or time.perf_counter()) - start) * 1e3, reply["metrics"]["ttft_ms"]
            if reply["type"] == "error":
                raise RuntimeError(reply["message"])


def http_round(host: str, port: int, headers: dict[str, str], camera: str, question: str,
               max_tokens: int = 8) -> tuple[float, float]:
    body = json.dumps({"model": camera, "stream": True, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": question}]})
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.connect()
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {**headers, "Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    first, server = None, float("nan")
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
            first = time.perf_counter()
        if "livewatch" in chunk:
            server = chunk["livewatch"]["metrics"]["ttft_ms"]
    conn.close()
    if first is None:
        SILENT.append(1)
    return ((first or time.perf_counter()) - start) * 1e3, server


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--camera", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--question", default="What is on the screen right now?")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens per answer (the first is timed)")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = f"ws://{args.host}:{args.port}/"
    client = {"websocket": [], "openai": []}
    server = {"websocket": [], "openai": []}
    ws_round(url, headers, args.camera, args.question, 0)  # warm: the prefix is encoded, the path is hot
    for i in range(args.n):
        for proto in (("websocket", "openai") if i % 2 == 0 else ("openai", "websocket")):
            if proto == "websocket":
                seen, own = ws_round(url, headers, args.camera, args.question, i + 1, args.max_tokens)
            else:
                seen, own = http_round(args.host, args.port, headers, args.camera, args.question, args.max_tokens)
            client[proto].append(seen)
            server[proto].append(own)
    result = {
        "rounds": args.n,
        "max_tokens": args.max_tokens,
        "client_ttft": {p: summary(v) for p, v in client.items()},
        "daemon_ttft": {p: summary(v) for p, v in server.items()},
        "rounds_without_text": len(SILENT),
    }
    result["openai_minus_websocket_median_ms"] = round(
        result["client_ttft"]["openai"]["median_ms"] - result["client_ttft"]["websocket"]["median_ms"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
