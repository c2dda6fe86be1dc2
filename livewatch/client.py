"""The command-line client: ask, status, cameras. Speaks the WebSocket protocol to a running daemon."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
import sys
from pathlib import Path
from typing import Any, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livewatch.server import protocol as p

_ids = itertools.count(1)


class ClientError(Exception):
    """A failure the user must act on; ``exit_code`` is what the command returns."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNAUTHORIZED = 4
EXIT_REQUEST_FAILED = 5


async def _open(url: str, token: str | None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return await connect(url, additional_headers=headers, open_timeout=10, max_size=2**24)
    except InvalidStatus as exc:
        if exc.response.status_code == 401:
            raise ClientError(
                f"{url}: unauthorized: the token is missing or wrong (use --token or LIVEWATCH_TOKEN)",
                EXIT_UNAUTHORIZED,
            ) from None
        raise ClientError(f"{url}: the server refused the connection: HTTP {exc.response.status_code}") from None
    except (OSError, TimeoutError) as exc:
        raise ClientError(
            f"cannot connect to {url}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}; "
            f"is the daemon running (livewatch serve)?",
            EXIT_UNREACHABLE,
        ) from None


def new_id() -> str:
    return f"cli-{os.getpid()}-{next(_ids)}"


def _reply(raw: str | bytes) -> dict[str, Any]:
    try:
        return p.parse_reply(raw)
    except p.ProtocolError as exc:
        raise ClientError(str(exc), EXIT_REQUEST_FAILED) from None


async def request(url: str, token: str | None, message: p.Request) -> dict[str, Any]:
    """Send one request and return its reply (status, camera.added, camera.removed or error)."""
    async with await _open(url, token) as ws:
        await ws.send(p.encode_request(message))
        async for raw in ws:
            reply = _reply(raw)
            if reply.get("id") == message.id:
                return reply
    raise ClientError("the daemon closed the connection without replying")


async def ask(
    url: str,
    token: str | None,
    question: str,
    camera: str | None,
    max_tokens: int | None,
    as_json: bool,
    out: TextIO = sys.stdout,
    evidence_dir: Path | None = None,
    since: str | None = None,
    until: str | None = None,
) -> int:
    rid = new_id()
    msg = p.Ask(id=rid, camera=camera or None, question=question, max_tokens=max_tokens or None, since=since,
                until=until)
    loop = asyncio.get_running_loop()
    answer: dict[str, Any] = {}
    async with await _open(url, token) as ws:
        interrupted = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        try:
            await ws.send(p.encode_request(msg))
            code = await _stream(ws, rid, interrupted, as_json, out, answer)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
    if code == 0 and evidence_dir is not None:
        await save_evidence(url, token, answer, evidence_dir)
    return code


async def save_evidence(url: str, token: str | None, answer: dict[str, Any], folder: Path) -> None:
    """The answer (answer.json) and its evidence frames (RANK-ID.jpg, most relied on first) into ``folder``."""
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "answer.json").write_text(json.dumps(answer, indent=2) + "\n", encoding="utf-8")
    base = "http" + url.removeprefix("ws").split("/", 3)[0] + "//" + url.split("/", 3)[2]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10, trust_env=False) as http:
        for rank, item in enumerate(answer.get("evidence", []), start=1):
            frame_id = item.get("frame_id")
            if not isinstance(frame_id, int):
                continue
            r = await http.get(f"/frames/{answer.get('camera')}/{frame_id}.jpg")
            if r.status_code == 200:
                (folder / f"{rank:02d}-{frame_id}.jpg").write_bytes(r.content)
            else:
                print(f"livewatch: frame {frame_id}: HTTP {r.status_code} (it may have left the camera's memory)",
                      file=sys.stderr)


async def _stream(ws: ClientConnection, rid: str, interrupted: asyncio.Event, as_json: bool, out: TextIO,
                  answer: dict[str, Any] | None = None) -> int:
    cancel_sent = False
    receive = asyncio.ensure_future(ws.recv())
    stop = asyncio.ensure_future(interrupted.wait())
    try:
        while True:
            done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
            if stop in done and not cancel_sent:
                cancel_sent = True
                await ws.send(p.encode_request(p.Cancel(id=rid)))
            if receive not in done:
                continue
            try:
                reply = _reply(receive.result())
            except ConnectionClosed:
                raise ClientError("the daemon closed the connection", EXIT_REQUEST_FAILED) from None
            receive = asyncio.ensure_future(ws.recv())
            if reply.get("id") != rid:
                continue
            kind = reply.get("type")
            if kind == "token":
                if not as_json:
                    out.write(reply["text"])
                    out.flush()
            elif kind == "answer":
                if answer is not None:
                    answer.update(reply)
                if as_json:
                    out.write(json.dumps(reply) + "\n")
                else:
                    out.write("\n")
                out.flush()
                return 0
            elif kind == "error":
                if not as_json:
                    out.write("\n")
                if reply.get("code") == "cancelled":
                    print("livewatch: cancelled", file=sys.stderr)
                    return 130
                if as_json:
                    out.write(json.dumps(reply) + "\n")
                raise ClientError(f"{reply.get('code')}: {reply.get('message')}", EXIT_REQUEST_FAILED)
    finally:
        receive.cancel()
        stop.cancel()


