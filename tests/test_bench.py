"""The benchmark tool runs end to end on the smallest settings, so it cannot rot; its frames and clips are the
ones the warm-up and the tests use, and it reaches into no module's private attributes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


@pytest.mark.slow
def test_tiny_benchmark_has_every_section(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench.py"), "--tiny", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    for section in ("machine", "ceilings", "prototype", "livewatch", "scaling", "capacity", "ingest", "floors"):
        assert section in report, section
    cap = report["capacity"]
    assert [(r["cameras"], r["window_slack_pairs"], r["encode_step_tokens"]) for r in cap["runs"]] == [
        (1, 1, 4096), (2, 1, 4096), (2, 0, 4096), (2, 1, 2048)]
    assert all(r["encodes"] > 0 and r["questions"] > 0 and not r["question_errors"] for r in cap["runs"])
    assert [r["cameras"] for r in cap["prototype_runs"]] == [1] and cap["prototype_runs"][0]["encodes"] > 0
    assert report["prototype"]["visual_tokens"] == 1008  # 8 frames at 336x588, uncapped: grid 4x24x42 / 4
    lw = report["livewatch"]
    assert lw["visual_tokens"] == 6 * 120  # 6 pairs of 1080p frames at the default cap
    assert lw["answer_tokens"] == 32 and lw["followup_ttft_ms"] > 0 and lw["decode_tokens_per_s"] > 0
    assert report["scaling"]["prefix_update_kinds"] == ["extend", "partial", "rebuild"]
    assert [row["frames"] for row in report["scaling"]["frames"]] == [8, 16]
    assert report["ingest"]["livewatch_keyframes_only"] is True
    assert report["ingest"]["livewatch_sampled"] >= 1
    assert report["ingest"]["store_frame_size"] == "1920x1080"  # what the store section really writes
    table = (tmp_path / "bench.md").read_text()
    assert "| visual tokens | 1,008 | 720 |" in table
    assert "| 2 | 0 pairs |" in table  # the capacity table


def test_the_bench_the_warm_up_and_the_tests_share_one_frame_maker() -> None:
    from benchkit.common import context_pairs
    from engine_helpers import make_pair
    from livewatch.engine.synthetic import FrameBank

    bank = FrameBank((90, 160), distinct=8)
    ours = context_pairs(bank, 1, 2)[1]
    theirs = make_pair(ours.id, ours.time, size=(90, 160))
    assert (ours.first.seq, ours.second.seq, ours.end_time) == (theirs.first.seq, theirs.second.seq, theirs.end_time)
    assert np.array_equal(ours.first.image, theirs.first.image)
    assert np.array_equal(ours.second.image, theirs.second.image)
    assert not np.array_equal(ours.first.image, ours.second.image)


def test_the_bench_and_the_tests_share_one_clip_writer() -> None:
    import clips
    import media

    assert media.write_h264 is clips.write_h264


def test_the_default_sections_are_in_the_table_and_no_tool_shadows_the_package() -> None:
    import bench

    assert set(bench.DEFAULT_SECTIONS.split(",")) <= set(bench.SECTIONS)
    assert set(bench.NEEDS.values()) <= set(bench.SECTIONS)
    assert not list(TOOLS.rglob("livewatch.py")) and not (TOOLS / "livewatch").exists()


def test_the_bench_uses_no_private_attribute_of_another_module() -> None:
    allowed = {"_attn_implementation", "_from_config"}  # transformers' own API for building a model from a config
    for path in [TOOLS / "bench.py", *sorted((TOOLS / "benchkit").glob("*.py"))]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for name in re.findall(r"(?<!self)\.(_[a-z]\w*)", line):
                assert name in allowed, f"{path.name}:{n}: {line.strip()}"


def test_the_capacity_plan_prints_from_measurements() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "capacity_plan.py"), "--cameras", "1000", "--watches",
                          "2", "--seconds", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    per_gpu, plan = report["per_gpu"], report["plan"]
    assert per_gpu["watched_sustained"] == 64 and per_gpu["kept_fresh"] == 128  # the H100 bench results
    assert plan["gpus"] == 16 and plan["gpus_surviving_one_node_loss"] == 24
    assert 0.5 < plan["network_mbps_per_camera"] < 50  # a 1080p30 H.264 stream, measured
    assert 0.05 < plan["disk_gb_per_camera_day"] < 10 and report["stream"]["frame_size"] == "420x224"
