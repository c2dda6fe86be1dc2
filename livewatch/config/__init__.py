"""The configuration file, validated once at start.

The pydantic models in ``sections.py`` mirror ``config.toml`` section by section. Every field has a default, a
bound and a one-line description; unknown keys are errors. ``load_settings`` turns the validated file (plus command-line
overrides and secrets from the environment or files) into a frozen ``Settings`` object, which is never mutated.
"""

from __future__ import annotations

import ipaddress
import math
import os
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from livewatch.capture.masks import NO_MASKS, Masks, parse_masks
from livewatch.capture.source import CaptureParams, SourceLimits
from livewatch.capture.zones import Crop, parse_crop
from livewatch.config.sections import (
    DEFAULT_MODEL_ID,
    DEMO_CAMERA_URL,
    CameraSection,
    CaptureSection,
    ClusterSection,
    DigestSection,
    EventsSection,
    FileConfig,
    LogSection,
    MemorySection,
    ModelSection,
    SecuritySection,
    ServerSection,
    StateSection,
)
from livewatch.engine.scheduling.options import EngineOptions
from livewatch.memory.camera import MemoryParams
from livewatch.watches.events import WatchSpec
from livewatch.watches.store import spec_from_json
from livewatch.errors import ConfigError
from livewatch.names import CAMERA_NAME_RULE, is_camera_name
from livewatch.server.limits import ServerLimits

__all__ = [
    "DEFAULT_MODEL_ID", "DEMO_CAMERA_URL", "Camera", "CameraSection", "CaptureSection", "ClusterSection",
    "DigestSection", "FileConfig",
    "LogSection",
    "MemorySection", "ModelSection", "SecuritySection", "ServerSection", "Settings", "StateSection", "load_settings",
    "parse_config", "read_config_file", "with_credentials",
]


@dataclass(frozen=True)
class Camera:
    """A camera as the daemon uses it: ``url`` carries resolved credentials and must never be logged."""

    name: str
    url: str = field(repr=False)
    masks: Masks = NO_MASKS
    source: str = ""  # a zone: the camera it is cut from (url is then empty)
    crop: Crop | None = None


