"""Placement of cameras on shards (pure), the shard's measured load, the cluster's configuration, and the
single-machine path staying free of Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livewatch.cluster import prepare_ray_environment
from livewatch.cluster.placement import Placement
from livewatch.cluster.shard import EncodeLoad
from livewatch.config import load_settings
from livewatch.errors import ConfigError
from media import free_port


def placed(p: Placement) -> dict[str, list[str]]:
    return {s: sorted(v.cameras) for s, v in p.shards.items()}


def test_new_cameras_spread_before_any_load_is_measured_then_follow_the_load() -> None:
    p = Placement()
    for shard in ("s0", "s1"):
        p.add_shard(shard)
    for camera in "abcd":
        p.add_camera(camera)
        target = p.choose()
        assert target is not None
        p.assign(camera, target, 0.0)
    assert placed(p) == {"s0": ["a", "c"], "s1": ["b", "d"]}
    # s0's two cameras cost 0.6 of its time, s1's two 0.2: the next cameras go to s1 until its estimate catches up
    p.report("s0", 0.6, {"a", "c"}, 100.0)
    p.report("s1", 0.2, {"b", "d"}, 100.0)
    assert p.camera_cost() == pytest.approx(0.2)
    for camera in "ef":
        p.add_camera(camera)
        p.assign(camera, p.choose() or "", 0.0)
    assert placed(p)["s1"] == ["b", "d", "e", "f"]
    assert p.estimate("s1") == pytest.approx(0.6)


def test_a_lost_shard_leaves_its_cameras_waiting_and_they_go_to_the_survivor() -> None:
    p = Placement()
    p.add_shard("s0")
    p.add_shard("s1")
    for camera, shard in (("a", "s0"), ("b", "s1"), ("c", "s0")):
        p.add_camera(camera)
        p.assign(camera, shard, 0.0)
    assert p.remove_shard("s0") == ["a", "c"]
    assert p.waiting() == ["a", "c"] and p.owner["b"] == "s1"
    assert p.choose() == "s1"
    assert p.remove_shard("s1") == ["b"] and p.choose() is None
    assert p.remove_shard("s9") == []


def test_moves_even_a_new_shard_out_a_few_at_a_time_and_never_churn() -> None:
    p = Placement()
    p.add_shard("s0")
    for i in range(6):
        p.add_camera(f"c{i}")
        p.assign(f"c{i}", "s0", 0.0)
    p.add_shard("s1")
    first = p.moves(2, 200.0)
    assert len(first) == 2 and all(src == "s0" and dst == "s1" for _, src, dst in first)
    for camera, _, dst in first:
        p.assign(camera, dst, 0.0)
    second = p.moves(5, 200.0)
    for camera, _, dst in second:
        p.assign(camera, dst, 0.0)
    assert sorted(len(v) for v in placed(p).values()) == [3, 3]
    assert p.moves(5, 200.0) == []  # balanced: nothing moves
    assert p.moves(0, 200.0) == []


def test_moves_follow_the_measured_load() -> None:
    p = Placement()
    for shard in ("s0", "s1"):
        p.add_shard(shard)
    for camera, shard in (("a", "s0"), ("b", "s0"), ("c", "s1"), ("d", "s1")):
        p.add_camera(camera)
        p.assign(camera, shard, 0.0)
    p.report("s0", 0.8, {"a", "b"}, 100.0)  # 0.4 a camera
    p.report("s1", 0.1, {"c", "d"}, 100.0)
    moves = p.moves(4, 200.0)
    assert moves and moves[0][1:] == ("s0", "s1")
    assert p.moves(4, 230.0) == []  # the measurements have not seen that move yet
    p.report("s0", 0.4, {"a", "b"}, 300.0)
    p.report("s1", 0.4, {"c", "d"}, 300.0)
    assert p.moves(4, 300.0) == []  # equal counts and loads


def test_a_camera_placed_within_the_load_window_counts_at_the_estimated_cost() -> None:
    p = Placement(window=60.0)
    p.add_shard("s0")
    p.add_shard("s1")
    for camera, shard in (("a", "s0"), ("b", "s1")):
        p.add_camera(camera)
        p.assign(camera, shard, 0.0)
    p.report("s0", 0.5, {"a"}, 100.0)
    p.report("s1", 0.5, {"b"}, 100.0)
    p.add_camera("c")
    p.assign("c", "s0", 110.0)
    p.report("s0", 0.5, {"a", "c"}, 120.0)  # c runs, but the last minute's load hardly holds it yet
    assert p.estimate("s0") == pytest.approx(1.0) and p.choose() == "s1"
    p.report("s0", 1.0, {"a", "c"}, 180.0)
    assert p.shards["s0"].unmeasured == set() and p.estimate("s0") == pytest.approx(1.0)


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.integers(1, 4))
def test_moves_never_widen_the_count_gap(assignment: list[int], shards: int) -> None:
    p = Placement()
    for s in range(shards):
        p.add_shard(f"s{s}")
    for i, s in enumerate(assignment):
        p.add_camera(f"c{i}")
        p.assign(f"c{i}", f"s{s % shards}", 0.0)
    before = [len(v.cameras) for v in p.shards.values()]
    for camera, src, dst in p.moves(100, 200.0):
        assert p.owner[camera] == src
        p.assign(camera, dst, 0.0)
    after = [len(v.cameras) for v in p.shards.values()]
    assert max(after) - min(after) <= max(1, max(before) - min(before))
    assert sum(after) == len(assignment)
    if shards > 1:
        assert max(after) - min(after) <= 1


def test_encode_load_is_encode_seconds_per_second_over_its_window() -> None:
    now = [100.0]
    load = EncodeLoad(window=10.0, clock=lambda: now[0])
    assert load.busy() == 0.0
    now[0] = 110.0
    for _ in range(5):
        load.add(0.5)
    assert load.busy() == pytest.approx(0.25)
    now[0] = 125.0  # those encodes left the window
    assert load.busy() == 0.0


def test_cluster_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nbackend = "ray"\n')
    with pytest.raises(ConfigError, match="store_dir"):
        load_settings(cfg, environ={})
    cfg.write_text('[cluster]\nbackend = "ray"\nstore_dir = "/srv/store"\nshards = 3\nhealth_interval_s = 0\n')
    with pytest.raises(ConfigError, match="cluster.health_interval_s"):
        load_settings(cfg, environ={})
    cfg.write_text('[cluster]\nbackend = "ray"\nstore_dir = "/srv/store"\ngpus_per_shard = 0.5\n')
    s = load_settings(cfg, environ={})
    assert s.cluster.backend == "ray" and s.cluster.gpus_per_shard == 0.5 and s.cluster.address == "auto"
    cfg.write_text('[cluster]\nbackend = "ray"\nstore_dir = "/srv/store"\naddress = "ray://head:10001"\n')
    with pytest.raises(ConfigError, match="cluster.address"):  # Ray Client cannot stream from actors
        load_settings(cfg, environ={})
    cfg.write_text('[cluster]\nbackend = "kubernetes"\n')
    with pytest.raises(ConfigError, match="cluster.backend"):
        load_settings(cfg, environ={})
    assert load_settings(None, environ={}).cluster.backend == "local"


def test_ray_environment_turns_token_auth_on_only_with_a_token(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env: dict[str, str] = {}
    prepare_ray_environment(env)
    assert env == {"RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1"}
    env = {"RAY_AUTH_TOKEN_PATH": "/etc/livewatch/ray-token"}
    prepare_ray_environment(env)
    assert env["RAY_AUTH_MODE"] == "token"
    env = {"RAY_AUTH_TOKEN": "x", "RAY_AUTH_MODE": "disabled", "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "0"}
    prepare_ray_environment(env)
    assert env["RAY_AUTH_MODE"] == "disabled" and env["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] == "0"


def test_the_single_machine_path_never_imports_ray(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A daemon started and stopped on the default backend, the CLI's config check, the client: no Ray."""
    code = (
        "import asyncio, sys\n"
        "from livewatch import cli, client, daemon\n"
        "from livewatch.config import load_settings\n"
        "s = load_settings(None, model=sys.argv[2], state_dir=sys.argv[1], port=int(sys.argv[3]),\n"
        "                  environ={})\n"
        "d = daemon.Daemon(s)\n"
        "async def main():\n"
        "    await d.startup()\n"
        "    await d.shutdown()\n"
        "asyncio.run(main())\n"
        "assert cli.main(['check-config']) == 0\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray was imported'\n"
        "assert not [m for m in sys.modules if m.startswith('livewatch.cluster')]\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "state"), str(tiny_model_dir),
                          str(free_port())],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]


