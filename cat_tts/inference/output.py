"""Output: segments of audio joined without clicks, and a request's frames decoded into audio (one-shot or as they
arrive).

Shapes: K generated layers, F frames, L prefix frames, S samples (24 kHz).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cat_tts.generation import Request, stream_audio
from cat_tts.inference.decoding import DecodeBatcher

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.inference.planning import Segment

logger = logging.getLogger(__name__)


class Crossfader:
    """Joins consecutive audio segments with a linear cross-fade, incrementally.

    Pushing whole segments or pieces of them gives the same samples: the last `n` samples of a segment are
    held back until the next segment (or the end) decides how they are mixed.
    """

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap
        self.tail = np.zeros(0, dtype=np.float32)  # held-back end of the previous segment
        self.head = np.zeros(0, dtype=np.float32)  # start of the current segment, not yet mixed
        self.mixing = False  # the current segment still has to be mixed with `tail`
        self.pending = np.zeros(0, dtype=np.float32)  # current segment samples that may become the tail

    def start_segment(self) -> np.ndarray:
        """Begins a new segment; returns samples ready to emit."""
        out = self._flush_segment()
        self.mixing = self.tail.size > 0
        self.head = np.zeros(0, dtype=np.float32)
        return out

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Adds samples of the current segment; returns samples ready to emit."""
        audio = np.asarray(audio, dtype=np.float32)
        out = []
        if self.mixing:
            self.head = np.concatenate([self.head, audio])
            if self.head.size < self.tail.size:
                return np.zeros(0, dtype=np.float32)
            out.append(self._mix(self.head[: self.tail.size]))
            audio = self.head[self.tail.size :]
            self.mixing = False
            self.tail = np.zeros(0, dtype=np.float32)
        self.pending = np.concatenate([self.pending, audio])
        keep = min(self.overlap, self.pending.size)
        out.append(self.pending[: self.pending.size - keep])
        self.pending = self.pending[self.pending.size - keep :]
        return np.concatenate(out)

    def finish(self) -> np.ndarray:
        """Ends the stream; returns the remaining samples."""
        out = self._flush_segment()
        rest = np.concatenate([out, self.tail])
        self.tail = np.zeros(0, dtype=np.float32)
        return rest

    def _flush_segment(self) -> np.ndarray:
        out = []
        if self.mixing:  # the segment ended shorter than the overlap: mix what there is
            n = self.head.size
            mixed = self._mix(self.head) if n else np.zeros(0, dtype=np.float32)
            out += [mixed, self.tail[n:]]
            self.tail = np.zeros(0, dtype=np.float32)
            self.mixing = False
        self.tail = np.concatenate([self.tail, self.pending])
        self.pending = np.zeros(0, dtype=np.float32)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def _mix(self, head: np.ndarray) -> np.ndarray:
        n = head.size
        tail = self.tail[:n]
        ramp = (np.arange(n, dtype=np.float32) + 0.5) / max(self.tail.size, 1)
        return tail * (1.0 - ramp) + head * ramp


def join(audios: list[np.ndarray], overlap: int) -> np.ndarray:
    """Joins segments with a linear cross-fade of `overlap` samples."""
    fader = Crossfader(overlap)
    out = []
    for audio in audios:
        out += [fader.start_segment(), fader.push(audio)]
    out.append(fader.finish())
    return np.concatenate(out).astype(np.float32)


