"""Streaming decode: one request's frames become audio while they are being generated.

Shapes: K generated layers, t frames in a piece, s = t x frame_size samples, L prefix frames.

`stream_audio` takes the frame chunks of one request (`Request.chunks()`) and feeds its codes to the codec's
streaming decoder (one decoder state per request, prefix decode at the request's K) in fixed groups: the first
piece after `first_chunk_frames` frames (low latency), then every `frames_per_chunk` frames, whatever the grouping
in which the engine delivered them. The concatenated pieces equal the codec's one-shot decode of all frames (the
codec's streaming property), and are bit-identical for the same frames under any load.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def stream_audio(
    chunks: Iterable[torch.Tensor],
    codec: Any,
    first_chunk_frames: int = 1,
    frames_per_chunk: int = 4,
    prefix_codes: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Decodes the audio frames of one request as they arrive.

    Args:
        chunks: `[t, 1+K]` frame chunks (channel 0 = control token, then K codes), e.g. `Request.chunks()`.
        codec: a `CatCodec` (`new_stream_state`, `decode_step`).
        first_chunk_frames: frames in the first decoded piece (>= 1).
        frames_per_chunk: frames in each later piece (>= 1).
        prefix_codes: optional `[K, L]` codes decoded first for codec context only (a prompt that ends with audio
            which the generated frames continue); their samples are not yielded.

    Yields:
        float32 `[s]` audio pieces (CPU).
    """
    if first_chunk_frames < 1 or frames_per_chunk < 1:
        raise ValueError(
            f"first_chunk_frames and frames_per_chunk must be >= 1, got {first_chunk_frames}, {frames_per_chunk}"
        )
    device = _device(codec)
    state = codec.new_stream_state(1)
    if prefix_codes is not None and prefix_codes.shape[-1] > 0:
        with torch.inference_mode():
            codec.decode_step(prefix_codes[None].to(device), state)  # context only
    pending = torch.zeros(0, 0, dtype=torch.long)  # [t, K] codes received and not decoded yet
    want = first_chunk_frames
    for chunk in chunks:
        codes = chunk[:, 1:]  # [t, K]
        pending = codes if pending.numel() == 0 else torch.cat([pending, codes])
        # Decode in groups of exactly `want` frames, however the frames arrived: the pieces (and their float
        # rounding) do not depend on how busy the engine was.
        while pending.shape[0] >= want:
            yield _decode(codec, state, pending[:want], device)
            pending, want = pending[want:], frames_per_chunk
    if pending.shape[0]:
        yield _decode(codec, state, pending, device)


def _decode(codec: Any, state: Any, codes: torch.Tensor, device: torch.device) -> torch.Tensor:
    codes = codes.t()[None].to(device)  # [1, K, t]
    with torch.inference_mode():
        return codec.decode_step(codes, state)[0].float().cpu()  # [s]


def _device(codec: Any) -> torch.device:
    try:
        return next(codec.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
