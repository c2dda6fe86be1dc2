"""The OpenAI-compatible API on a real daemon (tiny checkpoint), with the official `openai` package as the client.

The camera is a short H.264 file played once, so its memory (and the encoded prefix) stops changing: the same
question with the same sampling then has one answer, and the WebSocket and the OpenAI API must both give it.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from websockets.sync.client import connect as sync_connect

from daemon_helpers import DaemonProcess
from media import wait_until, write_h264

TOKEN = "tok-openai-3-0123456789abcdef"
QUESTION = "What moves in the picture?"
SAMPLING = {"temperature": 0.8, "top_p": 0.9, "seed": 11, "max_tokens": 12}


def ws_request(d: DaemonProcess, request: dict) -> dict:
    with sync_connect(d.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(json.dumps(request))
        while True:
            reply = json.loads(ws.recv(timeout=60))
            if reply["type"] not in ("token",):
                return reply


def post(d: DaemonProcess, body: bytes, token: str = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{d.port}/v1/chat/completions", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture()
def daemon(tmp_path: Path, tiny_model_dir: Path):
    clip = write_h264(tmp_path / "yard.mp4", seconds=3.0, fps=10, size=(240, 320))
    config = f'[cameras.yard]\nurl = "{clip}"\n[capture]\nfps = 2.0\n[server]\nmax_inflight_total = 1\n'
    d = DaemonProcess(tmp_path, tiny_model_dir, config, env={"LIVEWATCH_TOKEN": TOKEN})
    d.start(wait=False)
    try:
        def settled() -> bool:  # the clip was played to its end: the camera's memory no longer changes
            try:
                status = ws_request(d, {"type": "status", "id": "s"})
            except OSError:
                return False
            return (status["memory"]["yard"]["unique_frames"] >= 2
                    and status["cameras"]["yard"]["state"] not in ("connecting", "streaming"))

        wait_until(settled, 90, interval=0.5)
        yield d
    finally:
        d.stop()


def test_openai_clients_ask_cameras_like_websocket_clients(daemon: DaemonProcess) -> None:
    d = daemon
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["yard"]
    assert client.models.retrieve("yard").id == "yard"

    ws = ws_request(d, {"type": "ask", "id": 1, "camera": "yard", "question": QUESTION, **SAMPLING})
    assert ws["type"] == "answer" and ws["text"]
    messages = [{"role": "user", "content": QUESTION}]
    extra = {k: v for k, v in SAMPLING.items() if k != "max_tokens"}

    done = client.chat.completions.create(model="yard", messages=messages, max_tokens=12, **extra)
    assert done.choices[0].message.content == ws["text"] and done.model == "yard"
    assert done.usage.completion_tokens == ws["metrics"]["output_tokens"]
    assert done.usage.prompt_tokens == ws["metrics"]["context_tokens"]
    assert done.choices[0].finish_reason == ("length" if ws["metrics"]["finish_reason"] == "length" else "stop")
    figures = done.model_extra["livewatch"]
    assert figures["metrics"]["frames_in_context"] == ws["metrics"]["frames_in_context"] >= 2
    assert figures["metrics"]["cache_reused"] is True and figures["evidence"]

    # streamed, through the alias of the only camera, with max_completion_tokens and a usage chunk
    chunks = list(client.chat.completions.create(model="livewatch", messages=messages, max_completion_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}, **extra))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ws["text"]
    assert chunks[-1].usage.completion_tokens == ws["metrics"]["output_tokens"] and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")

    # a stop string ends the answer before it, streamed or not, and is never streamed in part
    if len(ws["text"]) >= 6:
        stop = ws["text"][3:6]
        cut = ws["text"][: ws["text"].find(stop)]
        stopped = client.chat.completions.create(model="yard", messages=messages, max_tokens=12, stop=[stop],
                                                 **extra)
        assert stopped.choices[0].message.content == cut and stopped.choices[0].finish_reason == "stop"
        streamed = client.chat.completions.create(model="yard", messages=messages, max_tokens=12, stop=stop,
                                                  stream=True, **extra)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut

    # earlier turns are kept as conversation text: a different question, so a different prompt
    longer = client.chat.completions.create(model="yard", max_tokens=4, messages=[
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": QUESTION}])
    assert longer.usage.prompt_tokens > done.usage.prompt_tokens

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="garage", messages=messages)
    assert missing.value.status_code == 404 and missing.value.body["code"] == "unknown_camera"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(model="yard", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert "text parts only" in image.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="yard", messages=messages, max_tokens=10**6)
    status, body = post(d, json.dumps({"model": "yard", "messages": messages, "pad": "x" * 200_000}).encode())
    assert status == 413 and body["error"]["code"] == "too_large"
    assert post(d, b"{not json")[0] == 400
    assert post(d, b"{}", token="nope")[0] == 401
    assert d.health()[0] in (200, 503)  # still serving (503: the clip's camera has ended)


def test_a_client_that_goes_away_cancels_its_answer_and_busy_is_429(daemon: DaemonProcess) -> None:
    d = daemon
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    long = {"model": "yard", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 1024,
            "temperature": 1.0, "seed": 3}
    stream = client.chat.completions.create(stream=True, **long)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError):  # server.max_inflight_total = 1, and one is streaming
        client.chat.completions.create(**long)
    stream.close()  # the client goes away mid-answer
    wait_until(lambda: ws_request(d, {"type": "status", "id": "s"})["server"]["questions_in_flight"] == 0, 30,
               interval=0.2)
    wait_until(lambda: any(e.get("event") == "http.completion_cancelled" for e in d.logs()), 10)

    # a stop of the daemon mid-stream: the stream ends with an error event, the daemon exits cleanly
    stream = client.chat.completions.create(stream=True, **long)
    next(iter(stream))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(openai.APIError) as cut:
        for _ in stream:
            pass
    assert "shutting down" in str(cut.value) and time.monotonic() - started < 20
    assert d.proc.wait(timeout=30) == 0
    assert "Traceback" not in d.log.read_text()
