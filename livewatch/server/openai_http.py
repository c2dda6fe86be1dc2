"""The OpenAI-compatible routes: ``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed or not).

A completion is a question in flight like a WebSocket ask: it counts in the daemon's in-flight limit (429 past
it), is refused while the daemon stops (503), and is cancelled when its client goes away (aiohttp cancels the
request's handler, which cancels the answer between two tokens) or when the daemon stops (a streamed answer
then ends with an error event, as OpenAI's stream does). Parsing and formatting live in ``openai_api``.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from livewatch.errors import ErrorCode, public_failure
from livewatch.log import get_logger
from livewatch.metrics import Metrics
from livewatch.server import openai_api as oa
from livewatch.server import protocol as p
from livewatch.server.service import Admission, CancelReason, Service, cancel_error
from livewatch.server.limits import ServerLimits

log = get_logger("livewatch.server")
_WRITE_TIMEOUT_S = 30.0  # a streamed client that reads nothing for this long is cut off
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class OpenAIRoutes:
    def __init__(self, service: Service, limits: ServerLimits, inflight: Admission,
                 metrics: Metrics | None = None) -> None:
        self.service = service
        self.inflight = inflight
        self.metrics = metrics
        self._limits = p.Limits(limits.max_question_chars, limits.max_tokens)
        self._asks: set[asyncio.Future[p.Answered]] = set()

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        app.router.add_post("/v1/chat/completions", self._chat)

    async def shutdown(self) -> None:
        """The daemon is stopping: cut the answers in flight (each client gets a shutting_down error)."""
        for task in list(self._asks):
            task.cancel(msg=CancelReason.SHUTDOWN)
        await asyncio.gather(*self._asks, return_exceptions=True)

    # -- routes -----------------------------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(oa.models(self.service.camera_names()))

    async def _model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        listed = oa.models(self.service.camera_names())["data"]
        found = [m for m in listed if m["id"] == name]
        if not found:
            return self._fail(oa.OpenAIError(ErrorCode.UNKNOWN_CAMERA, f"no camera named {name[:64]!r}", "model"))
        return web.json_response(found[0])

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        cid = oa.completion_id()
        try:
            if request.content_type != "application/json":
                raise oa.OpenAIError(ErrorCode.BAD_REQUEST, "send the request as Content-Type: application/json")
            async with asyncio.timeout(_WRITE_TIMEOUT_S):  # a body trickled in byte by byte holds nothing for long
                body = await request.read()
            chat = oa.parse_chat(body, self._limits, self.service.camera_names(), cid)
            self._admit()
        except TimeoutError:
            return self._fail(oa.OpenAIError(ErrorCode.BAD_REQUEST, "the request body took too long"))
        except oa.OpenAIError as exc:
            return self._fail(exc)
        assert chat.ask.camera is not None
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        peer = request.remote or "?"
        self.inflight.count += 1
        ask = asyncio.ensure_future(self.service.ask(
            chat.ask, chat.ask.camera, queue.put_nowait if chat.stream else lambda _: None, f"http:{peer}"))
        self._asks.add(ask)

        def finished(_: asyncio.Future[p.Answered]) -> None:  # the slot is the answer's, not the slow client's
            self.inflight.count -= 1
            self._asks.discard(ask)

        ask.add_done_callback(finished)
        try:
            if chat.stream:
                return await self._stream(request, cid, chat, ask, queue)
            return await self._complete(cid, chat, ask)
        finally:
            if not ask.done():  # the client went away (the handler was cancelled) or its stream broke
                ask.cancel(msg=CancelReason.CLIENT)
                await asyncio.gather(ask, return_exceptions=True)
                log.info("http.completion_cancelled", request=cid, camera=chat.ask.camera)

    def _admit(self) -> None:
        if refusal := self.inflight.refusal(self.service.shutting_down):
            raise oa.OpenAIError(*refusal)

    async def _complete(self, cid: str, chat: oa.ChatRequest, ask: asyncio.Future[p.Answered]) -> web.Response:
        camera = chat.ask.camera
        assert camera is not None
        try:
            answered = await asyncio.shield(ask)
        except Exception as exc:
            return self._fail(self._error(cid, exc))
        except asyncio.CancelledError:
            if not ask.cancelled():
                raise  # the client went away: the finally of _chat cancels the answer
            return self._fail(self._error(cid, None))
        self._answered(answered)
        return web.json_response(oa.completion(cid, int(time.time()), camera, answered))

    async def _stream(self, request: web.Request, cid: str, chat: oa.ChatRequest,
                      ask: asyncio.Future[p.Answered], queue: asyncio.Queue[str | None]) -> web.StreamResponse:
        camera = chat.ask.camera
        assert camera is not None
        created = int(time.time())
        ask.add_done_callback(lambda _: queue.put_nowait(None))
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)

        async def send(data: bytes) -> None:
            async with asyncio.timeout(_WRITE_TIMEOUT_S):  # aiohttp's writes wait for a reader without a bound
                await response.write(data)

        await send(oa.sse(oa.chunk(cid, created, camera, {"role": "assistant", "content": ""})))
        while (piece := await queue.get()) is not None:
            await send(oa.sse(oa.chunk(cid, created, camera, {"content": piece})))
        if ask.cancelled() or ask.exception() is not None:
            error = self._error(cid, None if ask.cancelled() else ask.exception())
            await send(oa.sse(error.body()))
        else:
            answered = ask.result()
            self._answered(answered)
            await send(oa.sse(oa.chunk(cid, created, camera, {}, oa.finish_reason(answered),
                                       livewatch=oa.extras(answered))))
            if chat.include_usage:
                await send(oa.sse(oa.usage_chunk(cid, created, camera, answered)))
        await send(oa.sse("[DONE]"))
        await response.write_eof()
        return response

    # -- outcomes ---------------------------------------------------------------------------------------------------

    def _answered(self, answered: p.Answered) -> None:
        if self.metrics is not None:
            self.metrics.observe_answer(answered.metrics)

    def _error(self, cid: str, exc: BaseException | None) -> oa.OpenAIError:
        """The error a failed answer gets (``None``: cancelled by the daemon's stop)."""
        if exc is None or not isinstance(exc, Exception):
            error = cancel_error(CancelReason.SHUTDOWN, cut=True)
            assert error is not None
            return oa.OpenAIError(*error)
        return oa.OpenAIError(*public_failure(exc, shutting_down=self.service.shutting_down,
                                              event="http.completion_crashed", request=cid))

    def _fail(self, exc: oa.OpenAIError) -> web.Response:
        if self.metrics is not None:
            self.metrics.errors.labels(exc.code.value).inc()
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else {}
        return web.json_response(exc.body(), status=exc.status, headers=headers)

