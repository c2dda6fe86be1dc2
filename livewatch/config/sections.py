"""The configuration file's sections: pydantic models that mirror ``config.toml`` section by section.

Every field has a default, a bound and a one-line description; unknown keys are errors; a rule across keys of one
section is a model validator, so ``check-config`` reports it like any other value.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from livewatch.capture.masks import parse_masks
from livewatch.capture.zones import parse_crop
from livewatch.digests.schedule import parse_schedule
from livewatch.capture.urlpolicy import DEFAULT_DENY, UrlPolicy, parse_networks
from livewatch.names import CAMERA_NAME_RE

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
DEMO_CAMERA_URL = "testsrc://?size=1280x720&rate=30"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSection(_Section):
    id: str = Field(DEFAULT_MODEL_ID, min_length=1, description="Hugging Face model id or local checkpoint directory.")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto, cpu, cuda or cuda:N.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto: bfloat16 on a GPU, float32 on the CPU."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernels; flash_attention_2 needs the flash-attn package."
    )
    max_pixels: int = Field(100352, ge=3136, le=16777216, description="Pixel cap per frame after resizing.")
    min_pixels: int = Field(3136, ge=784, le=16777216, description="Pixel floor per frame after resizing.")
    encode_mode: Literal["lazy", "eager"] = Field(
        "lazy", description="lazy: encode when a question needs it; eager: encode as each frame batch lands."
    )
    encode_batch: int = Field(
        16, ge=1, le=256, description="Eager mode: cameras whose prefixes one encode step updates together."
    )
    encode_gather_s: float = Field(
        0.25, ge=0, le=10, description="Eager mode: an encode waits this long for other cameras' to share its step."
    )
    encode_step_tokens: int = Field(
        4096, ge=256, le=65536, description="New prefix tokens one encode step computes at most (questions wait)."
    )
    watch_batch: int = Field(
        32, ge=1, le=4096, description="Watch evaluations one engine step runs at most (questions wait for a step)."
    )
    encode_lag_warning_s: float = Field(
        10.0, gt=0, le=86400, description="Eager mode: log a warning when a camera's prefix falls this far behind."
    )
    max_gap_s: float = Field(60.0, gt=0, le=86400, description="Longer gaps between frame pairs are shortened to this.")
    max_new_tokens: int = Field(256, ge=1, le=8192, description="Answer length when a question does not ask.")
    max_new_tokens_limit: int = Field(1024, ge=1, le=8192, description="Largest answer length a question may ask.")
    timezone: str = Field("local", min_length=1, description="Time zone of times in prompts: local or an IANA name.")
    batch_size: int = Field(8, ge=1, le=64, description="Answers decoded together (decode slots).")
    max_kv_tokens: int = Field(
        4096, ge=512, le=131072, description="Tokens per decode slot: prefix + question + answer."
    )
    cuda_graphs: Literal["auto", "off"] = Field(
        "auto", description="auto: capture the decode path as CUDA graphs on a GPU; off: eager."
    )
    warm_up: bool = Field(
        True, description="Run a synthetic camera through every engine path at start-up (first-use costs)."
    )
    evidence_ranking: bool = Field(
        True, description="Rank each answer's frames by the attention its tokens put on them (one extra prefill)."
    )
    fused_kernels: Literal["auto", "off"] = Field(
        "auto", description="auto: fused Triton kernels in the GPU decode step and prefix updates (checked at "
        "start-up); off: PyTorch."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != "local":
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}; use 'local' or an IANA name such as 'Europe/Paris'") from exc
        return value

    @model_validator(mode="after")
    def _bounds_agree(self) -> ModelSection:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        if self.max_new_tokens > self.max_new_tokens_limit:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must not exceed max_new_tokens_limit "
                             f"({self.max_new_tokens_limit})")
        return self


class CaptureSection(_Section):
    fps: float = Field(1.0, gt=0, le=30, description="Frames sampled per second from each camera.")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds to wait for a camera to open.")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds without data before reconnecting.")
    max_source_pixels: int = Field(
        3840 * 2160, ge=64 * 64, le=16384 * 16384, description="Largest decoded frame a camera may send, in pixels."
    )
    max_source_fps: float = Field(60.0, gt=0, le=240, description="Highest frame rate asked of a generator or webcam.")
    decoder_threads: int = Field(2, ge=1, le=16, description="Decoder threads per camera (FFmpeg's default is one per core).")


class MemorySection(_Section):
    star_frames: int = Field(20, ge=0, le=512, description="Capacity of the star memory in frames (pairs x 2).")
    window_frames: int = Field(20, ge=2, le=512, description="Length of the rolling stream window in frames.")
    history_hours: float = Field(
        24.0, ge=0, le=24 * 365, description="Frames that leave memory stay on disk this long (0: deleted at once)."
    )
    history_max_bytes: int = Field(
        2 * 1024**3, ge=0, le=1 << 44, description="Bound on one camera's history on disk, in bytes (oldest out)."
    )
    window_slack_frames: int = Field(
        6, ge=0, le=512,
        description="The window may grow this many frames past its length before its oldest pairs leave at once.",
    )
    importance_threshold: float = Field(0.6, ge=0, le=1, description="Score above which a pair may become a star.")
    star_half_life_s: float = Field(
        600.0, gt=0, le=31536000, description="Age at which a star's importance counts half when competing."
    )
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of stored frames.")
    max_bytes_per_camera: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, le=1 << 40, description="Bound on one camera's stored frames, in bytes."
    )
    min_change_area: float = Field(
        0.0015, ge=0.0, le=0.1, description="Smallest changed region that counts for importance, fraction of the frame."
    )
    lightning_area: float = Field(
        0.4, ge=0.05, le=1.0, description="A change over more of the frame than this at once is global, not an event."
    )
    stationary_s: float = Field(
        60.0, gt=0, le=86400, description="Seconds after which an object that stays put becomes background."
    )

    @field_validator("star_frames", "window_frames", "window_slack_frames")
    @classmethod
    def _even(cls, value: int, info: ValidationInfo) -> int:
        if value % 2:
            raise ValueError(f"{info.field_name} must be even (frames are kept in pairs)")
        return value


class StateSection(_Section):
    dir: str = Field(
        "", description="State directory; empty: $STATE_DIRECTORY (systemd), else ~/.local/state/livewatch."
    )


class ServerSection(_Section):
    host: str = Field("127.0.0.1", min_length=1, description="Address to bind; non-loopback requires a token.")
    port: int = Field(8765, ge=1, le=65535, description="TCP port for WebSocket and HTTP.")
    token_env: str = Field(
        "LIVEWATCH_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Environment variable holding the token."
    )
    token_file: str = Field("", description="File holding the token (read when the variable is unset).")
    max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024, description="Largest request message or HTTP body.")
    max_question_chars: int = Field(4000, ge=1, le=100000, description="Longest question.")
    max_inflight_per_connection: int = Field(4, ge=1, le=1024, description="Questions in flight per connection.")
    max_inflight_total: int = Field(32, ge=1, le=4096, description="Questions in flight in the whole daemon.")
    allowed_origins: list[str] = Field(
        default_factory=list, description="Origin values accepted from browsers; clients without Origin always pass."
    )
    tls_cert: str = Field("", description="PEM certificate file; with tls_key, serve wss:// and https://.")
    tls_key: str = Field("", description="PEM private key file for tls_cert.")
    shutdown_timeout_s: float = Field(10.0, gt=0, le=600, description="Deadline for a graceful stop.")
    max_connections: int = Field(
        512, ge=1, le=65536, description="Open TCP connections (WebSocket and HTTP) at once; more are closed at once."
    )
    max_connections_per_peer: int = Field(
        64, ge=1, le=65536, description="Open connections from one IP address (a reverse proxy counts as one)."
    )
    reserved_connections: int = Field(
        128, ge=0, le=65536,
        description="Connections kept for clients that sent the token or cookie (at most half of max_connections).",
    )
    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="Hours a web page login (its session cookie) lasts."
    )
    handshake_timeout_s: float = Field(
        5.0, gt=0, le=120,
        description="Seconds from accept (TLS handshake included) a connection has to send the token or cookie.",
    )
    max_outbound_bytes: int = Field(
        8 * 1024 * 1024, ge=65536, le=1 << 30, description="Replies queued for a client that does not read, in bytes."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSection:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")
        return self


Scheme = Literal["rtsp", "rtsps", "http", "https", "file", "webcam", "testsrc"]


def _network_schemes() -> list[Scheme]:
    return ["rtsp", "rtsps", "http", "https"]


class SecuritySection(_Section):
    api_schemes: list[Scheme] = Field(
        default_factory=_network_schemes,
        description="URL schemes that camera.add may use; configured cameras may use any.",
    )
    allow_networks: list[str] = Field(
        default_factory=list, description="CIDRs an API-added camera host may resolve to; empty: any not denied."
    )
    deny_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DENY),
        description="CIDRs an API-added camera host may not resolve to (link-local and metadata by default).",
    )
    max_cameras: int = Field(64, ge=1, le=4096, description="Cameras watched at once; camera.add beyond is refused.")
    camera_adds_per_minute: int = Field(
        10, ge=1, le=10000, description="camera.add requests accepted per minute, across all clients."
    )

    @field_validator("allow_networks", "deny_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    def url_policy(self) -> UrlPolicy:
        return UrlPolicy(
            api_schemes=frozenset(self.api_schemes),
            allow=parse_networks(self.allow_networks),
            deny=parse_networks(self.deny_networks),
        )


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Lowest level logged.")
    format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: console on a terminal, JSON lines otherwise."
    )


class CameraSection(_Section):
    url: str = Field("", description="Camera URL: rtsp(s)://, http(s)://, file path, /dev/videoN, testsrc:// "
                                      "(or source and crop for a zone).")
    source: str = Field("", description="A zone: the camera whose decoded frames it is cut from (instead of url).")
    crop: list[float] = Field(default_factory=list, description="A zone's rectangle [x, y, w, h] of its source, "
                                                                "relative (0..1).")
    username: str = Field("", description="User name inserted into the URL (kept out of logs).")
    password_env: str = Field("", description="Environment variable holding the camera password.")
    password_file: str = Field("", description="File holding the camera password.")
    masks: list[list[float]] = Field(
        default_factory=list,
        description="Privacy masks: polygons [x1, y1, x2, y2, ...] in relative coordinates (0..1), painted black "
                    "on every sampled frame before anything stores, scores or shows it.",
    )

    @field_validator("masks")
    @classmethod
    def _masks(cls, value: list[list[float]]) -> list[list[float]]:
        parse_masks(value)  # ValueError says which polygon and why
        return value

    @model_validator(mode="after")
    def _url_or_zone(self) -> CameraSection:
        if bool(self.url) == bool(self.source):
            raise ValueError("a camera has either a url or a source (a zone of that camera), not both or neither")
        if self.source:
            parse_crop(self.crop)  # ZoneError (a ValueError) says why
            if self.username or self.password_env or self.password_file:
                raise ValueError("a zone has no credentials of its own: its source camera has them")
        elif self.crop:
            raise ValueError("crop is for zones: give source too")
        return self


class WatchSection(_Section):
    camera: str = Field(..., pattern=CAMERA_NAME_RE, description="The camera the watch looks at.")
    condition: str = Field(..., min_length=1, max_length=300, description="What to watch for, in plain words.")
    on: float = Field(0.7, ge=0, le=1, description="P(yes) at or above which the condition holds.")
    off: float = Field(0.4, ge=0, le=1, description="P(yes) at or below which it no longer holds.")
    confirm: int = Field(2, ge=1, le=20, description="Consecutive evaluations that confirm a change.")
    cooldown_s: float = Field(60.0, ge=0, le=86400, description="Seconds between two 'started' events at least.")
    active_hours: list[int] | None = Field(None, description="[from, to] local hours (to exclusive); none: always.")
    describe: bool = Field(False, description="Follow each 'started' event with a short generated description.")

    @model_validator(mode="after")
    def _thresholds(self) -> WatchSection:
        if self.off >= self.on:
            raise ValueError(f"off ({self.off}) must be below on ({self.on})")
        hours = self.active_hours
        if hours is not None and (len(hours) != 2 or hours[0] == hours[1]
                                  or not (0 <= hours[0] <= 23 and 0 <= hours[1] <= 24)):
            raise ValueError("active_hours must be [from, to]: from 0-23, to 0-24 (exclusive), different")
        return self


DEFAULT_DIGEST_QUESTION = ("Summarize what happened in these frames: who or what came and went, and when. "
                           "Say so plainly if nothing happened.")


class DigestSection(_Section):
    cameras: list[Annotated[str, Field(pattern=CAMERA_NAME_RE)]] = Field(
        ..., min_length=1, max_length=64, description="The cameras the digest summarizes, each answered on its own."
    )
    schedule: str = Field(..., description='When it runs: an interval ("30m", "2h", "1d") or cron ("0 18 * * *"), '
                                           "in model.timezone.")
    question: str = Field(DEFAULT_DIGEST_QUESTION, min_length=1, max_length=500,
                          description="What each camera's range is asked.")
    max_tokens: int = Field(160, ge=1, le=1024, description="Length of each camera's answer.")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value).next_after(0.0, None)  # ScheduleError (a ValueError) says why
        return value


class EventsSection(_Section):
    queue_size: int = Field(256, ge=1, le=100000, description="Events a sink holds while it cannot deliver.")
    describe_tokens: int = Field(48, ge=1, le=512, description="Length of a 'describe' watch's description.")
    max_watches: int = Field(256, ge=1, le=4096, description="Watches at once (config and API).")
    watch_engine_share: float = Field(
        0.5, gt=0, le=1, description="Largest measured share of the engine's time watches may take; watch.add past it is busy."
    )
    webhook_url: str = Field("", description="POST every event as JSON here (http:// or https://); empty: off.")
    webhook_secret_env: str = Field(
        "LIVEWATCH_WEBHOOK_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the HMAC-SHA256 signing secret.",
    )
    webhook_secret_file: str = Field("", description="File holding the signing secret (when the variable is unset).")
    webhook_timeout_s: float = Field(5.0, gt=0, le=120, description="Seconds a webhook request may take.")
    mqtt_url: str = Field("", description="MQTT broker, mqtt://host:1883 or mqtts://host:8883; empty: off.")
    mqtt_username: str = Field("", description="MQTT user name.")
    mqtt_password_env: str = Field(
        "LIVEWATCH_MQTT_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the MQTT password.",
    )
    mqtt_password_file: str = Field("", description="File holding the MQTT password (when the variable is unset).")
    mqtt_topic_prefix: str = Field("livewatch", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Topic prefix.")
    mqtt_discovery_prefix: str = Field(
        "homeassistant", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Home Assistant discovery prefix."
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("webhook_url must be an http:// or https:// URL")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if value:
            from livewatch.watches.mqtt import Broker

            Broker.parse(value)  # ValueError: mqtt://host[:port] or mqtts://, no credentials, no path
        return value


class ClusterSection(_Section):
    backend: Literal["local", "ray"] = Field(
        "local", description="local: this process runs the cameras and the model; ray: camera shards as Ray actors, "
        "one per GPU, behind this process's server (pip install 'livewatch[ray]')."
    )
    address: str = Field(
        "auto", min_length=1, pattern=r"^(auto|[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5})$",
        description="Ray cluster to join: auto (the cluster of this node) or the head's GCS address HOST:PORT.",
    )
    namespace: str = Field(
        "livewatch", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Ray namespace of the shards (one per daemon)."
    )
    shards: int = Field(
        0, ge=0, le=4096, description="Shards to run; 0: one per gpus_per_shard GPUs of the cluster, as nodes come and go."
    )
    gpus_per_shard: float = Field(1.0, gt=0, le=16, description="GPUs each shard reserves (its actor's num_gpus).")
    cpus_per_shard: float = Field(1.0, ge=0, le=256, description="CPUs each shard reserves (capture, JPEG, store).")
    store_dir: str = Field(
        "", description="Frame store every node reaches (a shared directory); required with backend = ray."
    )
    health_interval_s: float = Field(2.0, gt=0, le=60, description="Seconds between two health checks of the shards.")
    shard_timeout_s: float = Field(
        10.0, gt=0, le=600, description="A shard that does not answer a call this long is lost and replaced."
    )
    start_timeout_s: float = Field(
        600.0, gt=0, le=3600, description="Seconds a new shard may take to start (model load, warm-up)."
    )
    rebalance_moves: int = Field(
        2, ge=0, le=1024, description="Cameras moved per health check to even the shards out (0: never move)."
    )

    @model_validator(mode="after")
    def _store(self) -> "ClusterSection":
        if self.backend == "ray" and not self.store_dir:
            raise ValueError("backend = \"ray\" needs store_dir: a directory every node of the cluster reaches")
        return self


class FileConfig(_Section):
    model: ModelSection = ModelSection()
    capture: CaptureSection = CaptureSection()
    memory: MemorySection = MemorySection()
    state: StateSection = StateSection()
    server: ServerSection = ServerSection()
    log: LogSection = LogSection()
    security: SecuritySection = SecuritySection()
    cameras: dict[Annotated[str, Field(pattern=CAMERA_NAME_RE)], CameraSection] = Field(
        default_factory=lambda: {"demo": CameraSection(url=DEMO_CAMERA_URL)},
        description="Cameras by name; without a [cameras] table, the built-in test-pattern camera 'demo'.",
    )
    events: EventsSection = EventsSection()
    cluster: ClusterSection = ClusterSection()
    watches: dict[Annotated[str, Field(pattern=CAMERA_NAME_RE)], WatchSection] = Field(
        default_factory=dict, description="Watches by name: standing yes/no questions delivered as events."
    )
    digests: dict[Annotated[str, Field(pattern=CAMERA_NAME_RE)], DigestSection] = Field(
        default_factory=dict, description="Digests by name: range questions answered and pushed on a schedule."
    )

    @model_validator(mode="after")
    def _zones(self) -> FileConfig:
        for name, cam in self.cameras.items():
            if not cam.source:
                continue
            source = self.cameras.get(cam.source)
            if source is None or source.source:
                raise ValueError(f"cameras.{name}.source: {cam.source!r} is not a camera with a url of this file "
                                 "(a zone is cut from a camera, not from another zone)")
            if self.cluster.backend == "ray":
                raise ValueError(f"cameras.{name}: zones run with cluster.backend = \"local\" only (a zone shares "
                                 "its source's decoder, which a shard would have to own too)")
        return self
