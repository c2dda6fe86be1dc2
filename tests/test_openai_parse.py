"""The OpenAI request mapping (pure): cameras as models, the conversation as the question, sampling, refusals;
and stop strings in the answer stream (the engine's side of ``stop``)."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from livewatch.engine.answer import StopFilter
from livewatch.errors import ErrorCode
from livewatch.server import openai_api as oa
from livewatch.server.protocol import Answered, Limits

LIMITS = Limits(max_question_chars=200, max_tokens=64)


def parse(cameras: list[str] = ["door"], **body) -> oa.ChatRequest:  # noqa: B006
    body.setdefault("model", "door")
    body.setdefault("messages", [{"role": "user", "content": "Is the door open?"}])
    return oa.parse_chat(json.dumps(body).encode(), LIMITS, cameras, "chatcmpl-1")


def refused(code: ErrorCode, cameras: list[str] = ["door"], **body) -> oa.OpenAIError:  # noqa: B006
    with pytest.raises(oa.OpenAIError) as err:
        parse(cameras, **body)
    assert err.value.code is code, err.value
    return err.value


def test_a_request_becomes_the_ask_a_websocket_client_would_send() -> None:
    chat = parse(max_completion_tokens=9, temperature=0.5, top_p=0.8, seed=-1, stop="\n\n", stream=True,
                 stream_options={"include_usage": True}, user="ignored", presence_penalty=0)
    ask = chat.ask
    assert (ask.camera, ask.question, ask.max_tokens, ask.temperature, ask.top_p) == (
        "door", "Is the door open?", 9, 0.5, 0.8)
    assert ask.seed == 2**32 - 1 and ask.stop == ("\n\n",) and chat.stream and chat.include_usage
    assert parse().ask.temperature == 0.0  # livewatch's default: greedy
    assert parse(model="livewatch").ask.camera == "door"
    assert parse(["door", "livewatch"], model="livewatch").ask.camera == "livewatch"  # a camera by that name wins
    assert parse(since="-2h").ask.since == "-2h"


def test_refusals_carry_openai_statuses() -> None:
    assert refused(ErrorCode.UNKNOWN_CAMERA, model="garage").status == 404
    assert refused(ErrorCode.BAD_REQUEST, ["a", "b"], model="livewatch").param == "model"
    assert refused(ErrorCode.BAD_REQUEST, model=None).status == 400
    image = refused(ErrorCode.BAD_REQUEST, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])
    assert "text parts only" in str(image)
    refused(ErrorCode.BAD_REQUEST, messages=[{"role": "user", "content": [{"type": "input_audio"}]}])
    refused(ErrorCode.BAD_REQUEST, messages=[{"role": "assistant", "content": "hi"}])  # last must be the user's
    refused(ErrorCode.BAD_REQUEST, messages=[{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}])
    refused(ErrorCode.BAD_REQUEST, messages=[])
    refused(ErrorCode.BAD_REQUEST, n=2)
    refused(ErrorCode.BAD_REQUEST, logprobs=True)
    refused(ErrorCode.BAD_REQUEST, max_tokens=65)
    refused(ErrorCode.BAD_REQUEST, temperature=3)
    refused(ErrorCode.BAD_REQUEST, stop=["a", "b", "c", "d", "e"])
    refused(ErrorCode.BAD_REQUEST, stream="yes")
    assert refused(ErrorCode.TOO_LARGE, messages=[{"role": "user", "content": "x" * 201}]).status == 413
    for body in (b"[1]", b"{", b"\xff"):
        with pytest.raises(oa.OpenAIError):
            oa.parse_chat(body, LIMITS, ["door"], "c")


def test_earlier_turns_fit_the_question_limit_newest_first() -> None:
    turns = [{"role": "system", "content": "Be brief."}]
    for i in range(20):
        turns += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    turns.append({"role": "user", "content": [{"type": "text", "text": "And now?"}]})
    question = parse(messages=turns).ask.question
    assert len(question) <= LIMITS.max_question_chars and question.endswith("\nAnd now?")
    assert question.startswith("Earlier in this conversation:\n") and "Assistant: answer 19\n" in question
    assert "question 0" not in question and "Be brief." not in question  # the oldest went first
    assert parse(messages=turns[-3:]).ask.question == (
        "Earlier in this conversation:\nUser: question 19\nAssistant: answer 19\n\nAnd now?")


def test_replies_have_openais_shapes() -> None:
    answered = Answered("It is open.", {"context_tokens": 900, "output_tokens": 5, "finish_reason": "length",
                                        "ttft_ms": 9.0}, [{"frame_id": 3}])
    done = oa.completion("chatcmpl-x", 7, "door", answered)
    assert done["choices"][0]["message"] == {"role": "assistant", "content": "It is open."}
    assert done["choices"][0]["finish_reason"] == "length"
    assert done["usage"] == {"prompt_tokens": 900, "completion_tokens": 5, "total_tokens": 905}
    assert done["livewatch"]["metrics"]["ttft_ms"] == 9.0 and done["livewatch"]["evidence"] == [{"frame_id": 3}]
    assert oa.sse("[DONE]") == b"data: [DONE]\n\n"
    assert json.loads(oa.sse(oa.chunk("c", 1, "door", {"content": "é"}))[6:])["choices"][0]["delta"]["content"] == "é"
    assert oa.models(["a", "b"], created=5)["data"][1] == {"id": "b", "object": "model", "created": 5,
                                                          "owned_by": "livewatch"}
    assert oa.OpenAIError(ErrorCode.BUSY, "busy").body()["error"]["type"] == "rate_limit_error"


@given(st.lists(st.text(alphabet="ab\n", min_size=0, max_size=4), min_size=1, max_size=12),
       st.lists(st.text(alphabet="ab\n", min_size=1, max_size=3), min_size=1, max_size=3))
@example(deltas=["ab", "a"], stops=["b", "aba"])
@example(deltas=["aba"], stops=["b", "aba"])
@example(deltas=["ab"], stops=["b", "ab"])
def test_stop_strings_are_never_streamed_in_part(deltas: list[str], stops: list[str]) -> None:
    """Whatever the pieces the detokenizer gives, the stream shows exactly what reading the text one character
    at a time shows: the text before the first stop string to complete, and no prefix of it holds one."""
    full = "".join(deltas)
    expected = full
    for n in range(len(full) + 1):
        if done := [s for s in stops if full[:n].endswith(s)]:
            expected = full[: n - max(map(len, done))]
            break
    f = StopFilter(stops)
    shown = ""
    for delta in deltas:
        shown += f.push(delta)
        assert not any(s in shown for s in stops)
    shown += "" if f.stopped else f.flush()
    assert shown == expected and f.stopped == any(s in full for s in stops)