def codec_device(codec: Any) -> torch.device:
    """The device the codec's weights are on (CPU for weightless fakes)."""
    try:
        return next(codec.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def decode_frames(codec: Any, codes: torch.Tensor, prefix_codes: torch.Tensor | None) -> np.ndarray:
    """Prefix-decodes `[1, K, F]` codes; a prompt that ends with audio (`prefix_codes [N, L]`) is decoded first for
    codec context and its samples dropped."""
    k = codes.shape[1]
    if codes.shape[-1] == 0:
        return np.zeros(0, dtype=np.float32)
    skip = 0
    if prefix_codes is not None:
        prefix = prefix_codes[:k][None]  # [1, K, L]
        codes = torch.cat([prefix, codes], dim=-1)
        skip = prefix.shape[-1] * int(codec.frame_size)
    with torch.inference_mode():
        audio = codec.decode(codes.to(codec_device(codec))).audio[0]  # [S]
    return audio[skip:].float().cpu().numpy()


def stream_pieces(
    codec: Any,
    request: Request,
    prefix_codes: torch.Tensor | None,
    first_piece_frames: int,
    piece_frames: int,
    on_frame: Any = None,
    batcher: DecodeBatcher | None = None,
) -> Iterator[np.ndarray]:
    """The audio of one engine request as its frames arrive (see `stream_audio`); with a `batcher`, its pieces are
    decoded together with the other requests' (one codec call per read-back)."""
    frames = counted(request, on_frame)
    if batcher is None:
        prefix = None if prefix_codes is None else prefix_codes[: request.depth]  # [K, L]
        for audio in stream_audio(frames, codec, first_piece_frames, piece_frames, prefix):
            yield audio.numpy()
        return
    # K comes from the first frames (final once admitted, depth "auto" included); the prefix is cut to it.
    with batcher.open(prefix_codes=prefix_codes) as decoder:
        for audio in stream_audio(frames, codec, first_piece_frames, piece_frames, decoder=decoder):
            yield audio.numpy()


def counted(request: Request, on_frame: Any) -> Iterator[torch.Tensor]:
    """The request's frames as they arrive, reporting each group's frame count to `on_frame`."""
    for frames in request.stream():
        if on_frame is not None:
            on_frame(frames.shape[0])
        yield frames


class SpeechStream:
    """The audio of one streamed request: an iterator of float32 pieces that can be cancelled from any thread.

    `cancel()` is thread-safe and immediate: the engine requests of every segment (queued or running) are cancelled
    and their slots freed; the iterator then ends. `close()` (the generator protocol, from the iterating thread) does
    the same and finishes the iterator. Audio cut short by the engine (it failed, or shut down) raises instead of
    ending.
    """

    def __init__(self) -> None:
        self._gen: Iterator[np.ndarray] | None = None
        self._segments: list[Segment] = []
        self._cancelled = threading.Event()

    def __iter__(self) -> SpeechStream:
        return self

    def __next__(self) -> np.ndarray:
        if self._cancelled.is_set():
            self.close()
            raise StopIteration
        return next(self._gen)

    @property
    def cancelled(self) -> bool:
        """True once `cancel()` or `close()` ran."""
        return self._cancelled.is_set()

    @property
    def depths(self) -> list[int]:
        """The depth of each segment submitted so far (final once admitted; depth "auto" is chosen then)."""
        return [s.request.depth for s in self._segments if s.request is not None]

    def cancel(self) -> None:
        """Stops the generation from any thread; the engine frees the slots at once."""
        self._cancelled.set()
        cancel_unfinished(list(self._segments))

    def close(self) -> None:
        """Cancels and finishes the iterator (call from the thread that iterates, or after it stopped)."""
        self.cancel()
        try:
            self._gen.close()
        except ValueError:  # "generator already executing": another thread is inside next(); cancel() suffices
            pass


def cancel_unfinished(segments: list[Segment]) -> None:
    """Cancels the engine requests of `segments` that are still queued or running (their slots are freed)."""
    for segment in segments:
        if segment.request is not None and not segment.request.done:
            segment.request.cancel()


def warn_unusual(segment: Segment) -> None:
    """Logs generations that produced no audio or ran into the frame budget (a runaway)."""
    request = segment.request
    if request.finish_reason not in ("audio_end", "budget"):
        return
    if request.num_frames == 0:
        logger.warning("the model ended without audio for %r (random tiny weights do this: try min_new_frames)",
                       segment.text)  # fmt: skip
    elif request.finish_reason == "budget":
        logger.warning("generation hit the %s-frame budget for %r; the audio may be cut or rambling", request.budget,
                       segment.text)  # fmt: skip
