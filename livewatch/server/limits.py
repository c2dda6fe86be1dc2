"""The bounds one connection and the whole server keep (``Settings.server_limits`` hands them out)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = 65536  # a larger request gets too_large; 4x closes the connection (1009)
    max_question_chars: int = 4000
    max_tokens: int = 1024  # the largest max_tokens an ask may request
    per_connection: int = 4  # questions in flight on one connection
    total: int = 32  # questions in flight in the daemon
    outbound_queue: int = 4096  # replies queued for a client, in messages ...
    outbound_bytes: int = 8 * 1024 * 1024  # ... and in characters; past either the client is disconnected
