"""A real livewatch daemon process on loopback, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from media import free_port

BIN = Path(sys.executable).parent / "livewatch"


class DaemonProcess:
    def __init__(self, tmp: Path, model: Path, config: str = "", env: dict[str, str] | None = None,
                 args: list[str] | None = None, state: Path | None = None, program: list[str] | None = None,
                 nofile: int | None = None) -> None:
        self.port = free_port()
        self.state = state or tmp / "state"
        self.config = tmp / f"config-{self.port}.toml"
        self.config.write_text(config)
        self.log = tmp / f"daemon-{self.port}.log"
        self.env = {**os.environ, "LIVEWATCH_TOKEN": "", **(env or {})}
        self.args = args or []
        self.model = model
        self.program = program or [str(BIN)]  # e.g. [python, tests/engine_fault.py]
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the daemon process
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [*self.program, "serve", "--config", str(self.config), "--model", str(self.model),
                "--state-dir", str(self.state), "--port", str(self.port), *self.args]

    def start(self, wait: bool = True) -> DaemonProcess:
        self._fh = open(self.log, "ab")
        limit = self.nofile

        def preexec() -> None:
            if limit is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        self.proc = subprocess.Popen(self.command(), stdout=self._fh, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=preexec)
        if wait:
            self.wait_healthy()
        return self

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")
            try:
                if self.health()[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"daemon not healthy in {timeout}s:\n{self.log.read_text()[-4000:]}")

    def cli(self, *args: str, token: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "LIVEWATCH_TOKEN": token or ""}
        cmd = [str(BIN), args[0], "--url", self.url, *args[1:]]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)

    def terminate(self, timeout: float = 20.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if hasattr(self, "_fh"):
            self._fh.close()

    def logs(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out
