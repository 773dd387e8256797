"""What each fresh process of `bench coldstart` runs (see `cat_tts.tools.bench.coldstart`): write random weights, load
one checkpoint and measure it, or time process start -> first audio.

    python -m cat_tts.tools.bench.coldstart_workers SPEC_JSON     # prints one line: RESULT_MARK + the result's JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# preset -> (CatTTSConfig preset, CodecConfig preset)
PRESETS: dict[str, tuple[str, str]] = {
    "released": ("cat_tts_1_7b", "released"),
    "small": ("small", "tiny"),
    "tiny": ("tiny", "tiny"),
}
# --compile value -> the engine mode it names (cat_tts.tools.bench.modes.MODES)
COMPILE_MODES = {"on": "compiled", "auto": "default", "off": "eager"}
RESULT_MARK = "COLDSTART_RESULT "  # prefix of the worker's result line on stdout
TTFA_TEXT = "Hello there, this is a cold start."
GB = 1e9  # decimal gigabytes, as disk sizes are quoted


# --------------------------------------------------------------------------------------------- host memory probes
def _status_bytes(field: str) -> int | None:
    """A size field of /proc/self/status (VmRSS, VmHWM, RssFile, ...) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Restart the kernel's resident-set high-water mark (VmHWM) from the current resident set."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes; None off Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _drop_page_cache(directory: Path) -> None:
    """Evict a checkpoint's files from the page cache (clean pages; no privileges needed) so the load reads disk."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in directory.glob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------- workers
def write_weights(model_dir: str | None, codec_dir: str | None, preset: str, seed: int = 0) -> dict[str, Any]:
    """Write random weights at a preset's size: the model in bfloat16 (`save_pretrained`, 5 GB shards) with the tiny
    tokenizer when its token ids fit it, the codec in float32. Built on the meta device and filled in place, so the
    writer holds one copy."""
    import torch

    from cat_tts.codec.config import CodecConfig
    from cat_tts.codec.tiny import random_codec
    from cat_tts.model import CatTTSConfig, CatTTSModel

    model_preset, codec_preset = PRESETS[preset]
    out: dict[str, Any] = {}
    if model_dir is not None:
        start = time.perf_counter()
        with torch.device("meta"):
            model = CatTTSModel(CatTTSConfig.from_preset(model_preset), attn_implementation="sdpa")
        model = model.to(torch.bfloat16)
        model.to_empty(device="cpu")
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.02, generator=gen)
        model.save_pretrained(model_dir)
        if preset != "released":  # the tiny tokenizer's ids are the tiny/small presets' token ids
            from cat_tts.text.tiny_tokenizer import write_tiny_tokenizer

            write_tiny_tokenizer(model_dir)
        out["model_write_s"] = time.perf_counter() - start
        del model
    if codec_dir is not None:
        start = time.perf_counter()
        config = CodecConfig.released() if codec_preset == "released" else CodecConfig.tiny()
        random_codec(config, seed=seed).save_pretrained(codec_dir)
        out["codec_write_s"] = time.perf_counter() - start
    return out


def measure_load(part: str, directory: str, dtype: str, device: str, drop_page_cache: bool = False) -> dict[str, Any]:
    """Load one checkpoint in this (fresh) process and report time and memory (see the module docstring)."""
    import torch

    from cat_tts.tools.bench import sync
    from cat_tts.weights import dtype_name, read_config_json

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.zeros(1, device=dev)  # the CUDA context belongs to the baseline, not to the load
    if part == "model":
        from cat_tts.model import CatTTSModel
        from cat_tts.model.checkpoint import read_config

        with torch.device("meta"):  # imports and builds everything the load needs, so the baseline includes it
            CatTTSModel(read_config(Path(directory)))
        load = CatTTSModel.from_pretrained
    else:
        from cat_tts.codec import CatCodec, CodecConfig

        with torch.device("meta"):
            CatCodec(CodecConfig.from_dict(read_config_json(directory)))
        load = CatCodec.from_pretrained
    if drop_page_cache:
        _drop_page_cache(Path(directory))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    reset = _reset_peak_rss()
    baseline = _status_bytes("VmRSS") or 0
    start = time.perf_counter()
    module = load(directory, dtype=dtype, device=dev)
    sync(dev)
    load_s = time.perf_counter() - start
    peak = _peak_rss()
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    result = {
        "part": part,
        "dtype": dtype_name(module.dtype),
        "device": str(dev),
        "load_s": load_s,
        "weights_gb": weights / GB,
        "baseline_rss_gb": baseline / GB,
        "peak_rss_gb": peak / GB,
        "load_growth_gb": (peak - baseline) / GB,  # what the load itself added at its peak
        "peak_rss_vs_weights": peak / weights if weights else None,
        "peak_is_since_process_start": not reset,
    }
    if dev.type == "cuda":
        result["device_peak_gb"] = torch.cuda.max_memory_allocated(dev) / GB
    return result


def time_to_first_audio(
    model_dir: str,
    codec_dir: str,
    device: str,
    dtype: str,
    depth: int,
    frames: int,
    compile_mode: str,
    t0: float,
    slots: int | None = None,
) -> dict[str, Any]:
    """Seconds from process start to the first audio chunk (run this in a fresh process).

    Args:
        model_dir, codec_dir: checkpoints (the model directory with its tokenizer).
        device, dtype: as `CatTTS.from_pretrained` takes them.
        depth: K of the request.
        frames: frames generated (min = max, so random weights cannot stop early).
        compile_mode: "on" (torch.compile everywhere), "auto" (the default: on CUDA the whole frame compiled and
            captured, eager on the CPU) or "off" (eager); the compile cache `CAT_TTS_COMPILE_CACHE` serves the first
            two.
        t0: `time.time()` taken by the parent just before it started this process.
        slots: the engine's slots (None: the pipeline's default); each batch bucket up to it is compiled at start.

    Returns:
        `imports_s`, `loaded_s` (model, tokenizer and codec loaded), `first_audio_s`, all since `t0`, and the
        first chunk's sample count.
    """
    import numpy as np

    from cat_tts.inference import CatTTS

    imports_s = time.time() - t0
    kwargs: dict[str, Any] = {}
    from cat_tts.tools.bench.modes import engine_config

    sizes = {"max_slots": slots} if slots else {}
    kwargs["engine"] = engine_config(COMPILE_MODES[compile_mode], **sizes)
    dtype_arg = None if dtype == "auto" else dtype  # None: the pipeline's own default (resolve_dtype's "auto")
    tts = CatTTS.from_pretrained(model=model_dir, codec=codec_dir, device=device, dtype=dtype_arg, **kwargs)
    loaded_s = time.time() - t0
    t = np.arange(3 * 24000) / 24000
    reference = ((0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000)
    stream = iter(
        tts.stream(TTFA_TEXT, reference_audio=reference, depth=depth, max_new_frames=frames, min_new_frames=frames)
    )
    chunk = next(stream)
    first_audio_s = time.time() - t0
    if hasattr(stream, "close"):
        stream.close()  # cancels the rest of the request
    return {"imports_s": imports_s, "loaded_s": loaded_s, "first_audio_s": first_audio_s, "samples": int(len(chunk))}


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    if kind == "write":
        return write_weights(**spec)
    if kind == "load":
        return measure_load(**spec)
    if kind == "ttfa":
        return time_to_first_audio(**spec)
    raise ValueError(f"unknown worker kind {kind!r}")


def main(argv: list[str]) -> int:
    """Worker entry: `python -m cat_tts.tools.bench.coldstart_workers SPEC_JSON` prints one result line."""
    result = _worker(json.loads(argv[0]))
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
