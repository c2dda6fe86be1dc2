from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import transformers

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_installed_entry_point_help() -> None:
    out = subprocess.run([BIN / "livewatch", "--help"], capture_output=True, text=True, check=True)
    assert "usage: livewatch" in out.stdout


def test_module_entry_point_help() -> None:
    out = subprocess.run([sys.executable, "-m", "livewatch", "--help"], capture_output=True, text=True, check=True)
    assert "usage: livewatch" in out.stdout


def test_check_config_redacts_and_reports(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cameras.door]\nurl = 'rtsp://admin:hunter2@192.0.2.1/s'\n")
    out = subprocess.run(
        [BIN / "livewatch", "check-config", "--config", cfg], capture_output=True, text=True, check=True
    )
    summary = json.loads(out.stdout)
    assert summary["cameras"] == {"door": "rtsp://***@192.0.2.1/s"}
    assert "hunter2" not in out.stdout


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path) -> None:
    """`livewatch ... | head`: the pipe's reader is gone before the output is written."""
    import os

    cfg = tmp_path / "c.toml"
    cfg.write_text("".join(f"[cameras.c{i}]\nurl = 'rtsp://192.0.2.1/s{i}'\n" for i in range(60)))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([BIN / "livewatch", "check-config", "--config", cfg], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert out.returncode == 141
    assert out.stderr == ""  # no traceback, no "Exception ignored"


def test_bad_config_exits_with_ex_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[server]\nprot = 1\n")
    out = subprocess.run([BIN / "livewatch", "check-config", "--config", cfg], capture_output=True, text=True)
    assert out.returncode == 78
    assert "server.prot: unknown key" in out.stderr


def test_tested_transformers_version() -> None:
    """The suite runs against the transformers minor version pyproject.toml pins (Qwen2.5-VL internals move)."""
    assert transformers.__version__.startswith("5.17."), transformers.__version__


def test_serve_with_a_missing_model_exits_69(tmp_path: Path) -> None:
    out = subprocess.run(
        [BIN / "livewatch", "serve", "--model", str(tmp_path / "no-model"), "--state-dir", str(tmp_path / "s"),
         "--port", "65000"],  # never bound: the model fails first
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 69
    assert "cannot be loaded: no such directory" in out.stderr and "--model" in out.stderr
