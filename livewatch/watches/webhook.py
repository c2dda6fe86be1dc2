"""Webhook delivery: each watch event POSTed as JSON to one URL, signed so the receiver can tell it came from us.

The body is ``WatchEvent.to_message`` (compact JSON, ``latency_s`` at the attempt's time). The header
``X-Livewatch-Signature: sha256=<hex>`` is the HMAC-SHA256 of those exact body bytes under the shared secret,
which the caller reads from an environment variable or a file and passes as bytes; the receiver recomputes it over
the raw body and compares in constant time, and deduplicates retries by the event ``id``.

Retried: connection errors, timeouts (``timeout_s`` bounds the whole request, however slowly a server trickles
bytes), HTTP 5xx and 429 (honouring a ``Retry-After`` in seconds, within the retry cap). Not retried: other 4xx
and 3xx (redirects are not followed: a signed event goes to the configured URL or nowhere). Response bodies are
untrusted: at most ``MAX_RESPONSE_BYTES`` are read (so a short reply keeps the connection reusable), none is
kept or logged. Environment proxies and ``.netrc`` are ignored (``trust_env=False``): what the daemon contacts is
what its configuration says. HTTPS verifies against the system CAs, or a CA file given for a private CA.

httpx is the client: asyncio-native, so a hung receiver is cancelled rather than left holding a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from livewatch import __version__
from livewatch.log import get_logger, redact_url
from livewatch.watches.events import WatchEvent
from livewatch.errors import DeliveryError
from livewatch.watches.sinks import DigestOut, Outgoing, Sink, SinkOptions

log = get_logger("livewatch.sinks")

SIGNATURE_HEADER = "X-Livewatch-Signature"
MAX_RESPONSE_BYTES = 4096


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # the HTTP-date form is rare for webhooks; the backoff applies instead
    return float(value.strip())


class WebhookSink(Sink):
    """POSTs each ``WatchEvent`` (other items are ignored) to ``url``, signed with ``secret``."""

    def __init__(self, url: str, secret: bytes, *, name: str = "webhook", timeout_s: float = 5.0,
                 ca_file: str | None = None, options: SinkOptions | None = None,
                 on_sent: Callable[[float], None] | None = None) -> None:
        super().__init__(name, options, on_sent)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook {name}: the URL must be http:// or https:// with a host, not "
                             f"{redact_url(url)!r}")
        if not secret:
            raise ValueError(f"webhook {name}: the signing secret is empty")
        if timeout_s <= 0:
            raise ValueError(f"webhook {name}: timeout_s must be positive")
        self.url = url
        parts = urlsplit(url)  # where, not the path: webhook URLs often carry their credential in it
        self.target = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        self.timeout_s = timeout_s
        self._secret = bytes(secret)
        self._tls = ssl.create_default_context(cafile=ca_file)  # system CAs (or the given CA file)
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never the secret, never credentials in the URL
        return f"WebhookSink(name={self.name!r}, url={self.target!r})"

    def accepts(self, item: Outgoing) -> bool:
        return isinstance(item, (WatchEvent, DigestOut))

    def client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                verify=self._tls, trust_env=False, follow_redirects=False,
                timeout=httpx.Timeout(self.timeout_s), limits=httpx.Limits(max_connections=1),
                headers={"User-Agent": f"livewatch/{__version__}"},
            )
        return self._http

    async def deliver(self, item: Outgoing) -> None:
        assert isinstance(item, (WatchEvent, DigestOut))  # accepts() lets only these in
        body = encode(item.to_message() if isinstance(item, WatchEvent) else item.message)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body)}
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.client().stream("POST", self.url, content=body, headers=headers) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
                    status = response.status_code
                    retry_after = response.headers.get("Retry-After")
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise DeliveryError("timeout", error=type(exc).__name__) from exc
        except httpx.TransportError as exc:
            raise DeliveryError("connection failed", error=type(exc).__name__) from exc
        if 200 <= status < 300:
            return
        if status >= 500 or status == 429:
            raise DeliveryError(f"HTTP {status}", error="HTTPStatus", retry_after_s=_retry_after(retry_after))
        raise DeliveryError(f"HTTP {status}", error="HTTPStatus", retryable=False)

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "target": self.target}
