"""Loading the model and its processor, and resolving device and dtype.

A model that cannot be loaded fails at start with ``ModelUnavailableError`` naming the model and how to provide
it. Hub look-ups run with short timeouts, and a model id that is not in the local cache is only downloaded when
the machine is not marked offline (HF_HUB_OFFLINE=1), so start-up never hangs on a closed network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from livewatch.engine.prompting.preprocess import VisionSpec
from livewatch.errors import ConfigError, ModelUnavailableError

TINY_MARKER = "LIVEWATCH_TINY_RANDOM_MODEL"
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"model.device = {name!r} but no CUDA device is available; use 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"model.device = {name!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


@dataclass(frozen=True)
class AttentionShape:
    """The language model's attention geometry, as the engine's own layer code needs it."""

    heads: int
    kv_heads: int
    head_dim: int
    n_rep: int  # query heads per KV head
    scaling: float


@dataclass
class LoadedModel:
    """The model, its tokenizer and the constants the engine needs, read from the loaded config."""

    model_id: str
    model: Any  # Qwen2_5_VLForConditionalGeneration
    processor: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    spec: VisionSpec
    tokens_per_second: float
    video_token_id: int
    stop_token_ids: frozenset[int]
    is_tiny_random: bool

    @property
    def text_model(self) -> Any:
        return self.model.model.language_model

    @property
    def attention(self) -> AttentionShape:
        cfg = self.model.config.text_config
        heads, kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
        return AttentionShape(heads, kv_heads, int(cfg.hidden_size // heads), heads // kv_heads,
                              float(self.text_model.layers[0].self_attn.scaling))

    @property
    def visual(self) -> Any:
        return self.model.model.visual

    @property
    def embed_tokens(self) -> Any:
        return self.model.model.language_model.embed_tokens


def _unavailable(model_id: str, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"model {model_id!r} cannot be loaded: {reason}. Download it where the network allows "
        f"(`huggingface-cli download {model_id}`) into the Hugging Face cache, or set model.id / --model to a local "
        f"checkpoint directory; `python tools/make_tiny_model.py DIR` writes a tiny random-weight one for testing."
    )


def _check_hub_reachable(model_id: str) -> None:
    """One short request before any download: transformers retries each file for minutes on a closed network."""
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(model_id, timeout=10)
    except Exception as exc:
        raise _unavailable(
            model_id, f"it is not in the local Hugging Face cache and the Hub cannot be reached ({type(exc).__name__}: {exc})"
        ) from exc


def load_model(
    model_id: str, device_name: str = "auto", dtype_name: str = "auto", attn: str = "sdpa",
    min_pixels: int = 3136, max_pixels: int = 100352,
) -> LoadedModel:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    device = resolve_device(device_name)
    dtype = resolve_dtype(dtype_name, device)
    if attn == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError as exc:
            raise ConfigError("model.attn_implementation = 'flash_attention_2' needs the flash-attn package") from exc

    local = Path(model_id).expanduser()
    is_dir = local.is_dir()
    if not is_dir and (model_id.startswith((".", "/", "~")) or local.exists()):
        raise _unavailable(model_id, "no such directory")
    source = str(local) if is_dir else model_id
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    kwargs: dict[str, Any] = {}
    try:
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=True)
            kwargs["local_files_only"] = True
        except OSError:
            if is_dir or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise
            _check_hub_reachable(model_id)
            processor = AutoProcessor.from_pretrained(source)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            source, dtype=dtype, attn_implementation=attn, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise _unavailable(model_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    model.to(device)  # type: ignore[arg-type]  # transformers' stub types .to() for dtypes only
    return wrap_model(
        model_id, model, processor, min_pixels, max_pixels, is_tiny_random=is_dir and (local / TINY_MARKER).exists()
    )


def _rgb(values: Any) -> tuple[float, float, float]:
    r, g, b = (float(x) for x in values)
    return (r, g, b)


def wrap_model(
    model_id: str, model: Any, processor: Any, min_pixels: int, max_pixels: int, is_tiny_random: bool = False
) -> LoadedModel:
    """A LoadedModel around a model already on its device (also used by tools/bench.py for random weights)."""
    model.eval()
    model.requires_grad_(False)
    param = next(model.parameters())
    if param.device.type == "cuda":
        # SDPA's cuDNN backend costs ~250 us of CPU per call (plan lookup) and far more at each new shape (plan
        # build), and the vision tower and the prefix prefill call it hundreds of times with shapes that change
        # as frames come and go. Measured on an H100: a daemon's start-up warm-up took 5.5 s with it and 0.8 s
        # without; encodes at new shapes 334 vs 274 ms (median of 5, worst 480 vs 407), at repeated shapes
        # about the same (120 vs 129 ms). Flash / memory-efficient kernels serve instead.
        torch.backends.cuda.enable_cudnn_sdp(False)
    cfg = model.config
    vcfg = cfg.vision_config
    vp = processor.video_processor
    spec = VisionSpec(
        patch_size=int(vcfg.patch_size),
        temporal_patch_size=int(vcfg.temporal_patch_size),
        merge_size=int(vcfg.spatial_merge_size),
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        mean=_rgb(vp.image_mean),
        std=_rgb(vp.image_std),
    )
    tokenizer = processor.tokenizer
    stops: set[int] = set()
    for source_ids in (model.generation_config.eos_token_id, cfg.text_config.eos_token_id, tokenizer.eos_token_id):
        if source_ids is None:
            continue
        stops.update(source_ids if isinstance(source_ids, (list, tuple)) else [source_ids])
    stops.add(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return LoadedModel(
        model_id=model_id,
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        device=param.device,
        dtype=param.dtype,
        spec=spec,
        tokens_per_second=float(vcfg.tokens_per_second),
        video_token_id=int(cfg.video_token_id),
        stop_token_ids=frozenset(int(s) for s in stops),
        is_tiny_random=is_tiny_random,
    )
