"""Streaming decode: one request's frames become audio while they are being generated.

Shapes: K generated layers, t frames in a piece, s = t x frame_size samples, L prefix frames.

`stream_audio` takes the frame chunks of one request (`Request.chunks()`) and feeds its codes to the codec's
streaming decoder (one decoder state per request, prefix decode at the request's K) in small groups: the first
piece after `first_chunk_frames` frames (low latency), then every `frames_per_chunk` frames. The concatenated pieces
equal the codec's one-shot decode of all frames (the codec's streaming property).
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
    pending: list[torch.Tensor] = []  # [t_i, K] code chunks not decoded yet
    count, want = 0, first_chunk_frames
    for chunk in chunks:
        pending.append(chunk[:, 1:])
        count += chunk.shape[0]
        if count >= want:
            yield _decode(codec, state, pending, device)
            pending, count, want = [], 0, frames_per_chunk
    if pending and count:
        yield _decode(codec, state, pending, device)


def _decode(codec: Any, state: Any, pending: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    codes = torch.cat(pending).t()[None].to(device)  # [1, K, t]
    with torch.inference_mode():
        return codec.decode_step(codes, state)[0].float().cpu()  # [s]


def _device(codec: Any) -> torch.device:
    try:
        return next(codec.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
