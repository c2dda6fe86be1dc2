"""Hand-off of frames from a decode thread to asyncio: bounded, keeps the newest.

``put`` never blocks the decode thread: when ``maxlen`` items are waiting, the oldest is dropped and counted
(for live video, a late frame is worth less than the current one). ``close`` ends the stream: ``get`` returns
None once the waiting items are consumed.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestHandoff(Generic[T]):
    def __init__(self, loop: asyncio.AbstractEventLoop, maxlen: int = 8) -> None:
        self._loop = loop
        self._items: deque[T] = deque()
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        self._wake()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # loop closed: nobody consumes any more
            pass

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    async def get(self) -> T | None:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._closed:
                    return None
                self._ready.clear()
            await self._ready.wait()
