from __future__ import annotations

import io
import json
import logging

import structlog

from livewatch.log import bind, configure_logging, get_logger, redact_text, redact_url, unbind


def test_redact_url_removes_user_and_password() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.2:554/stream") == "rtsp://***@10.0.0.2:554/stream"
    assert redact_url("http://token@example.com/mjpeg?x=1") == "http://***@example.com/mjpeg?x=1"
    assert redact_url("rtsp://10.0.0.2/stream") == "rtsp://10.0.0.2/stream"
    assert redact_url("/dev/video0") == "/dev/video0"
    assert redact_url("testsrc://?size=1280x720") == "testsrc://?size=1280x720"


def test_redact_text_inside_messages() -> None:
    text = "Connection to rtsp://u:p%40x@host/a failed; retry rtsps://me:pw@h2:322/b"
    out = redact_text(text)
    assert "p%40x" not in out and "pw@" not in out and "me:" not in out
    assert out == "Connection to rtsp://***@host/a failed; retry rtsps://***@h2:322/b"


def test_json_lines_with_context_and_redaction() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = get_logger()
    bind(camera="door", request="r1")
    try:
        log.info("camera.error", error="cannot open rtsp://a:b@h/x", url="rtsp://a:b@h/x")
        log.debug("hidden")
    finally:
        unbind("camera", "request")
    logging.getLogger("libav").warning("lib says rtsp://x:y@h/z")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0]["event"] == "camera.error"
    assert lines[0]["camera"] == "door" and lines[0]["request"] == "r1"
    assert lines[0]["level"] == "info" and "timestamp" in lines[0]
    assert lines[0]["url"] == "rtsp://***@h/x"
    assert "a:b" not in out.getvalue() and "x:y" not in out.getvalue()
    assert len(lines) == 2 and lines[1]["logger"] == "libav"
    structlog.reset_defaults()


def test_query_string_secrets_are_redacted() -> None:
    url = "rtsp://admin:pw1@cam/x?user=admin&pwd=hunter2&channel=1;token=abc#transport=tcp"
    assert redact_url(url) == "rtsp://***@cam/x?user=***&pwd=***&channel=1;token=***#transport=tcp"
    assert redact_text("GET /video.cgi?Password=x&PASS=y&size=2") == "GET /video.cgi?Password=***&PASS=***&size=2"


def test_tracebacks_carry_no_locals_and_are_redacted_after_rendering() -> None:
    for fmt in ("json", "console"):
        out = io.StringIO()
        configure_logging("info", fmt, stream=out)

        def fail(url: str = "rtsp://admin:local-secret@h/x", token: str = "api-token-value") -> None:
            raise ValueError("cannot open http://cam/x?user=admin&pwd=hunter2 or rtsp://u:hunter3@h/x")

        try:
            fail()
        except ValueError:
            get_logger().exception("camera.crashed")
        text = out.getvalue()
        assert "camera.crashed" in text and "ValueError" in text
        for secret in ("local-secret", "api-token-value", "hunter2", "hunter3"):
            assert secret not in text, (fmt, secret)
    structlog.reset_defaults()


def test_a_throttle_lets_a_line_a_minute_through_per_key_with_the_count() -> None:
    from livewatch.log import Throttle

    now = [0.0]
    t = Throttle(60.0, clock=lambda: now[0])
    assert t.ready("a") == 1  # the first occurrence is logged at once
    assert [t.ready("a") for _ in range(5)] == [0] * 5
    assert t.ready("b") == 1  # keys are apart
    now[0] = 59.9
    assert t.ready("a") == 0
    now[0] = 60.0
    assert t.ready("a") == 7  # the six held back and this one
    assert t.ready() == 1 and t.ready() == 0
