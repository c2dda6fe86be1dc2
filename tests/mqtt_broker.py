"""A real MQTT broker for the tests: Mosquitto (Debian's ``mosquitto``, installed by tools/dev.sh) in a child process.

    with MosquittoBroker(tmp_path).start() as broker:      # anonymous, on a free loopback port
        ... broker.url ...
    MosquittoBroker(tmp_path, users={"lw": "secret"})        # a password file; anonymous refused
    MosquittoBroker(tmp_path, persistence=True)              # sessions and retained messages survive a restart
    MosquittoBroker(tmp_path, tls=(ca, cert, key))           # mqtts:// with that server certificate

``stop()`` ends it with SIGTERM (Mosquitto then writes its persistence file), ``kill()`` with SIGKILL; ``start()``
again brings it back on the same port, which is how tests restart the broker under a connected client.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from media import free_port

__all__ = ["MOSQUITTO", "MosquittoBroker"]


def _find(name: str) -> str | None:
    # /usr/sbin is not on every user's PATH, and that is where Debian puts the broker
    return shutil.which(name) or next((p for d in ("/usr/sbin", "/usr/bin") if os.access(p := f"{d}/{name}", os.X_OK)),
                                      None)


MOSQUITTO = _find("mosquitto")
MOSQUITTO_PASSWD = _find("mosquitto_passwd")


class MosquittoBroker:
    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, persistence: bool = False,
                 tls: tuple[Path, Path, Path] | None = None, port: int | None = None) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed (tools/dev.sh installs it)")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}",
                 "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would switch to the 'mosquitto' user, who cannot read tmp_path
        if users:
            passwords = self.dir / "passwords"
            passwords.write_text("")
            for user, password in users.items():
                subprocess.run([MOSQUITTO_PASSWD or "mosquitto_passwd", "-b", str(passwords), user, password],
                               check=True, capture_output=True)
            lines.append(f"password_file {passwords}")
        if persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 0"]
        else:
            lines.append("persistence false")
        if tls is not None:
            ca, cert, key = tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        assert MOSQUITTO is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> MosquittoBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
