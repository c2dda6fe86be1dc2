"""OpenAI's chat-completions API over livewatch's questions: pure parsing and formatting, no I/O.

A request names a camera as its ``model``; its last user message is the question, and the turns before it are
kept, as conversation text, after the video (the oldest dropped first when the question would be over
``server.max_question_chars``). The request becomes the same ``Ask`` a WebSocket client sends, validated by the
same rules (``protocol.parse_request``), so both protocols answer a question identically. Errors are OpenAI's
error object with its HTTP status (``OpenAIError``); livewatch's own error codes travel in its ``code``.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from livewatch.errors import ErrorCode
from livewatch.server import protocol as p

MODEL_ALIAS = "livewatch"  # names the only camera when there is exactly one
REFUSED_PARTS = "livewatch answers from its cameras' video: send text parts only (no images, audio or files)"

# livewatch's error codes as HTTP statuses and OpenAI error types
_STATUS: dict[ErrorCode, tuple[int, str]] = {
    ErrorCode.UNAUTHORIZED: (401, "authentication_error"),
    ErrorCode.UNKNOWN_CAMERA: (404, "not_found_error"),
    ErrorCode.TOO_LARGE: (413, "invalid_request_error"),
    ErrorCode.BUSY: (429, "rate_limit_error"),
    ErrorCode.NO_FRAMES: (503, "service_unavailable"),
    ErrorCode.SHUTTING_DOWN: (503, "service_unavailable"),
    ErrorCode.UNAVAILABLE: (503, "service_unavailable"),
    ErrorCode.CANCELLED: (499, "cancelled"),
    ErrorCode.MODEL_ERROR: (500, "server_error"),
    ErrorCode.INTERNAL: (500, "server_error"),
}


class OpenAIError(Exception):
    """A request that fails with OpenAI's error object and an HTTP status."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.status, self.type = _STATUS.get(code, (400, "invalid_request_error"))

    def body(self) -> dict[str, Any]:
        return error_body(self.code, str(self), self.param)


