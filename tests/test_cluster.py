"""Camera shards on a real local Ray cluster started by the test run: ``ray start`` on loopback with declared GPUs
(the CPU runs them), token authentication on, a real front daemon (``livewatch serve``, cluster.backend = "ray"),
the tiny checkpoint on every shard, real test-pattern cameras and a real WebSocket client.

Ray stays out of the pytest process: the cluster is driven with the ``ray`` command, and a shard is killed by a
small driver process (``ray.kill``) that waits for the word on its stdin, so the kill lands while an answer streams.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect as sync_connect

from daemon_helpers import DaemonProcess
from media import free_port, wait_until

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).parent / "ray"
CAMERA = 'url = "testsrc://?size=320x240&rate=10"\n'

_KILLER = """
import sys
import ray
ray.init(address=sys.argv[1], namespace=sys.argv[2], log_to_driver=False)
shards = {name: ray.get_actor(name) for name in sys.argv[3:]}
print("ready", flush=True)
for line in sys.stdin:
    ray.kill(shards[line.strip()], no_restart=True)
    print("killed", flush=True)
"""


class RayCluster:
    """A head node (and more nodes) on loopback, stopped with ``ray stop --force``."""

    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="lwray", dir="/tmp"))  # short: Ray's socket paths have a limit
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    "RAY_USAGE_STATS_ENABLED": "0"}

    def _ray(self, *args: str) -> None:
        out = subprocess.run([str(RAY), *args], env=self.env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    def start_head(self, gpus: int) -> None:
        self._ray("start", "--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1",
                  "--num-gpus", str(gpus), "--num-cpus", "4", "--include-dashboard=false", "--disable-usage-stats",
                  "--temp-dir", str(self.temp))

    def add_node(self, gpus: int) -> None:
        self._ray("start", "--address", self.address, "--node-ip-address", "127.0.0.1", "--num-gpus", str(gpus),
                  "--num-cpus", "2")

    def killer(self, namespace: str, *actors: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _KILLER, self.address, namespace, *actors], env=self.env,
                                text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    def stop(self) -> None:
        """This cluster's processes only (``ray stop`` would end every Ray process of the machine): those that
        name the cluster's temporary directory on their command line, and their children (the agents rename
        themselves)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in processes(str(self.temp).encode()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        shutil.rmtree(self.temp, ignore_errors=True)

    def kill_node(self, node_id: str) -> None:
        """A node lost at once: its raylet and everything under it killed (SIGKILL)."""
        found = processes(f"--node_id={node_id}".encode())
        assert found, f"no raylet for node {node_id}"
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def processes(marker: bytes) -> set[int]:
    """The processes whose command line holds ``marker``, and all their descendants."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if marker in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    while more := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= more
    return found - {os.getpid()}


@pytest.fixture()
def cluster():
    c = RayCluster()
    try:
        yield c
    finally:
        c.stop()


def request(ws, message: dict) -> list[dict]:
    """Send one request; every reply to it up to its last (answer, error or a one-reply request)."""
    ws.send(json.dumps(message))
    replies = []
    while True:
        reply = json.loads(ws.recv(timeout=60))
        if reply.get("id") != message["id"]:
            continue
        replies.append(reply)
        if reply["type"] not in ("token", "find.progress"):
            return replies


def status(ws) -> dict:
    return request(ws, {"type": "status", "id": f"s{time.monotonic()}"})[-1]


@pytest.mark.timeout(1800)  # about 40 s alone; shards starting four times take minutes on a loaded 2-core machine
def test_shards_spread_answer_survive_a_kill_and_take_new_cameras(cluster: RayCluster, tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    cluster.start_head(gpus=2)
    config = (
        '[security]\napi_schemes = ["testsrc"]\n[capture]\nfps = 2.0\n'
        '[memory]\nwindow_frames = 6\nstar_frames = 60\nimportance_threshold = 0.0\n'  # no star is displaced
        f'[cluster]\nbackend = "ray"\naddress = "{cluster.address}"\nnamespace = "lwtest"\n'
        f'store_dir = "{tmp_path / "store"}"\nhealth_interval_s = 0.5\nshard_timeout_s = 10.0\n'
        f'[cameras.a]\n{CAMERA}[cameras.b]\n{CAMERA}'
    )
    d = DaemonProcess(tmp_path, tiny_model_dir, config, env={"RAY_AUTH_TOKEN": cluster.env["RAY_AUTH_TOKEN"]})
    try:
        d.start(wait=False)  # two shards load the model and warm up: on a loaded 2-core machine, minutes
        d.wait_healthy(300)
        with sync_connect(d.url) as ws:
            # healthy once a camera streams: the other shard may still be loading its model on a loaded machine,
            # and both cameras may start on the first shard up, one moving when the other joins (a rebalance)
            def spread() -> bool:
                c = status(ws)["cluster"]
                return (len(c["shards"]) == 2 and all(s["state"] == "up" for s in c["shards"].values())
                        and len(set(c["placement"].values())) == 2)

            wait_until(spread, 300, interval=0.5)
            st = status(ws)
            shards = st["cluster"]["shards"]
            assert len(shards) == 2 and all(s["state"] == "up" for s in shards.values())
            placement = st["cluster"]["placement"]
            assert sorted(placement) == ["a", "b"] and placement["a"] != placement["b"]  # one camera per shard

            # questions through the front, tokens streamed from each shard
            wait_until(lambda: all(m.get("unique_frames", 0) >= 2 for m in status(ws)["memory"].values())
                       and len(status(ws)["memory"]) == 2, 180, interval=0.5)
            for camera in ("a", "b"):
                replies = request(ws, {"type": "ask", "id": f"q-{camera}", "camera": camera,
                                       "question": "What is there?", "max_tokens": 16})
                assert replies[-1]["type"] == "answer", replies[-1]
                assert any(r["type"] == "token" for r in replies[:-1])
                assert "".join(r["text"] for r in replies[:-1]) == replies[-1]["text"]

            # the OpenAI endpoint streams from a shard too; find searches both shards; a frame comes from its shard
            import openai

            client = openai.OpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key="-", max_retries=0, timeout=60)
            chunks = list(client.chat.completions.create(
                model="b", messages=[{"role": "user", "content": "What is there?"}], max_tokens=16, stream=True))
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            found = request(ws, {"type": "find", "id": "f", "query": "a test pattern", "since": "-1h", "top": 8})
            assert found[-1]["type"] == "find.result", found[-1]
            assert {m["camera"] for m in found[-1]["moments"]} == {"a", "b"}
            assert found[-2]["type"] == "find.progress" and found[-2]["done"] == found[-2]["total"] > 0
            moment = found[-1]["moments"][0]
            with urllib.request.urlopen(f"http://127.0.0.1:{d.port}{moment['frame_url']}", timeout=10) as r:
                assert r.read()[:2] == b"\xff\xd8"
            # a watch: evaluated by camera b's shard, its event decided and delivered by the front
            with sync_connect(d.url) as events:
                events.send(json.dumps({"type": "watch.subscribe", "id": "sub"}))
                added = request(ws, {"type": "watch.add", "id": "w", "name": "anything", "camera": "b",
                                     "condition": "something is visible", "on": 0.001, "off": 0.0, "confirm": 1})
                assert added[-1]["type"] == "watch.added", added[-1]
                while (event := json.loads(events.recv(timeout=60)))["type"] != "event":
                    pass
            assert event["watch"] == "anything" and event["camera"] == "b" and event["kind"] == "started"
            assert status(ws)["watches"]["watches"]["anything"]["evaluations"] >= 1
            with urllib.request.urlopen(f"http://127.0.0.1:{d.port}{event['frame_url']}", timeout=10) as r:
                assert r.read()[:2] == b"\xff\xd8"  # its evidence frame, from the shared store

            # a star in camera a's memory, then its shard killed while it answers
            wait_until(lambda: status(ws)["memory"]["a"].get("star_memory_size", 0) >= 2, 180, interval=0.5)
            victim = status(ws)["cluster"]["placement"]["a"]
            killer = cluster.killer("lwtest", victim)
            frames = request(ws, {"type": "memory", "id": "m1", "camera": "a"})[-1]["frames"]
            stars = {f["frame_id"] for f in frames if f["star"]}
            assert stars
            # sampled at temperature 1 over the random model's vocabulary, the answer runs to its 1000 tokens
            ws.send(json.dumps({"type": "ask", "id": "long", "camera": "a", "question": "Tell me everything",
                                "max_tokens": 1000, "temperature": 1.0, "seed": 1}))
            first = json.loads(ws.recv(timeout=60))
            assert first["type"] == "token" and first["id"] == "long"
            assert killer.stdin is not None and killer.stdout is not None
            killer.stdin.write(victim + "\n")
            killer.stdin.flush()
            assert killer.stdout.readline().strip() == "killed"
            t_kill = time.monotonic()
            while (reply := json.loads(ws.recv(timeout=120)))["type"] == "token":
                pass
            assert reply["type"] == "error" and reply["code"] == "unavailable", {**reply, "text": None}
            assert "retry in" in reply["message"]

            # camera a comes back on the surviving shard with its star memory; questions succeed again
            def a_served() -> bool:
                s = status(ws)
                return s["cameras"]["a"].get("state") == "streaming" and s["cameras"]["a"]["shard"] != victim

            wait_until(a_served, 120, interval=0.2)
            replaced_in = time.monotonic() - t_kill
            frames = request(ws, {"type": "memory", "id": "m2", "camera": "a"})[-1]["frames"]
            assert stars <= {f["frame_id"] for f in frames}, "the star memory was not restored"
            again = request(ws, {"type": "ask", "id": "again", "camera": "a", "question": "And now?",
                                 "max_tokens": 8})
            assert again[-1]["type"] == "answer", again[-1]
            print(f"camera a served again {replaced_in:.1f} s after its shard was killed")  # a figure, not a bound

            # the freed GPU brings a new shard, which takes a camera back (rebalance)
            def two_up_with_cameras() -> bool:
                shards = status(ws)["cluster"]["shards"]
                up = [s for s in shards.values() if s["state"] == "up"]
                return len(up) == 2 and all(len(s["cameras"]) == 1 for s in up)

            wait_until(two_up_with_cameras, 300, interval=0.5)

            # a node with one more GPU joins: a third shard, and a new camera goes there
            cluster.add_node(gpus=1)
            wait_until(lambda: sum(s["state"] == "up" for s in status(ws)["cluster"]["shards"].values()) == 3, 300,
                       interval=0.5)
            empty = [k for k, s in status(ws)["cluster"]["shards"].items() if not s["cameras"]]
            assert len(empty) == 1
            added = request(ws, {"type": "camera.add", "id": "add", "name": "c",
                                 "url": "testsrc://?size=320x240&rate=10"})[-1]
            assert added["type"] == "camera.added", added
            assert status(ws)["cluster"]["placement"]["c"] == empty[0]

            # that node is lost (its raylet and shard killed): camera c goes back to the two shards left
            cluster.kill_node(status(ws)["cluster"]["shards"][empty[0]]["node"])

            def c_served_elsewhere() -> bool:
                camera = status(ws)["cameras"]["c"]
                return camera.get("state") == "streaming" and camera["shard"] not in (None, empty[0])

            wait_until(c_served_elsewhere, 180, interval=0.5)
            assert empty[0] not in status(ws)["cluster"]["shards"]
            c_shard = status(ws)["cameras"]["c"]["shard"]

        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert f'livewatch_camera_placement{{camera="c",shard="{c_shard}"}} 1.0' in metrics
        assert "livewatch_shard_encode_load" in metrics and "livewatch_cameras_replaced_total 2.0" in metrics
        assert d.terminate(30) == 0
        events = [e.get("event") for e in d.logs()]
        assert "shard.lost" in events and "cluster.left" in events
    finally:
        d.stop()
