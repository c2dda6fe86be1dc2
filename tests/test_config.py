from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from livewatch.config.sections import CameraSection, DigestSection, WatchSection
from livewatch.config import DEFAULT_MODEL_ID, FileConfig, load_settings, with_credentials
from livewatch.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_config_loads_with_documented_defaults(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "config.toml", environ={"HOME": str(tmp_path)})
    assert settings.model.id == DEFAULT_MODEL_ID
    assert settings.model.max_pixels == 100352
    assert settings.capture.fps == 1.0
    assert settings.memory.star_frames == 20
    assert settings.memory.window_frames == 20
    assert settings.memory.importance_threshold == 0.6
    assert settings.server.host == "127.0.0.1"
    assert [c.name for c in settings.cameras] == ["demo"]
    assert settings.cameras[0].url.startswith("testsrc://")
    assert settings.state_dir == tmp_path / ".local" / "state" / "livewatch"


def test_shipped_config_documents_and_sets_every_key() -> None:
    """Every key the validator knows appears in config.toml with its default and a comment right above it."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    defaults = FileConfig().model_dump()
    for section, fields in defaults.items():
        if section in ("cameras", "watches", "digests"):  # tables of named entries: their keys are in comments
            continue
        assert set(data[section]) == set(fields), f"[{section}] keys differ from the schema"
        for key, value in fields.items():
            assert data[section][key] == value, f"{section}.{key}: config.toml shows a value that is not the default"
            block = text.split(f"[{section}]", 1)[1]
            m = re.search(rf"((?:^#.*\n)+){re.escape(key)} = ", block, re.M)
            assert m, f"{section}.{key} has no comment above it"
    for key in CameraSection.model_fields:
        assert re.search(rf"^#\s+{key}\s+\S", text, re.M), f"camera key {key} is not documented"
    for key in WatchSection.model_fields:
        assert re.search(rf"^#\s+{key}\s+\S", text, re.M), f"watch key {key} is not documented"
    for key in DigestSection.model_fields:
        assert re.search(rf"^#\s+{key}\s+\S", text, re.M), f"digest key {key} is not documented"


def test_unknown_key_names_key_file_and_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "[model]\nmax_pixel = 5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    msg = str(err.value)
    assert str(path) in msg
    assert "model.max_pixel: unknown key" in msg
    assert "max_pixels" in msg  # allowed keys are listed


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"modle: unknown key \(allowed here: .*model"):
        load_settings(write(tmp_path, "[modle]\nid = 'x'\n"), environ={})


def test_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.port: .*integer.*'eighty'"):
        load_settings(write(tmp_path, "[server]\nport = 'eighty'\n"), environ={})


def test_out_of_range_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"memory\.importance_threshold: .*less than or equal to 1.*1\.5"):
        load_settings(write(tmp_path, "[memory]\nimportance_threshold = 1.5\n"), environ={})


def test_enum_lists_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model\.encode_mode: .*allowed: 'lazy' or 'eager'"):
        load_settings(write(tmp_path, "[model]\nencode_mode = 'sometimes'\n"), environ={})


def test_cross_field_and_pair_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_pixels"):
        load_settings(write(tmp_path, "[model]\nmin_pixels = 200000\n"), environ={})
    with pytest.raises(ConfigError, match="window_frames must be even"):
        load_settings(write(tmp_path, "[memory]\nwindow_frames = 21\n"), environ={})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[model\n"), environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_unknown_timezone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Base'"):
        load_settings(write(tmp_path, "[model]\ntimezone = 'Mars/Base'\n"), environ={})


def test_token_from_environment_then_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file-0123456789abcdef\n")
    path = write(tmp_path, f"[server]\ntoken_env = 'MY_TOKEN'\ntoken_file = '{token_file}'\n")
    assert load_settings(path, environ={"MY_TOKEN": "from-env-0123456789abcdef"}).token == "from-env-0123456789abcdef"
    assert load_settings(path, environ={}).token == "from-file-0123456789abcdef"
    assert "from-file" not in repr(load_settings(path, environ={}))


def test_camera_password_from_environment_is_url_encoded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[cameras.door]\nurl = 'rtsp://10.0.0.5:554/s1'\nusername = 'viewer'\npassword_env = 'DOOR_PW'\n",
    )
    settings = load_settings(path, environ={"DOOR_PW": "p@ss:w/rd"})
    assert settings.cameras[0].url == "rtsp://viewer:p%40ss%3Aw%2Frd@10.0.0.5:554/s1"
    assert "p%40ss" not in repr(settings)
    with pytest.raises(ConfigError, match="DOOR_PW is not set"):
        load_settings(path, environ={})


def test_bad_camera_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="camera names are"):
        load_settings(write(tmp_path, "[cameras.'bad name']\nurl = 'testsrc://'\n"), environ={})


def test_overrides_are_validated_and_replace_cameras(tmp_path: Path) -> None:
    settings = load_settings(
        ROOT / "config.toml", model="/models/x", cameras=["porch=rtsp://h/s"], port=9000, environ={}
    )
    assert settings.model.id == "/models/x"
    assert [(c.name, c.url) for c in settings.cameras] == [("porch", "rtsp://h/s")]
    assert settings.server.port == 9000
    with pytest.raises(ConfigError, match="server.port"):
        load_settings(ROOT / "config.toml", port=70000, environ={})
    with pytest.raises(ConfigError, match="expected NAME=URL"):
        load_settings(ROOT / "config.toml", cameras=["porch"], environ={})


def test_state_dir_from_systemd(tmp_path: Path) -> None:
    assert load_settings(None, environ={"STATE_DIRECTORY": "/var/lib/livewatch:/x"}).state_dir == Path("/var/lib/livewatch")


def test_with_credentials_ipv6() -> None:
    assert with_credentials("rtsp://[::1]:8554/a", "u", "p") == "rtsp://u:p@[::1]:8554/a"


def test_security_section_is_validated(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "config.toml", environ={})
    policy = settings.security.url_policy()
    assert policy.api_schemes == frozenset({"rtsp", "rtsps", "http", "https"})
    with pytest.raises(ConfigError, match=r"security\.deny_networks: .*not a network"):
        load_settings(write(tmp_path, "[security]\ndeny_networks = ['10.0.0.0/33']\n"), environ={})
    with pytest.raises(ConfigError, match=r"security\.api_schemes\.0: .*'rtsp'"):
        load_settings(write(tmp_path, "[security]\napi_schemes = ['gopher']\n"), environ={})
    custom = load_settings(write(tmp_path, "[security]\nallow_networks = ['192.168.1.0/24']\n"), environ={})
    assert [str(n) for n in custom.security.url_policy().allow] == ["192.168.1.0/24"]


def test_non_loopback_bind_without_a_token_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a loopback address, so a token is required"):
        load_settings(ROOT / "config.toml", host="0.0.0.0", environ={})
    strong = "5f0c2a9e41d7b3c86e2f9a0d4b7c1e3a"
    assert load_settings(ROOT / "config.toml", host="0.0.0.0", environ={"LIVEWATCH_TOKEN": strong}).token == strong


@pytest.mark.parametrize("weak", ["t", "s3cret-token", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababababab"])
def test_a_token_too_weak_to_stop_guessing_is_a_config_error(weak: str) -> None:
    # the right token is never refused, however many wrong ones came from its address: its length stops guessing
    with pytest.raises(ConfigError, match="server.token .* too weak .* openssl rand -hex 16") as info:
        load_settings(ROOT / "config.toml", environ={"LIVEWATCH_TOKEN": weak})
    assert len(weak) < 3 or weak not in str(info.value)  # the token itself is never echoed
    assert load_settings(ROOT / "config.toml", environ={"LIVEWATCH_TOKEN": "0123456789abcdef"}).token  # 64 bits


def test_a_token_file_readable_by_others_gives_a_warning(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-0123456789abcdef\n")
    token.chmod(0o644)
    path = write(tmp_path, f"[server]\ntoken_file = '{token}'\n")
    settings = load_settings(path, environ={})
    assert settings.token == "s3cret-0123456789abcdef" and len(settings.warnings) == 1 and "chmod 600" in settings.warnings[0]
    assert "s3cret" not in settings.warnings[0]
    token.chmod(0o600)
    assert load_settings(path, environ={}).warnings == ()


def test_camera_names_must_match_whole(tmp_path: Path) -> None:
    from livewatch.names import is_camera_name

    assert is_camera_name("door-1.cam_2") and not is_camera_name("demo\n") and not is_camera_name("a" * 65)
    with pytest.raises(ConfigError, match="camera names are"):
        load_settings(ROOT / "config.toml", cameras=["demo\n=testsrc://"], environ={})


def test_watches_and_event_sinks_from_the_config(tmp_path: Path) -> None:
    ok = write(tmp_path, '[watches.door]\ncamera = "demo"\ncondition = "a person at the door"\n'
                         'active_hours = [22, 6]\ndescribe = true\n'
                         '[events]\nwebhook_url = "https://hooks.example/lw"\nwebhook_secret_env = "HOOK"\n')
    settings = load_settings(ok, environ={"HOOK": "s3cret"})
    spec = settings.watches["door"]
    assert (spec.camera, spec.active_hours, spec.describe, spec.on, spec.off) == ("demo", (22, 6), True, 0.7, 0.4)
    assert settings.webhook_secret == "s3cret" and "s3cret" not in repr(settings)
    for bad, message in (
        ('[watches.door]\ncamera = "demo"\ncondition = "x"\non = 0.3\noff = 0.5\n', r"off \(0.5\) must be below on"),
        ('[watches.door]\ncamera = "demo"\ncondition = "x\\u0007"\n', "control character"),
        ('[watches."bad name"]\ncamera = "demo"\ncondition = "x"\n', "watches"),
        ('[events]\nwebhook_url = "https://h.example/"\n', "signing secret is required"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_settings(write(tmp_path, bad), environ={})


def test_digests_are_checked(tmp_path: Path) -> None:
    ok = load_settings(write(tmp_path, '[digests.evening]\ncameras = ["demo"]\nschedule = "0 18 * * *"\n'), environ={})
    assert ok.digests["evening"].schedule == "0 18 * * *" and ok.digests["evening"].max_tokens == 160
    for body, message in [('cameras = ["demo"]\nschedule = "0 25 * * *"\n', "hour: '25' is outside 0-23"),
                          ('cameras = []\nschedule = "1h"\n', "digests.evening.cameras"),
                          ('cameras = ["demo"]\nschedule = "1h"\nquestion = ""\n', "digests.evening.question"),
                          ('cameras = ["demo"]\n', "digests.evening.schedule")]:
        with pytest.raises(ConfigError, match=message):
            load_settings(write(tmp_path, "[digests.evening]\n" + body), environ={})
