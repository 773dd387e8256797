"""Streaming decode: one request's frames become audio while they are being generated.

Shapes: K generated layers, t frames in a piece, s = t x frame_size samples, L prefix frames.

`stream_audio` takes the frames of one request as the engine delivers them (`Request.stream()`) and feeds their codes
to the codec's streaming decoder (one decoder state per request, prefix decode at the request's K) in fixed groups:
the first piece after `first_piece_frames` frames (low latency), then every `piece_frames` frames, whatever the
grouping in which the engine delivered them. The concatenated pieces equal the codec's one-shot decode of all
frames (the codec's streaming property); with a private state they are bit-identical for the same frames under any
load, and with a shared `decoder` (decoding many requests in one call) equal up to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def stream_audio(
    frames: Iterable[torch.Tensor],
    codec: Any,
    first_piece_frames: int = 1,
    piece_frames: int = 4,
    prefix_codes: torch.Tensor | None = None,
    decoder: Any = None,
) -> Iterator[torch.Tensor]:
    """Decodes the audio frames of one request as they arrive.

    Args:
        frames: `[t, 1+K]` groups of frames (channel 0 = control token, then K codes), e.g. `Request.stream()`.
        codec: a `CatCodec` (`new_stream_state`, `decode_step`).
        first_piece_frames: frames in the first decoded piece (>= 1).
        piece_frames: frames in each later piece (>= 1).
        prefix_codes: optional `[K, L]` codes decoded first for codec context only (a prompt that ends with audio
            which the generated frames continue); their samples are not yielded.
        decoder: the request's own decoder instead of a private codec state: an object with
            `decode(codes [t, K]) -> float32 [t * frame_size]` (e.g. `DecodeBatcher.open(prefix_codes=...)`, which
            decodes it together with the other requests' pieces; its prefix is given to `open`, so `prefix_codes`
            must be None here).

    Yields:
        float32 `[s]` audio pieces (CPU).
    """
    if first_piece_frames < 1 or piece_frames < 1:
        raise ValueError(f"first_piece_frames and piece_frames must be >= 1, got {first_piece_frames}, {piece_frames}")
    if decoder is not None:
        if prefix_codes is not None:
            raise ValueError("give prefix_codes to the decoder's open(), not to stream_audio")
        decode = decoder.decode
    else:
        device = _device(codec)
        state = codec.new_stream_state(1)
        if prefix_codes is not None and prefix_codes.shape[-1] > 0:
            with torch.inference_mode():
                codec.decode_step(prefix_codes[None].to(device), state)  # context only

        def decode(codes: torch.Tensor) -> torch.Tensor:
            return _decode(codec, state, codes, device)

    pending = torch.zeros(0, 0, dtype=torch.long)  # [t, K] codes received and not decoded yet
    want = first_piece_frames
    for group in frames:
        codes = group[:, 1:]  # [t, K]
        pending = codes if pending.numel() == 0 else torch.cat([pending, codes])
        # Decode in groups of exactly `want` frames, however the frames arrived: the pieces (and their float
        # rounding) do not depend on how busy the engine was.
        while pending.shape[0] >= want:
            yield decode(pending[:want])
            pending, want = pending[want:], piece_frames
    if pending.shape[0]:
        yield decode(pending)


def _decode(codec: Any, state: Any, codes: torch.Tensor, device: torch.device) -> torch.Tensor:
    codes = codes.t()[None].to(device)  # [1, K, t]
    with torch.inference_mode():
        return codec.decode_step(codes, state)[0].float().cpu()  # [s]


def _device(codec: Any) -> torch.device:
    try:
        return next(codec.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")
