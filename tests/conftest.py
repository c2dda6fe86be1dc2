from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Triton kernels (livewatch.engine.model.kernels) run through Triton's interpreter on CPU tensors in this process; it
# must be set before the kernels are defined. The daemon uses them only on CUDA, so nothing else changes.
os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Qwen2.5-VL checkpoint, built once per test session by tools/make_tiny_model.py."""
    import make_tiny_model

    return make_tiny_model.build(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), seed=0)