@dataclass(frozen=True)
class Settings:
    """The resolved configuration: validated file + overrides + secrets. Never mutated."""

    source: str
    model: ModelSection
    capture: CaptureSection
    memory: MemorySection
    server: ServerSection
    log: LogSection
    security: SecuritySection
    state_dir: Path
    cameras: tuple[Camera, ...]
    token: str | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()  # logged by the daemon once logging is set up (e.g. a world-readable token file)
    events: EventsSection = EventsSection()
    watches: dict[str, WatchSpec] = field(default_factory=dict)
    digests: dict[str, DigestSection] = field(default_factory=dict)
    webhook_secret: str | None = field(default=None, repr=False)
    mqtt_password: str | None = field(default=None, repr=False)
    cluster: ClusterSection = ClusterSection()

    # The typed parameters each part takes, so the daemon passes objects, not keyword lists.

    def capture_params(self) -> CaptureParams:
        c = self.capture
        return CaptureParams(c.fps, c.open_timeout_s, c.read_timeout_s,
                             SourceLimits(c.max_source_pixels, c.max_source_fps, c.decoder_threads))

    def server_limits(self) -> ServerLimits:
        srv = self.server
        return ServerLimits(
            max_message_bytes=srv.max_message_bytes, max_question_chars=srv.max_question_chars,
            max_tokens=self.model.max_new_tokens_limit, per_connection=srv.max_inflight_per_connection,
            total=srv.max_inflight_total, outbound_bytes=srv.max_outbound_bytes,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of server.tls_cert/tls_key (None without TLS); ConfigError when they cannot load."""
        srv = self.server
        if not srv.tls_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(srv.tls_cert, srv.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{self.source}: server.tls_cert/tls_key: cannot load: {exc}") from exc
        return ctx

    def memory_params(self, frame_size: Callable[[int, int], tuple[int, int]]) -> MemoryParams:
        m = self.memory
        return MemoryParams(
            star_pairs=m.star_frames // 2, window_pairs=m.window_frames // 2, window_slack=m.window_slack_frames // 2,
            threshold=m.importance_threshold, star_half_life_s=m.star_half_life_s, jpeg_quality=m.jpeg_quality,
            max_bytes=m.max_bytes_per_camera, frame_size=frame_size, min_change_area=m.min_change_area,
            lightning_area=m.lightning_area, stationary_s=m.stationary_s, history_s=m.history_hours * 3600.0,
            history_max_bytes=m.history_max_bytes,
        )

    def engine_options(self) -> EngineOptions:
        m = self.model
        return EngineOptions(
            encode_mode=m.encode_mode, max_queued=self.server.max_inflight_total, slots=m.batch_size,
            max_len=m.max_kv_tokens, cuda_graphs=m.cuda_graphs == "auto", fused_kernels=m.fused_kernels == "auto",
            warm_up=m.warm_up, encode_batch=m.encode_batch, encode_step_tokens=m.encode_step_tokens,
            watch_batch=m.watch_batch,
            encode_gather_s=m.encode_gather_s,
            lag_warning_s=m.encode_lag_warning_s,
        )


def _format_validation_error(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            allowed = ", ".join(sorted(parent.model_fields)) if parent else "see config.toml"
            lines.append(f"  {loc}: unknown key (allowed here: {allowed})")
            continue
        detail = err["msg"].removeprefix("Value error, ")
        ctx = err.get("ctx") or {}
        if kind == "value_error" and isinstance(err["input"], dict):  # a rule across keys of a section
            lines.append(f"  {loc}: {detail}")
            continue
        if "expected" in ctx:
            detail += f" (allowed: {ctx['expected']})"
        elif "pattern" in ctx and loc.startswith("cameras"):
            detail = CAMERA_NAME_RULE
        lines.append(f"  {loc}: {detail}; got {err['input']!r}")
    return "\n".join(lines)


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = FileConfig
    for i, part in enumerate(loc):
        if model is FileConfig and part == "cameras":
            if i + 1 < len(loc):
                model = CameraSection
                break
            return None
        info = model.model_fields.get(str(part))
        if info is None or not isinstance(info.annotation, type) or not issubclass(info.annotation, BaseModel):
            return None
        model = info.annotation
    return model


def parse_config(data: dict[str, Any], source: str) -> FileConfig:
    """Validate a parsed TOML document; errors name the file, the key and the allowed values."""
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from exc


def read_config_file(path: Path) -> FileConfig:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path))


# A right token is always accepted, however many wrong ones its address sent (so a guesser cannot lock its owners
# out), so the token's own strength is what stops guessing: 64 bits at 10,000 guesses a second (more than the HTTP
# layer serves) take ~29 million years on average. `openssl rand -hex 16` has 128 bits (the estimate says ~118).
MIN_TOKEN_BITS = 64


def token_bits(token: str) -> float:
    """A generous estimate of a token's strength: its length times log2 of the distinct characters it uses
    ('0123456789abcdef': 64 bits; a random 32-character hex token, 128 bits of entropy, ~118; a random
    16-character one usually repeats characters and scores ~50; 'aaaaaaaaaaaaaaaa': 0). It cannot tell a random token from a
    chosen phrase of the same letters: it catches short and repetitive tokens, not every weak one."""
    return len(token) * math.log2(len(set(token))) if token else 0.0


def _read_secret(
    source: str, what: str, env_name: str, file_name: str, environ: dict[str, str], warnings: list[str] | None = None
) -> str | None:
    if env_name and environ.get(env_name):
        return environ[env_name].strip()
    if file_name:
        path = Path(os.path.expandvars(file_name))
        try:
            value = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(f"{source}: {what}: cannot read secret file {file_name!r}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: {what}: secret file {file_name!r} is not UTF-8 text") from exc
        if mode & 0o077 and warnings is not None:
            warnings.append(
                f"{what}: secret file {file_name!r} is readable by group or others (mode {mode & 0o777:o}); "
                f"chmod 600 it"
            )
        if not value:
            raise ConfigError(f"{source}: {what}: secret file {file_name!r} is empty")
        return value
    return None


def with_credentials(url: str, username: str, password: str | None) -> str:
    """Insert ``username:password@`` into a network URL (percent-encoded)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("credentials can only be added to a URL with a host")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    userinfo = quote(username, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{userinfo}@{netloc}", parts.path, parts.query, parts.fragment))


def resolve_camera(source: str, name: str, section: CameraSection, environ: dict[str, str]) -> Camera:
    what = f"cameras.{name}"
    if section.source:
        return Camera(name=name, url="", masks=parse_masks(section.masks), source=section.source,
                      crop=parse_crop(section.crop))
    password = _read_secret(source, what, section.password_env, section.password_file, environ)
    if section.password_env and password is None and not section.password_file:
        raise ConfigError(f"{source}: {what}.password_env: environment variable {section.password_env} is not set")
    url = section.url
    if section.username or password is not None:
        try:
            url = with_credentials(url, section.username, password)
        except ValueError as exc:
            raise ConfigError(f"{source}: {what}.url: {exc}") from exc
    return Camera(name=name, url=url, masks=parse_masks(section.masks))


def parse_camera_override(text: str) -> tuple[str, str]:
    """Parse a ``NAME=URL`` command-line camera."""
    name, sep, url = text.partition("=")
    if not sep or not url:
        raise ConfigError(f"--camera {text!r}: expected NAME=URL")
    if not is_camera_name(name):
        raise ConfigError(f"--camera {name!r}: {CAMERA_NAME_RULE}")
    return name, url


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_state_dir(environ: dict[str, str]) -> Path:
    if environ.get("STATE_DIRECTORY"):
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    home = environ.get("HOME") or str(Path.home())
    base = environ.get("XDG_STATE_HOME") or str(Path(home) / ".local" / "state")
    return Path(base) / "livewatch"


def _with_overrides(data: dict[str, Any], *, model: str | None, host: str | None, port: int | None,
                    state_dir: str | None, cameras: list[str] | None) -> dict[str, Any]:
    """The file's values with the command line's on top (validated afterwards like the file's)."""
    for section, key, value in (("model", "id", model), ("server", "host", host), ("server", "port", port),
                                ("state", "dir", state_dir)):
        if value is not None:
            data[section][key] = value
    if cameras:
        # Command-line cameras replace the file's cameras: `serve --camera x=URL` watches exactly that camera.
        data["cameras"] = {name: {"url": url} for name, url in map(parse_camera_override, cameras)}
    return data


def load_settings(
    path: Path | None = None,
    *,
    model: str | None = None,
    cameras: list[str] | None = None,
    host: str | None = None,
    port: int | None = None,
    state_dir: str | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Read, validate and resolve the configuration. Overrides are validated like the file's values."""
    env = dict(os.environ if environ is None else environ)
    if path is None:
        file_cfg, source = FileConfig(), "<built-in defaults>"
    else:
        file_cfg, source = read_config_file(path), str(path)

    data = _with_overrides(file_cfg.model_dump(), model=model, host=host, port=port, state_dir=state_dir,
                           cameras=cameras)
    cfg = parse_config(data, f"{source} (with command-line overrides)" if data != file_cfg.model_dump() else source)

    warnings: list[str] = []
    token = _read_secret(source, "server.token", cfg.server.token_env, cfg.server.token_file, env, warnings)
    if token and token_bits(token) < MIN_TOKEN_BITS:
        raise ConfigError(
            f"{source}: server.token (from {cfg.server.token_env} or server.token_file) is too weak to guard the "
            f"daemon: about {token_bits(token):.0f} bits, {MIN_TOKEN_BITS} needed (a right token is never refused, "
            f"so its length is what stops guessing). Make one with: openssl rand -hex 16"
        )
    if not is_loopback(cfg.server.host) and not token:
        raise ConfigError(
            f"{source}: server.host = {cfg.server.host!r} is not a loopback address, so a token is "
            f"required: set the environment variable {cfg.server.token_env} or server.token_file"
        )
    resolved = tuple(resolve_camera(source, name, cam, env) for name, cam in cfg.cameras.items())
    watches = {}
    for name, section in cfg.watches.items():
        try:
            watches[name] = spec_from_json(name, section.model_dump())
        except ValueError as exc:
            raise ConfigError(f"{source}: watches.{name}: {exc}") from None
    ev = cfg.events
    webhook_secret = _read_secret(source, "events.webhook_secret", ev.webhook_secret_env, ev.webhook_secret_file,
                                  env, warnings)
    if ev.webhook_url and not webhook_secret:
        raise ConfigError(f"{source}: events.webhook_url is set, so a signing secret is required: set "
                          f"{ev.webhook_secret_env} or events.webhook_secret_file")
    mqtt_password = _read_secret(source, "events.mqtt_password", ev.mqtt_password_env, ev.mqtt_password_file, env,
                                 warnings)
    state = Path(os.path.expanduser(cfg.state.dir)) if cfg.state.dir else default_state_dir(env)
    return Settings(
        source=source,
        model=cfg.model,
        capture=cfg.capture,
        memory=cfg.memory,
        server=cfg.server,
        log=cfg.log,
        security=cfg.security,
        state_dir=state,
        cameras=resolved,
        token=token,
        warnings=tuple(warnings),
        events=cfg.events,
        watches=watches,
        digests=dict(cfg.digests),
        webhook_secret=webhook_secret,
        mqtt_password=mqtt_password,
        cluster=cfg.cluster,
    )
