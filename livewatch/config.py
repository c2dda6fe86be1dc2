"""The configuration file, validated once at start.

The pydantic models below mirror ``config.toml`` section by section. Every field has a default, a bound and a
one-line description; unknown keys are errors. ``load_settings`` turns the validated file (plus command-line
overrides and secrets from the environment or files) into a frozen ``Settings`` object, which is never mutated.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from livewatch.capture.urlpolicy import DEFAULT_DENY, UrlPolicy, parse_networks
from livewatch.errors import ConfigError
from livewatch.names import CAMERA_NAME_RE, CAMERA_NAME_RULE, is_camera_name

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
    fused_kernels: Literal["auto", "off"] = Field(
        "auto", description="auto: fused Triton kernels in the GPU decode step (checked at start-up); off: PyTorch."
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


class CaptureSection(_Section):
    fps: float = Field(1.0, gt=0, le=30, description="Frames sampled per second from each camera.")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds to wait for a camera to open.")
    read_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds without data before reconnecting.")
    max_source_pixels: int = Field(
        3840 * 2160, ge=64 * 64, le=16384 * 16384, description="Largest decoded frame a camera may send, in pixels."
    )
    max_source_fps: float = Field(60.0, gt=0, le=240, description="Highest frame rate asked of a generator or webcam.")


class MemorySection(_Section):
    star_frames: int = Field(20, ge=0, le=512, description="Capacity of the star memory in frames (pairs x 2).")
    window_frames: int = Field(20, ge=2, le=512, description="Length of the rolling stream window in frames.")
    importance_threshold: float = Field(0.6, ge=0, le=1, description="Score above which a pair may become a star.")
    star_half_life_s: float = Field(
        600.0, gt=0, le=31536000, description="Age at which a star's importance counts half when competing."
    )
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of stored frames.")
    max_bytes_per_camera: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, le=1 << 40, description="Bound on one camera's stored frames, in bytes."
    )


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
    max_message_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024, description="Largest request message.")
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
    handshake_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Seconds a new connection has to complete its HTTP request or upgrade."
    )
    max_outbound_bytes: int = Field(
        8 * 1024 * 1024, ge=65536, le=1 << 30, description="Replies queued for a client that does not read, in bytes."
    )


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
    url: str = Field(..., min_length=1, description="Camera URL: rtsp(s)://, http(s)://, file path, /dev/videoN, testsrc://.")
    username: str = Field("", description="User name inserted into the URL (kept out of logs).")
    password_env: str = Field("", description="Environment variable holding the camera password.")
    password_file: str = Field("", description="File holding the camera password.")


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


@dataclass(frozen=True)
class Camera:
    """A camera as the daemon uses it: ``url`` carries resolved credentials and must never be logged."""

    name: str
    url: str = field(repr=False)


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
        detail = err["msg"]
        ctx = err.get("ctx") or {}
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
    password = _read_secret(source, what, section.password_env, section.password_file, environ)
    if section.password_env and password is None and not section.password_file:
        raise ConfigError(f"{source}: {what}.password_env: environment variable {section.password_env} is not set")
    url = section.url
    if section.username or password is not None:
        try:
            url = with_credentials(url, section.username, password)
        except ValueError as exc:
            raise ConfigError(f"{source}: {what}.url: {exc}") from exc
    return Camera(name=name, url=url)


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

    data = file_cfg.model_dump()
    if model is not None:
        data["model"]["id"] = model
    if host is not None:
        data["server"]["host"] = host
    if port is not None:
        data["server"]["port"] = port
    if state_dir is not None:
        data["state"]["dir"] = state_dir
    if cameras:
        # Command-line cameras replace the file's cameras: `serve --camera x=URL` watches exactly that camera.
        data["cameras"] = {}
        for text in cameras:
            name, url = parse_camera_override(text)
            data["cameras"][name] = {"url": url}
    cfg = parse_config(data, f"{source} (with command-line overrides)" if data != file_cfg.model_dump() else source)

    if cfg.model.min_pixels > cfg.model.max_pixels:
        raise ConfigError(
            f"{source}: model.min_pixels ({cfg.model.min_pixels}) must not exceed model.max_pixels ({cfg.model.max_pixels})"
        )
    if cfg.model.max_new_tokens > cfg.model.max_new_tokens_limit:
        raise ConfigError(
            f"{source}: model.max_new_tokens ({cfg.model.max_new_tokens}) must not exceed "
            f"model.max_new_tokens_limit ({cfg.model.max_new_tokens_limit})"
        )
    if cfg.memory.window_frames % 2:
        raise ConfigError(f"{source}: memory.window_frames must be even (frames are kept in pairs); got {cfg.memory.window_frames}")
    if bool(cfg.server.tls_cert) != bool(cfg.server.tls_key):
        raise ConfigError(f"{source}: server.tls_cert and server.tls_key must be set together")
    if cfg.memory.star_frames % 2:
        raise ConfigError(f"{source}: memory.star_frames must be even (frames are kept in pairs); got {cfg.memory.star_frames}")

    warnings: list[str] = []
    token = _read_secret(source, "server.token", cfg.server.token_env, cfg.server.token_file, env, warnings)
    if not is_loopback(cfg.server.host) and not token:
        raise ConfigError(
            f"{source}: server.host = {cfg.server.host!r} is not a loopback address, so a token is "
            f"required: set the environment variable {cfg.server.token_env} or server.token_file"
        )
    resolved = tuple(resolve_camera(source, name, cam, env) for name, cam in cfg.cameras.items())
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
    )