def format_status(reply: dict[str, Any]) -> str:
    lines = []
    engine = reply.get("engine", {})
    lines.append(
        f"engine: {'alive' if engine.get('alive') else 'DOWN'}  model={engine.get('model')}  "
        f"device={engine.get('device')}  mode={engine.get('encode_mode')}  queued={engine.get('queued_questions')}"
    )
    if engine.get("tiny_random_weights"):
        lines.append("        TINY RANDOM-WEIGHT MODEL: answers are noise")
    for name, cam in sorted(reply.get("cameras", {}).items()):
        mem = reply.get("memory", {}).get(name, {})
        lines.append(
            f"{name}: {cam.get('state')}  {cam.get('resolution') or '-'} {cam.get('codec') or ''}  "
            f"sampled={cam.get('frames_sampled')} dropped={cam.get('frames_dropped')} "
            f"reconnects={cam.get('reconnects')}  frames in memory={mem.get('unique_frames')} "
            f"(star {mem.get('star_memory_size')}, window {mem.get('stream_memory_size')})"
            + (f"  shard={cam['shard']}" if cam.get("shard") else "")
            + (f"  last error: {cam['last_error']}" if cam.get("last_error") else "")
        )
    for shard, figures in sorted(reply.get("cluster", {}).get("shards", {}).items()):
        lines.append(f"{shard}: {figures.get('state')}  device={figures.get('device')}  "
                     f"cameras={len(figures.get('cameras', []))}  encode load={figures.get('busy')}")
    return "\n".join(lines)


async def follow_events(url: str, token: str | None, watches: tuple[str, ...] | None, as_json: bool,
                        out: TextIO = sys.stdout) -> int:
    """Subscribe to watch events and print each until Ctrl-C (exit 0) or the daemon goes away (exit 1)."""
    from livewatch.server.watchproto import WatchSubscribe

    msg = WatchSubscribe(id=new_id(), watches=watches)
    async with await _open(url, token) as ws:
        await ws.send(p.encode_request(msg))
        try:
            async for raw in ws:
                event = _reply(raw)
                if event["type"] == "error":
                    raise ClientError(f"{event.get('code')}: {event.get('message')}", EXIT_REQUEST_FAILED)
                if event["type"] == "watch.subscribed":
                    following = ", ".join(event.get("watches") or []) or "all watches"
                    print(f"following events of {following}; Ctrl-C to stop", file=sys.stderr, flush=True)
                if event["type"] != "event":
                    continue
                if as_json:
                    print(json.dumps(event), file=out, flush=True)
                else:
                    print(format_event(event), file=out, flush=True)
        except ConnectionClosed:
            pass
    raise ClientError("the daemon closed the connection", EXIT_REQUEST_FAILED)


def format_event(event: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(float(event.get("frame_time") or 0)))
    text = (f"{when}  {event.get('camera')}/{event.get('watch')}  {event.get('kind')}  "
            f"p={event.get('probability')}  latency={event.get('latency_s')} s  frame {event.get('frame_url')}")
    if event.get("description"):
        text += f"\n    {event['description']}"
    return text


async def find(url: str, token: str | None, cameras: tuple[str, ...] | None, query: str, since: str | None,
               until: str | None, top: int, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Ask for the best moments; progress on stderr; Ctrl-C cancels the search on the daemon (exit 130)."""
    from livewatch.server.watchproto import Find

    rid = new_id()
    msg = Find(rid, query, cameras, since, until, top)
    loop = asyncio.get_running_loop()
    async with await _open(url, token) as ws:
        interrupted = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        try:
            await ws.send(p.encode_request(msg))
            while True:
                receive = asyncio.ensure_future(ws.recv())
                stop = asyncio.ensure_future(interrupted.wait())
                done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done and not receive.done():
                    receive.cancel()
                    await ws.send(p.encode_request(p.Cancel(id=rid)))
                    interrupted.clear()
                    continue
                stop.cancel()
                try:
                    reply = _reply(receive.result())
                except ConnectionClosed:
                    raise ClientError("the daemon closed the connection", EXIT_REQUEST_FAILED) from None
                if reply.get("id") != rid:
                    continue
                if reply["type"] == "find.progress":
                    print(f"\rscored {reply.get('done')} of {reply.get('total')} chunks", end="", file=sys.stderr,
                          flush=True)
                elif reply["type"] == "find.result":
                    print(file=sys.stderr)
                    if as_json:
                        print(json.dumps(reply), file=out)
                    for m in [] if as_json else reply.get("moments", []):
                        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(m["since"])))
                        print(f"{start}  {m['camera']}  {float(m['until']) - float(m['since']):.0f} s  "
                              f"p={m['probability']}  {m['frame_url']}", file=out)
                    return 0
                elif reply["type"] == "error":
                    print(file=sys.stderr)
                    if reply.get("code") == "cancelled":
                        return 130
                    raise ClientError(f"{reply.get('code')}: {reply.get('message')}", EXIT_REQUEST_FAILED)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