def error_body(code: ErrorCode, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _STATUS.get(code, (400, "invalid_request_error"))[1]
    return {"error": {"message": message, "type": kind, "param": param, "code": code.value}}


@dataclass(frozen=True)
class ChatRequest:
    ask: p.Ask  # camera resolved, question with the conversation, sampling
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with usage


def parse_chat(body: bytes, limits: p.Limits, cameras: list[str], request_id: str) -> ChatRequest:
    """A ``POST /v1/chat/completions`` body to a ``ChatRequest``; raises OpenAIError."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, nesting too deep
        raise OpenAIError(ErrorCode.BAD_REQUEST, "the body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise OpenAIError(ErrorCode.BAD_REQUEST, "the body must be a JSON object")
    camera = _camera(obj.get("model"), cameras)
    if obj.get("n", 1) != 1:
        raise OpenAIError(ErrorCode.BAD_REQUEST, "only n=1 is supported", "n")
    if obj.get("logprobs"):
        raise OpenAIError(ErrorCode.BAD_REQUEST, "logprobs are not supported", "logprobs")
    stream = obj.get("stream", False)
    options = obj.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise OpenAIError(ErrorCode.BAD_REQUEST, "stream must be a boolean and stream_options an object", "stream")
    max_tokens = obj.get("max_completion_tokens", obj.get("max_tokens"))
    seed = obj.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        seed %= 2**32  # OpenAI's seeds are any integer; livewatch's generator takes 32 bits
    ask = {
        "type": "ask", "id": request_id, "camera": camera,
        "question": conversation(obj.get("messages"), limits.max_question_chars),
        "max_tokens": max_tokens, "temperature": obj.get("temperature"), "top_p": obj.get("top_p"),
        "seed": seed, "stop": obj.get("stop"), "since": obj.get("since"), "until": obj.get("until"),
    }
    try:
        parsed = p.parse_request(json.dumps({k: v for k, v in ask.items() if v is not None}), limits)
    except p.ProtocolError as exc:
        raise OpenAIError(exc.code, str(exc).replace("field 'max_tokens'", "max_tokens")) from None
    assert isinstance(parsed, p.Ask)
    return ChatRequest(parsed, stream, bool(options.get("include_usage", False)))


def _camera(model: Any, cameras: list[str]) -> str:
    if not isinstance(model, str) or not model:
        raise OpenAIError(ErrorCode.BAD_REQUEST, "model must name a camera (GET /v1/models lists them)", "model")
    if model == MODEL_ALIAS and MODEL_ALIAS not in cameras:
        if len(cameras) != 1:
            raise OpenAIError(ErrorCode.BAD_REQUEST,
                              f"'{MODEL_ALIAS}' names the only camera, and there are {len(cameras)}: "
                              f"name one of {cameras}", "model")
        return cameras[0]
    if model not in cameras:
        raise OpenAIError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {model[:64]!r}; cameras are {cameras}", "model")
    return model


_LABELS = {"system": "Instructions", "developer": "Instructions", "user": "User", "assistant": "Assistant"}


def conversation(messages: Any, max_chars: int) -> str:
    """The question: the last user message, after the earlier turns that fit in ``max_chars`` (newest kept)."""
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(ErrorCode.BAD_REQUEST, "messages must be a non-empty list", "messages")
    turns = [_turn(m, i) for i, m in enumerate(messages)]
    role, question = turns[-1]
    if role != "user" or not question.strip():
        raise OpenAIError(ErrorCode.BAD_REQUEST, "the last message must be a user message with text", "messages")
    if len(question) > max_chars:
        raise OpenAIError(ErrorCode.TOO_LARGE, f"the last user message is over {max_chars} characters", "messages")
    earlier: list[str] = []
    room = max_chars - len(question) - len("Earlier in this conversation:\n\n")
    for role, text in reversed(turns[:-1]):
        line = f"{_LABELS[role]}: {text}\n"
        if len(line) > room:
            break
        earlier.insert(0, line)
        room -= len(line)
    return f"Earlier in this conversation:\n{''.join(earlier)}\n{question}" if earlier else question


def _turn(message: Any, index: int) -> tuple[str, str]:
    param = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in _LABELS:
        raise OpenAIError(ErrorCode.BAD_REQUEST,
                          f"{param} must be an object whose role is one of {sorted(_LABELS)}", param)
    content = message.get("content")
    if content is None and message["role"] == "assistant":
        return "assistant", ""
    if isinstance(content, str):
        return message["role"], content
    if not isinstance(content, list):
        raise OpenAIError(ErrorCode.BAD_REQUEST, f"{param}.content must be a string or a list of parts", param)
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("text", "input_text"):
            raise OpenAIError(ErrorCode.BAD_REQUEST, REFUSED_PARTS, f"{param}.content")
        text = part.get("text")
        if not isinstance(text, str):
            raise OpenAIError(ErrorCode.BAD_REQUEST, f"{param}.content: a text part needs its text", param)
        texts.append(text)
    return message["role"], "\n".join(texts)


# -- replies ------------------------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"


def usage(metrics: dict[str, Any]) -> dict[str, int]:
    prompt, completion = int(metrics.get("context_tokens", 0)), int(metrics.get("output_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def extras(answered: p.Answered) -> dict[str, Any]:
    """livewatch's own figures for an answer (OpenAI clients ignore unknown fields)."""
    return {"metrics": answered.metrics, "evidence": answered.evidence}


def completion(cid: str, created: int, camera: str, answered: p.Answered) -> dict[str, Any]:
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": camera,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answered.text},
                     "finish_reason": finish_reason(answered), "logprobs": None}],
        "usage": usage(answered.metrics),
        "livewatch": extras(answered),
    }


def finish_reason(answered: p.Answered) -> str:
    return "length" if answered.metrics.get("finish_reason") == "length" else "stop"


def chunk(cid: str, created: int, camera: str, delta: dict[str, Any], finish: str | None = None,
          **extra: Any) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": camera,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}


def usage_chunk(cid: str, created: int, camera: str, answered: p.Answered) -> dict[str, Any]:
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": camera, "choices": [],
            "usage": usage(answered.metrics)}


def sse(obj: dict[str, Any] | str) -> bytes:
    """One server-sent event; ``[DONE]`` ends a stream."""
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def models(cameras: list[str], created: int | None = None) -> dict[str, Any]:
    created = int(time.time()) if created is None else created
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "livewatch"} for name in cameras]}
