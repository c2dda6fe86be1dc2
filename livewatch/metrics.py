"""Prometheus metrics (prometheus-client), served at GET /metrics.

Counters and gauges that the daemon already keeps (frames, reconnects, queue depth, KV bytes, GPU memory) are
read at scrape time by a collector from one status snapshot, so nothing is counted twice; latencies are
histograms observed when an answer or an encode completes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SnapshotCollector:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self):
        snap = self._snapshot()
        cams = snap.get("cameras", {})
        mem = snap.get("memory", {})
        eng = snap.get("engine", {})

        def per_key(label, kind, name, doc, source, key):
            family = kind(name, doc, labels=[label])
            for item, figures in source.items():
                value = figures.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([item], value)
            return family

        def per_camera(*args):
            return per_key("camera", *args)

        def per_watch(*args):
            return per_key("watch", *args)

        yield per_camera(CounterMetricFamily, "livewatch_frames_sampled", "Frames sampled.", cams, "frames_sampled")
        yield per_camera(CounterMetricFamily, "livewatch_frames_dropped", "Sampled frames dropped at the hand-off.",
                         cams, "frames_dropped")
        yield per_camera(CounterMetricFamily, "livewatch_frames_decoded", "Frames decoded.", cams, "frames_decoded")
        yield per_camera(CounterMetricFamily, "livewatch_camera_reconnects", "Reconnect attempts.", cams, "reconnects")
        yield per_camera(GaugeMetricFamily, "livewatch_capture_cpu_seconds", "CPU seconds of the decode thread.",
                         cams, "cpu_seconds")
        up = GaugeMetricFamily("livewatch_camera_streaming", "1 when the camera is streaming.", labels=["camera"])
        for cam, figures in cams.items():
            up.add_metric([cam], 1.0 if figures.get("state") == "streaming" else 0.0)
        yield up
        yield per_camera(GaugeMetricFamily, "livewatch_memory_unique_frames", "Frames in star memory U window.",
                         mem, "unique_frames")
        yield per_camera(CounterMetricFamily, "livewatch_memory_write_errors", "Frame store write errors.",
                         mem, "write_errors")
        yield per_camera(GaugeMetricFamily, "livewatch_memory_bytes_on_disk", "Bytes of stored frames.",
                         mem, "bytes_on_disk")
        yield per_camera(GaugeMetricFamily, "livewatch_history_bytes", "Bytes of the camera's history on disk.",
                         mem, "history_bytes")
        yield per_camera(GaugeMetricFamily, "livewatch_history_span_seconds",
                         "From the history's oldest frame to its newest.", mem, "history_span_s")
        engine_cams = eng.get("cameras", {})
        yield per_camera(GaugeMetricFamily, "livewatch_kv_bytes", "Bytes of the camera's shared prefix KV cache.",
                         engine_cams, "kv_bytes")
        yield per_camera(CounterMetricFamily, "livewatch_encodes", "Prefix encodes.", engine_cams, "encode_count")
        yield per_camera(GaugeMetricFamily, "livewatch_encode_lag_current_seconds",
                         "How long the camera's prefix has not held its newest frames (0: up to date).",
                         engine_cams, "encode_lag_s")
        watches = snap.get("watches", {}).get("watches", {})
        yield per_watch(CounterMetricFamily, "livewatch_watch_evaluations", "Watch evaluations.", watches,
                        "evaluations")
        yield per_watch(CounterMetricFamily, "livewatch_watch_events", "Watch events (started and ended).", watches,
                        "events")
        yield per_watch(GaugeMetricFamily, "livewatch_watch_probability", "The last evaluation's P(yes).", watches,
                        "last_probability")
        yield per_watch(GaugeMetricFamily, "livewatch_watch_eval_milliseconds",
                        "The last evaluation step's time (all watches evaluated with it).", watches, "eval_ms")
        on = GaugeMetricFamily("livewatch_watch_on", "1 while the watch's condition holds.", labels=["watch"])
        for name, figures in watches.items():
            on.add_metric([name], 1.0 if figures.get("state") == "on" else 0.0)
        yield on
        sinks = snap.get("watches", {}).get("sinks", {})
        for key in ("sent", "failed", "dropped", "expired", "retries"):  # one family per figure, a sample per sink
            yield per_key("sink", CounterMetricFamily, f"livewatch_sink_{key}",
                          f"Items (events, and MQTT's states and discovery configs) {key} by the sink.", sinks, key)
        queue = GaugeMetricFamily("livewatch_engine_queue_depth", "Questions waiting for the engine.")
        queue.add_metric([], eng.get("queued_questions", 0))
        yield queue
        gpu = GaugeMetricFamily("livewatch_gpu_memory_bytes", "GPU memory allocated by the model's process.")
        gpu.add_metric([], eng.get("gpu_memory_allocated", 0))
        yield gpu
        if "cluster" in snap:
            yield from _cluster_families(snap["cluster"])


def _cluster_families(cluster: dict[str, Any]):
    """The shards and the placement (a cluster's front only)."""
    shards = cluster.get("shards", {})
    up = GaugeMetricFamily("livewatch_shard_up", "1 when the shard is up (0 while it starts).", labels=["shard"])
    cameras = GaugeMetricFamily("livewatch_shard_cameras", "Cameras placed on the shard.", labels=["shard"])
    busy = GaugeMetricFamily("livewatch_shard_encode_load",
                             "Encode seconds per second on the shard over the last minute (its measured load).",
                             labels=["shard"])
    for shard, figures in shards.items():
        up.add_metric([shard], 1.0 if figures.get("state") == "up" else 0.0)
        cameras.add_metric([shard], len(figures.get("cameras", [])))
        if isinstance(figures.get("busy"), (int, float)):
            busy.add_metric([shard], figures["busy"])
    placed = GaugeMetricFamily("livewatch_camera_placement", "1 for the shard that runs the camera.",
                               labels=["camera", "shard"])
    for camera, shard in cluster.get("placement", {}).items():
        placed.add_metric([camera, shard or ""], 1.0)
    replaced = CounterMetricFamily("livewatch_cameras_replaced", "Cameras placed again after their shard was lost.")
    replaced.add_metric([], cluster.get("replaced_cameras", 0))
    yield from (up, cameras, busy, placed, replaced)


class Metrics:
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_SnapshotCollector(snapshot))
        self.ttft = Histogram(
            "livewatch_ttft_seconds", "Time from question to first token.", registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.answer = Histogram(
            "livewatch_answer_seconds", "Time from question to the end of the answer.", registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.encode = Histogram(
            "livewatch_encode_seconds", "Time to bring a camera's prefix up to date.", registry=self.registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.encode_lag = Histogram(
            "livewatch_encode_lag_seconds",
            "Per camera encode: how long its prefix had not held the newest frames when the encode ended.",
            registry=self.registry, buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
        )
        self.event_latency = Histogram(
            "livewatch_event_latency_seconds",
            "Watch events: from the capture of the newest frame that decided the event to leaving each sink.",
            ["sink"], registry=self.registry, buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 30.0),
        )
        self.cache = Counter(
            "livewatch_prefix_cache", "Questions answered on a reused (hit) or new (miss) prefix.",
            ["result"], registry=self.registry,
        )
        self.errors = Counter("livewatch_request_errors", "Error replies by code.", ["code"], registry=self.registry)

    def observe_answer(self, metrics: dict[str, Any]) -> None:
        self.ttft.observe(metrics["ttft_ms"] / 1e3)
        self.answer.observe(metrics["total_ms"] / 1e3)
        self.cache.labels("hit" if metrics["cache_reused"] else "miss").inc()
        if metrics["encode_ms"] > 0:
            self.encode.observe(metrics["encode_ms"] / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
