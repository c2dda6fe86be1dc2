"""The benchmark tool runs end to end on the smallest settings, so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_tiny_benchmark_has_every_section(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--tiny", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    for section in ("machine", "ceilings", "prototype", "livewatch", "scaling", "ingest", "floors"):
        assert section in report, section
    assert report["prototype"]["visual_tokens"] == 1008  # 8 frames at 336x588, uncapped: grid 4x24x42 / 4
    lw = report["livewatch"]
    assert lw["visual_tokens"] == 6 * 120  # 6 pairs of 1080p frames at the default cap
    assert lw["answer_tokens"] == 32 and lw["followup_ttft_ms"] > 0 and lw["decode_tokens_per_s"] > 0
    assert report["scaling"]["prefix_update_kinds"] == ["extend", "partial", "rebuild"]
    assert [row["frames"] for row in report["scaling"]["frames"]] == [8, 16]
    assert report["ingest"]["livewatch_keyframes_only"] is True
    assert report["ingest"]["livewatch_sampled"] >= 1
    table = (tmp_path / "bench.md").read_text()
    assert "| visual tokens | 1,008 | 720 |" in table
