"""Every Ray call of the front, in one place: connecting, shard actors (start, call, stream, kill) and the GPUs the
cluster has. The rest of the front sees ``ShardGone`` for an actor that died or cannot be reached, never a Ray error.

Shard actors are owned by the front's driver (not detached): when ``livewatch serve`` stops or dies, Ray ends them
and frees their GPUs. They are named ``<namespace>/shard-N`` so an operator finds them in ``ray list actors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from livewatch.cluster.shard import ShardHost
from livewatch.config import Settings
from livewatch.log import get_logger

log = get_logger("livewatch.cluster")

_STREAM_WINDOW = 64  # answer items a shard may run ahead of the front (Ray's generator back-pressure)


class ShardGone(Exception):
    """The shard's actor died, or did not answer in time."""


class RayBackend:
    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace
        self._actor_class: Any = None

    def connect(self) -> dict[str, Any]:
        """Join the cluster (a blocking call: run it on a thread); what the cluster offers."""
        ray.init(address=self.address, namespace=self.namespace, log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
        self._actor_class = ray.remote(ShardHost)
        return {"gpus": self.gpus(), "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}

    def gpus(self) -> float:
        """GPUs of the cluster's live nodes (Ray's view: free and used)."""
        return float(ray.cluster_resources().get("GPU", 0.0))

    def start_shard(self, shard_id: str, settings: Settings, store_root: str, gpus: float, cpus: float) -> Any:
        """A new shard actor (scheduled by Ray where ``gpus`` are free; its model loads in ``start``)."""
        return self._actor_class.options(
            name=shard_id, namespace=self.namespace, num_gpus=gpus, num_cpus=cpus, max_restarts=0,
            max_concurrency=1000,
        ).remote(settings, shard_id, store_root)

    async def call(self, handle: Any, method: str, *args: Any, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(*args), timeout)
        except (RayActorError, GetTimeoutError, TimeoutError) as exc:
            raise ShardGone(type(exc).__name__) from exc
        except RayTaskError as exc:  # the method's own exception (a RequestError, a CameraError): as it was raised
            raise exc.as_instanceof_cause() from None
        except RayError as exc:
            raise ShardGone(type(exc).__name__) from exc

    async def stream(self, handle: Any, method: str, *args: Any) -> AsyncIterator[Any]:
        """The items of a shard's generator as it yields them; leaving early (or being cancelled) cancels it on
        the shard."""
        gen = getattr(handle, method).options(_generator_backpressure_num_objects=_STREAM_WINDOW).remote(*args)
        finished = False
        try:
            async for ref in gen:
                yield await ref
            finished = True
        except RayActorError as exc:
            raise ShardGone(type(exc).__name__) from exc
        finally:
            if not finished:
                try:
                    ray.cancel(gen)
                except RayError:
                    pass

    def kill(self, handle: Any) -> None:
        try:
            ray.kill(handle, no_restart=True)
        except (RayError, ValueError):
            pass

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
