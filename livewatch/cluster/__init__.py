"""livewatch on a Ray cluster: camera shards as actors, one per GPU, behind the same server (README "Cluster").

Only ``placement`` is pure; ``shard`` runs inside a shard actor and ``front`` in ``livewatch serve``. Nothing here
is imported unless ``[cluster] backend = "ray"``.
"""

from __future__ import annotations

import os
from pathlib import Path


def prepare_ray_environment(environ: dict[str, str] | None = None) -> None:
    """Settings Ray reads when it is imported or joined, so this runs before the first import of ray.

    Like ``ray start``: token authentication on when a token is at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token) and RAY_AUTH_MODE does not say otherwise. Ray's crash handler off in this process (unless
    set): it would print a stack trace at every SIGTERM, which is how systemd stops the daemon."""
    env = os.environ if environ is None else environ
    env.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    if "RAY_AUTH_MODE" not in env and (
        env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").exists()
    ):
        env["RAY_AUTH_MODE"] = "token"
