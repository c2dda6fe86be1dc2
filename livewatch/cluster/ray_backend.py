"""Every Ray call of the front, in one place: connecting, shard actors (start, call, stream, kill) and the GPUs the
cluster has. The rest of the front sees ``ShardGone`` for an actor that died or cannot be reached, never a Ray error.

Shard actors are owned by the front's driver (not detached): when ``livewatch serve`` stops or dies, Ray ends them
and frees their GPUs. They are named ``<namespace>/shard-N`` so an operator finds them in ``ray list actors``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError, RayTaskError

from livewatch.cluster.shard import ShardHost
from livewatch.config import Settings
from livewatch.errors import CameraError, EngineError, RequestError
from livewatch.log import get_logger

log = get_logger("livewatch.cluster")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_STREAM_WINDOW = 64  # answer items a shard may run ahead of the front (Ray's generator back-pressure)


class ShardGone(Exception):
    """The shard's actor died: the shard is lost."""


class ShardTimeout(Exception):
    """The shard did not answer a call in time (it may only be busy: one request fails, the health check decides)."""


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

    async def call(self, handle: Any, timeout: float, method: Callable[Concatenate[Any, P], Awaitable[R]],
                   *args: P.args, **kwargs: P.kwargs) -> R:
        """``method`` (a ``ShardAPI`` method) on the shard actor ``handle``. Its own RequestError, CameraError or
        EngineError arrives as raised (their texts are public); any other exception of the method becomes a
        RuntimeError naming only its class."""
        name = method.__name__
        try:
            result: R = await asyncio.wait_for(getattr(handle, name).remote(*args, **kwargs), timeout)
            return result
        except (GetTimeoutError, TimeoutError) as exc:
            raise ShardTimeout(f"{name} took over {timeout:g} s") from exc
        except RayTaskError as exc:
            raise public_cause(exc.cause, name) from None
        except ActorUnavailableError as exc:  # a transient loss of contact, not a death
            raise ShardTimeout(f"{name}: the shard is unreachable for now") from exc
        except RayActorError as exc:
            raise ShardGone(type(exc).__name__) from exc
        except RayError as exc:  # an unserializable result or argument, a lost object: this call failed
            raise RuntimeError(f"{name} failed in Ray: {type(exc).__name__}") from exc

    async def stream(self, handle: Any, method: Callable[Concatenate[Any, P], AsyncIterator[T]],
                     *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        """The items of a shard's generator (a ``ShardAPI`` method) as it yields them; leaving early (or being
        cancelled) cancels it on the shard."""
        name = method.__name__
        gen = getattr(handle, name).options(_generator_backpressure_num_objects=_STREAM_WINDOW).remote(*args, **kwargs)
        finished = False
        try:
            async for ref in gen:
                yield await ref
            finished = True
        except RayTaskError as exc:
            raise public_cause(exc.cause, name) from None
        except ActorUnavailableError as exc:
            raise ShardTimeout(f"{name}: the shard is unreachable for now") from exc
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


def public_cause(cause: BaseException | None, method: str) -> Exception:
    """What the front raises for a shard method's own exception: a fresh copy of a public one, else a RuntimeError
    that names only its class (Ray's text of a remote error holds the shard's traceback, host and paths)."""
    if isinstance(cause, RequestError):
        return RequestError(cause.code, str(cause))
    if isinstance(cause, CameraError):
        return CameraError(str(cause))
    if isinstance(cause, EngineError):
        return EngineError(str(cause), out_of_memory=cause.out_of_memory)
    return RuntimeError(f"{method} failed on the shard: {type(cause).__name__ if cause else 'unknown error'}")
