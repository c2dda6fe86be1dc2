"""The card's own ceilings, measured in the run: bf16 (fp32 on CPU) matmul rate and device copy bandwidth.

Every figure is later set against the floor these imply (``report.floors``), so ceilings come from the same
machine and the same moment as the figures, not from a data sheet.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from benchkit.common import Clock, free


def run(device: torch.device, tiny: bool) -> dict[str, Any]:
    clock = Clock(device)
    n = 1024 if tiny or device.type == "cpu" else 8192
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(5 if tiny else 20):
        t0 = clock.now()
        a @ b
        times.append(clock.now() - t0)
    flops = 2 * n**3 / statistics.median(times)
    size = (64 if tiny or device.type == "cpu" else 2048) * 2**20
    src = torch.empty(size, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(5 if tiny else 20):
        t0 = clock.now()
        dst.copy_(src)
        times.append(clock.now() - t0)
    bandwidth = 2 * size / statistics.median(times)  # bytes read + bytes written
    del a, b, src, dst
    free(device)
    return {"matmul_tflops": round(flops / 1e12, 2), "matmul_dtype": str(dtype).removeprefix("torch."),
            "copy_gbps": round(bandwidth / 1e9, 1)}