def test_a_shards_errors_reach_the_front_as_public_errors_only() -> None:
    import pickle

    from livewatch.cluster.ray_backend import public_cause
    from livewatch.errors import CameraError, EngineError, ErrorCode, RequestError

    again = pickle.loads(pickle.dumps(RequestError(ErrorCode.NO_FRAMES, "no frames yet")))
    assert again.code is ErrorCode.NO_FRAMES and str(again) == "no frames yet"  # Ray pickles a shard's errors
    copied = public_cause(RequestError(ErrorCode.UNKNOWN_CAMERA, "no camera named 'x'"), "memory_frames")
    assert isinstance(copied, RequestError) and copied.code is ErrorCode.UNKNOWN_CAMERA
    assert isinstance(public_cause(CameraError("bad URL"), "attach"), CameraError)
    oom = public_cause(EngineError("out of memory", out_of_memory=True), "ask")
    assert isinstance(oom, EngineError) and oom.out_of_memory
    hidden = public_cause(KeyError("/srv/secret/path on 10.0.0.7"), "evidence")
    assert isinstance(hidden, RuntimeError) and "secret" not in str(hidden) and "KeyError" in str(hidden)
    assert "unknown" in str(public_cause(None, "status"))


def test_the_ray_node_unit_verifies_and_keeps_the_daemons_network_hardening(tmp_path: Path) -> None:
    import re
    import shutil

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    root = Path(__file__).resolve().parent.parent
    unit = (root / "systemd" / "livewatch-ray.service").read_text()
    target = tmp_path / "livewatch-ray.service"
    target.write_text(unit.replace("/opt/livewatch/.venv/bin/ray", str(Path(sys.executable).parent / "ray")))
    out = subprocess.run(["systemd-analyze", "verify", str(target)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    daemon_unit = (root / "systemd" / "livewatch.service").read_text()
    deny = re.search(r"^IPAddressDeny=.*$", daemon_unit, re.M)
    assert deny and deny.group(0) in unit  # the kernel's last word on link-local addresses, on the shards too
    for needed in ("User=livewatch", "RAY_AUTH_MODE=token", "ray start --block", "DevicePolicy=closed",
                   "ProtectSystem=strict", "NoNewPrivileges=yes", "UMask=0077"):
        assert needed in unit
    rated = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(target)],
                           capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", rated.stdout)
    assert m and float(m.group(1)) <= 4.2, rated.stdout[-800:]
