"""One WebSocket connection: parse requests, run them concurrently, stream replies in order.

Each connection owns its ask tasks (by request id), its camera operations (at most ``_MAX_CAMERA_OPS`` at a
time) and one writer task; replies go through an outbound queue bounded in messages and in bytes so a request
never awaits the network. A client that does not read its replies fills the queue; it is then disconnected (close
code 1008) and its questions are cancelled, instead of letting memory grow. When the client goes away, its
questions are cancelled, which stops their generation between two tokens.

Every failure of a request becomes one ``error`` reply with a stable code (``error_code``); a client never sees
exception text from inside the daemon: bugs and state-directory failures are ``internal`` with a fixed message,
and the log has the detail.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from livewatch.errors import ErrorCode, public_failure
from livewatch.log import bind, get_logger
from livewatch.metrics import Metrics
from livewatch.server import protocol as p
from livewatch.server import watchproto as wp
from livewatch.server.limits import ServerLimits
from livewatch.server.service import Admission, CancelReason, Service, cancel_error

log = get_logger("livewatch.server")
_conn_ids = itertools.count(1)


class Socket(Protocol):
    """An upgraded WebSocket connection (``web.WebSocket``)."""

    remote: str

    def messages(self) -> AsyncIterator[str | bytes]: ...

    async def send(self, text: str) -> None:
        """Raises ConnectionError once the connection is closing."""

    async def close(self, code: int, reason: str) -> None: ...


_MAX_CAMERA_OPS = 4  # camera.add / camera.remove / watch.add / watch.remove in flight per connection
_MAX_OTHERS = 16  # those and memory requests in flight per connection
class Connection:
    def __init__(
        self,
        ws: Socket,
        service: Service,
        limits: ServerLimits,
        inflight: Admission,
        metrics: Metrics | None = None,
    ) -> None:
        self.ws = ws
        self.service = service
        self.limits = limits
        self.inflight = inflight
        self.metrics = metrics
        self.id = f"c{next(_conn_ids)}"
        self._asks: dict[p.RequestId, asyncio.Task[None]] = {}
        self._started: dict[p.RequestId, bool] = {}  # asks and finds whose coroutine ran its first step
        self._cancelled: dict[p.RequestId, CancelReason] = {}  # why a request in flight was cancelled
        self._others: set[asyncio.Task[None]] = set()
        self._out: asyncio.Queue[str | None] = asyncio.Queue(maxsize=limits.outbound_queue)
        self._out_bytes = 0  # characters queued and not yet sent (what a non-reading client costs)
        self._close_task: asyncio.Future[None] | None = None
        self._closing = False
        self._proto_limits = p.Limits(limits.max_question_chars, limits.max_tokens)

    # -- the connection's life ----------------------------------------------------------------------------------

    async def run(self) -> None:
        bind(conn=self.id)
        log.info("conn.open", remote=self.ws.remote)
        writer = asyncio.create_task(self._writer(), name=f"{self.id}-writer")
        try:
            async for message in self.ws.messages():
                if self._closing:
                    break
                self._dispatch(message)
        except ConnectionError:
            pass
        finally:
            self.service.unsubscribe(self.id)
            for task in [*self._asks.values(), *self._others]:
                task.cancel()
            await asyncio.gather(*self._asks.values(), *self._others, return_exceptions=True)
            self._closing = True
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if self._close_task is not None:
                await asyncio.gather(self._close_task, return_exceptions=True)
            log.info("conn.closed")

    async def shutdown(self) -> None:
        """The daemon is stopping: cancel this connection's questions with a message, then close."""
        for rid, task in list(self._asks.items()):
            self._cancelled[rid] = CancelReason.SHUTDOWN
            task.cancel(msg=CancelReason.SHUTDOWN)
        await asyncio.gather(*self._asks.values(), return_exceptions=True)
        try:
            await asyncio.wait_for(self._drain(), timeout=2.0)
        except TimeoutError:
            pass
        await self.ws.close(1001, "daemon shutting down")

    async def _drain(self) -> None:
        while not self._out.empty():
            await asyncio.sleep(0.01)

    async def _writer(self) -> None:
        try:
            while True:
                text = await self._out.get()
                if text is None:
                    return
                self._out_bytes -= len(text)
                await self.ws.send(text)
        except ConnectionError:
            pass

    def send(self, text: str) -> None:
        if self._closing:
            return
        try:
            if self._out_bytes + len(text) > self.limits.outbound_bytes:
                raise asyncio.QueueFull
            self._out.put_nowait(text)
            self._out_bytes += len(text)
        except asyncio.QueueFull:
            self._closing = True
            log.warning("conn.slow_consumer", queued=self._out.qsize(), queued_bytes=self._out_bytes)
            for task in self._asks.values():
                task.cancel()
            # owned apart from the request tasks, which run() cancels: the client must see 1008, not 1000
            self._close_task = asyncio.ensure_future(self.ws.close(1008, "client does not read its replies"))

    def _error(self, rid: Any, code: ErrorCode, message: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(code.value).inc()
        self.send(p.error_message(rid, code, message))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._others.add(task)
        task.add_done_callback(self._others.discard)

    # -- requests -----------------------------------------------------------------------------------------------

    def _dispatch(self, message: str | bytes) -> None:
        if len(message) > self.limits.max_message_bytes:
            self._error(None, ErrorCode.TOO_LARGE, f"message over {self.limits.max_message_bytes} bytes")
            return
        try:
            req = p.parse_request(message, self._proto_limits)
        except p.ProtocolError as exc:
            self._error(exc.request_id, exc.code, str(exc))
            return
        if isinstance(req, (p.Ask, wp.Find)):
            self._start_ask(req)
        elif isinstance(req, p.Cancel):
            task = self._asks.get(req.id)
            if task is None:
                self._error(req.id, ErrorCode.UNKNOWN_REQUEST, "no question with this id is in flight")
            else:
                self._cancelled[req.id] = CancelReason.CLIENT
                task.cancel(msg=CancelReason.CLIENT)
        elif isinstance(req, p.Status):
            status = self.service.status()
            self.send(p.status_message(req.id, status["cameras"], status["engine"], status["memory"],
                                       status.get("watches"), status.get("server"), status.get("cluster")))
        elif isinstance(req, p.Memory):
            if len(self._others) >= _MAX_OTHERS:
                self._error(req.id, ErrorCode.BUSY, f"at most {_MAX_OTHERS} requests other than questions in flight")
            else:
                self._spawn(self._memory(req))
        elif isinstance(req, p.DigestList):
            self.send(p.digest_list_message(req.id, self.service.list_digests()))
        elif isinstance(req, (p.CameraAdd, p.CameraRemove, p.CameraMasks, p.DigestRun, wp.WatchAdd, wp.WatchRemove)):
            if len(self._others) >= _MAX_CAMERA_OPS:
                self._error(req.id, ErrorCode.BUSY, f"at most {_MAX_CAMERA_OPS} camera or watch operations in flight")
            elif isinstance(req, p.CameraAdd):
                self._spawn(self._camera_add(req))
            elif isinstance(req, p.CameraRemove):
                self._spawn(self._camera_remove(req))
            elif isinstance(req, p.CameraMasks):
                self._spawn(self._camera_masks(req))
            elif isinstance(req, p.DigestRun):
                self._spawn(self._digest_run(req))
            else:
                self._spawn(self._watch_op(req))
        elif isinstance(req, wp.WatchList):
            self.send(wp.reply("watch.list", req.id, watches=self.service.list_watches()))
        elif isinstance(req, wp.WatchSubscribe):
            self.service.subscribe(self.id, req.watches, self.send)
            self.send(wp.reply("watch.subscribed", req.id, watches=list(req.watches) if req.watches else None))
        elif isinstance(req, wp.WatchUnsubscribe):
            self.service.unsubscribe(self.id)
            self.send(wp.reply("watch.unsubscribed", req.id))

    def _start_ask(self, req: p.Ask | wp.Find) -> None:
        """An ask or a find: both are questions in flight (limits, cancel, the client going away)."""
        if refusal := self.inflight.refusal(self.service.shutting_down):  # stopping, or busy across the daemon
            self._error(req.id, *refusal)
            return
        if req.id in self._asks:
            self._error(req.id, ErrorCode.DUPLICATE_ID, "a question with this id is already in flight")
            return
        if len(self._asks) >= self.limits.per_connection:
            self._error(req.id, ErrorCode.BUSY, f"at most {self.limits.per_connection} questions per connection")
            return
        if isinstance(req, wp.Find):
            work: Awaitable[None] = self._find(req)
        else:
            camera = req.camera
            if camera is None:
                names = self.service.camera_names()
                if len(names) != 1:
                    self._error(req.id, ErrorCode.BAD_REQUEST, f"field 'camera' is required: cameras are {names}")
                    return
                camera = names[0]
            work = self._ask(req, camera)
        self.inflight.count += 1
        task = asyncio.ensure_future(work)
        self._asks[req.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self.inflight.count -= 1
            if self._asks.get(req.id) is task:
                del self._asks[req.id]
            reason = self._cancelled.pop(req.id, None)
            # cancelled before its first step (a cancel right behind the request): its own handler never ran
            if not self._started.pop(req.id, False) and (error := cancel_error(reason)):
                self._error(req.id, *error)

        task.add_done_callback(done)

    async def _ask(self, req: p.Ask, camera: str) -> None:
        self._started[req.id] = True
        bind(request=str(req.id), camera=camera)
        try:
            answer = await self.service.ask(req, camera, lambda text: self.send(p.token_message(req.id, text)),
                                            self.id)
        except asyncio.CancelledError as exc:
            if error := cancel_error(exc.args[0] if exc.args else None, cut=True):
                self._error(req.id, *error)
            raise
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.ask_crashed")
        else:
            if self.metrics is not None:
                self.metrics.observe_answer(answer.metrics)
            self.send(p.answer_message(req.id, camera, answer.text, answer.metrics, answer.evidence))

    async def _find(self, req: wp.Find) -> None:
        self._started[req.id] = True
        bind(request=str(req.id))
        try:
            moments = await self.service.find(
                req, lambda done, total: self.send(wp.reply("find.progress", req.id, done=done, total=total)))
        except asyncio.CancelledError as exc:
            if error := cancel_error(exc.args[0] if exc.args else None):
                self._error(req.id, *error)
            raise
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.find_failed")
        else:
            self.send(wp.reply("find.result", req.id, moments=moments))

    async def _camera_add(self, req: p.CameraAdd) -> None:
        try:
            redacted = await self.service.add_camera(req.name, req.url)
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.camera_add_failed")
        else:
            self.send(p.camera_added_message(req.id, req.name, redacted))

    async def _memory(self, req: p.Memory) -> None:
        try:
            self.send(p.memory_message(req.id, req.camera, await self.service.memory_frames(req.camera)))
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.memory_failed")

    async def _camera_remove(self, req: p.CameraRemove) -> None:
        try:
            await self.service.remove_camera(req.name)
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.camera_remove_failed")
        else:
            self.send(p.camera_removed_message(req.id, req.name))

    async def _digest_run(self, req: p.DigestRun) -> None:
        try:
            digest = await self.service.run_digest(req.digest)
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.digest_run_failed")
        else:
            self.send(p.digest_result_message(req.id, digest))

    async def _camera_masks(self, req: p.CameraMasks) -> None:
        try:
            masks = await self.service.camera_masks(req.camera, req.masks)
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.camera_masks_failed")
        else:
            self.send(p.camera_masks_message(req.id, req.camera, masks))

    async def _watch_op(self, req: wp.WatchAdd | wp.WatchRemove) -> None:
        try:
            if isinstance(req, wp.WatchAdd):
                stored = await self.service.add_watch(req)
                self.send(wp.reply("watch.added", req.id, watch=stored))
            else:
                await self.service.remove_watch(req.name)
                self.send(wp.reply("watch.removed", req.id, name=req.name))
        except Exception as exc:
            self._request_failed(req.id, exc, "conn.watch_op_failed")

    def _request_failed(self, rid: p.RequestId, exc: Exception, event: str) -> None:
        """One error reply (``public_failure``)."""
        self._error(rid, *public_failure(exc, shutting_down=self.service.shutting_down, event=event,
                                         request=str(rid)))
