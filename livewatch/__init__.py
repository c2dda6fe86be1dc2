"""livewatch: a live-camera video assistant daemon built on Qwen2.5-VL."""

__version__ = "0.1.0"
