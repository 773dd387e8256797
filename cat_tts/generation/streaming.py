"""Streaming decode: turn frames into audio while they are being generated.

Shapes: K generated layers, t frames in a piece, s = t x frame_size samples.

`stream_audio` consumes the frame iterator of one utterance (`iter_frames`, batch 1) and feeds its audio
frames to the codec's streaming decoder in small groups: the first piece after `first_chunk_frames`
frames (low latency), then every `frames_per_chunk` frames. The concatenated pieces equal the codec's
one-shot decode of all frames (the codec's streaming property).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from cat_tts.generation.loop import FrameStep


def stream_audio(
    steps: Iterable[FrameStep],
    codec: Any,
    first_chunk_frames: int = 1,
    frames_per_chunk: int = 4,
    prefix_codes: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Decodes the audio frames of one generated utterance as they arrive.

    Args:
        steps: frame steps of a batch-1 generation (`iter_frames`).
        codec: a `CatCodec` (`new_stream_state`, `decode_step`).
        first_chunk_frames: frames in the first decoded piece (>= 1).
        frames_per_chunk: frames in each later piece (>= 1).
        prefix_codes: optional `[1, K, L]` codes decoded first for codec context only (continuation mode:
            the prompt audio); their samples are not yielded.

    Yields:
        float32 `[s]` audio pieces.
    """
    if first_chunk_frames < 1 or frames_per_chunk < 1:
        raise ValueError(
            f"first_chunk_frames and frames_per_chunk must be >= 1, got {first_chunk_frames}, {frames_per_chunk}"
        )
    device = _device(codec)
    state = codec.new_stream_state(1)
    if prefix_codes is not None and prefix_codes.shape[-1] > 0:
        with torch.inference_mode():
            codec.decode_step(prefix_codes.to(device), state)  # context only
    pending: list[torch.Tensor] = []
    want = first_chunk_frames
    for step in steps:
        if step.tokens.shape[0] != 1:
            raise ValueError(f"stream_audio decodes one utterance; got a batch of {step.tokens.shape[0]}")
        audio = bool(step.is_audio[0])
        if audio:
            pending.append(step.tokens[:, 1:])  # [1, K]
        if pending and (len(pending) >= want or not audio):
            yield _decode(codec, state, pending, device)
            pending, want = [], frames_per_chunk
    if pending:
        yield _decode(codec, state, pending, device)


def _decode(codec: Any, state: Any, pending: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    codes = torch.stack(pending, dim=-1).to(device)  # [1, K, t]
    with torch.inference_mode():
        return codec.decode_step(codes, state)[0].float().cpu()  # [s]


def _device(codec: Any) -> torch.device:
    try:
        return next(codec.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
