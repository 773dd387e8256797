"""Batched streaming decode: the audio of many requests decoded with one codec call per engine read-back.

Shapes: t frames in a piece, K a stream's depth, L prefix frames, R streams in one call, s = t x frame_size samples.

Each request's consumer thread holds a stream (`batcher.open(depth, prefix_codes)`) and calls `stream.decode(codes)`
with its next frames `[t, K]`; the call blocks until their audio `[s]` is back. A stream takes part from its first
submission (a request still queued in the engine holds nobody up); its prefix, if any, is decoded with its first
frames. A worker thread owns the codec's streaming state, a pool with one row per active stream (`CodecStreamState`
rows: each at its own position). It waits for a first submission, gathers the others for at most `window_s` seconds
(less when every active stream has submitted and none is new: the engine delivers the frames of all requests at the
same read-back)
and decodes them in as few `decode_step` calls as the padding rule allows: a call takes the submissions with the
most frames t_max and every other with at least t_max / max_pad_ratio frames, padded to t_max frames (`lengths`)
and to the largest depth (`depths`; a row's layers past its depth are not summed, so depth padding is exact).

Invariant: only the worker thread touches the codec and its state; a stream has at most one submission in flight.

A stream's audio equals its own streaming decode up to float32 rounding, not bit for bit: its rows go through matrix
products of other shapes (more rows, padded frames), whose reductions the math libraries block differently.
`DirectStream` is the same interface over a private state (no batching, results independent of other requests).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import torch

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 0.002  # gathering window after a first submission (seconds)
DEFAULT_MAX_PAD_RATIO = 4.0  # a call pads a submission to at most this many times its frames


class FrameDecoder(Protocol):
    """One request's streaming decoder: its next frames in, their audio out."""

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [t, K] -> float32 audio [t * frame_size] (CPU); concatenated over calls = the one-shot decode."""
        ...

    def close(self) -> None: ...


def _check_frames(codes: torch.Tensor, depth: int, codebook_size: int, what: str) -> torch.Tensor:
    """codes [t, K] (K = depth) as int64 on the CPU; a ValueError says what is wrong."""
    if not isinstance(codes, torch.Tensor) or codes.dim() != 2:
        shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise ValueError(f"{what} must be codes [t, K], got {shape}")
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"{what} must be an integer tensor, got {codes.dtype}")
    if codes.shape[1] != depth:
        raise ValueError(f"{what} have {codes.shape[1]} layers (axis 1 of [t, K]); this stream decodes K={depth}")
    codes = codes.detach().to("cpu", torch.long)
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"{what} must lie in 0..{codebook_size - 1}, got {int(codes.min())}..{int(codes.max())}")
    return codes


class _Frames:
    """What a stream checks and prepends: its depth (fixed by `open` or by the first frames) and its pending prefix."""

    def __init__(self, codec: Any, depth: int | None, prefix_codes: torch.Tensor | None) -> None:
        if depth is not None and (
            isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= codec.num_layers
        ):
            raise ValueError(f"depth must be an integer in 1..{codec.num_layers} (or None), got {depth!r}")
        if prefix_codes is not None and (
            not isinstance(prefix_codes, torch.Tensor)
            or prefix_codes.dim() != 2
            or prefix_codes.shape[0] < (depth or 1)
        ):
            shape = tuple(prefix_codes.shape) if isinstance(prefix_codes, torch.Tensor) else type(prefix_codes).__name__
            raise ValueError(f"prefix_codes must be codes [K', L] with K' >= K = {depth}, got {shape}")
        self.codec = codec
        self.depth = depth  # K; None until the first frames say
        self.prefix = None if prefix_codes is None or prefix_codes.shape[1] == 0 else prefix_codes  # [K', L]

    def next(self, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The frames [t, K] to decode (checked; the prefix's first K layers before the first ones) and how many
        leading frames are context only."""
        if self.depth is None:  # a depth "auto" request's K is final once it produces frames
            n = self.codec.num_layers
            if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or not 1 <= codes.shape[1] <= n:
                shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
                raise ValueError(f"codes must be [t, K] with K in 1..{n}, got {shape}")
            self.depth = codes.shape[1]
        codes = _check_frames(codes, self.depth, self.codec.codebook_size, "codes")
        if self.prefix is None or codes.shape[0] == 0:
            return codes, 0
        if self.prefix.shape[0] < self.depth:
            raise ValueError(
                f"prefix_codes [K', L] have K'={self.prefix.shape[0]} layers; the frames have {self.depth}"
            )
        prefix = _check_frames(self.prefix[: self.depth].t(), self.depth, self.codec.codebook_size, "prefix_codes")
        self.prefix = None
        return torch.cat([prefix, codes]), prefix.shape[0]  # [L + t, K]


class DirectStream:
    """A `FrameDecoder` over a private codec state: what every request did before batching (the baseline).

    Args:
        codec: a `CatCodec`.
        depth: layers per frame K (1..32); None = the K of the first frames.
        prefix_codes: optional [K', L] codes (K' >= K) decoded with the first frames for codec context only, e.g. a
            prompt that ends with audio which the frames continue; their samples are dropped.
    """

    def __init__(self, codec: Any, depth: int | None = None, prefix_codes: torch.Tensor | None = None) -> None:
        self._frames = _Frames(codec, depth, prefix_codes)
        self._state = codec.new_stream_state(1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [t, K] -> float32 audio [t * frame_size] (CPU)."""
        codes, context = self._frames.next(codes)  # [L + t, K]
        if codes.shape[0] == 0:
            return torch.zeros(0)
        with torch.inference_mode():
            audio = self._frames.codec.decode_step(codes.t()[None], self._state)[0].float().cpu()  # [(L + t) * F]
        return audio[context * self._frames.codec.frame_size :]

    def close(self) -> None:
        self._state = None

    def __enter__(self) -> DirectStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Job:
    """One submission: a stream's next frames and where their audio goes."""

    stream: DecodeStream
    codes: torch.Tensor  # [t, K] int64 (CPU)
    context: int  # leading frames decoded for context only (a prefix): their samples are dropped
    result: Future  # -> float32 [(t - context) * frame_size] (CPU)


class DecodeStream:
    """One request's stream in a `DecodeBatcher` (a `FrameDecoder`; thread-safe; a context manager).

    Created by `DecodeBatcher.open`. `decode` blocks until the batcher has decoded the frames; calls from several
    threads are served one after another. `close` (idempotent, any thread) frees the stream's row; it never waits
    for the other streams.
    """

    def __init__(self, batcher: DecodeBatcher, frames: _Frames) -> None:
        self._batcher = batcher
        self._frames = frames
        self._lock = threading.Lock()  # one submission in flight per stream; guards _frames
        self.closed = False
        self.error: BaseException | None = None  # a failed decode: the stream's state is lost, later calls raise

    @property
    def depth(self) -> int | None:
        """K: given to `open`, or taken from the first frames (None before them)."""
        return self._frames.depth

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [t, K] -> float32 audio [t * frame_size] (CPU).

        Raises:
            ValueError: codes of the wrong shape, type, depth or range (nothing is submitted).
            RuntimeError: the stream or the batcher is closed, or an earlier decode of this stream failed.
        """
        with self._lock:
            if self.error is not None:
                raise RuntimeError(f"an earlier decode of this stream failed: {self.error!r}") from self.error
            codes, context = self._frames.next(codes)  # [L + t, K]
            if codes.shape[0] == 0:
                return torch.zeros(0)
            return self._batcher._submit(self, codes, context).result()

    def close(self) -> None:
        """Ends the stream (a decode waiting in another thread raises); the other streams go on."""
        self._batcher._close_stream(self)

    def __enter__(self) -> DecodeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DecodeBatcher:
    """Decodes the streams of many requests together (see the module docstring).

    Args:
        codec: a `CatCodec` (any device and dtype); the batcher's worker thread is its only streaming user.
        window_s: how long a first submission waits for the others (seconds, >= 0); the wait ends as soon as every
            active stream has submitted, unless one of them is new (then others may be starting too).
        max_pad_ratio: a call pads a submission of t frames to at most `max_pad_ratio * t` frames (>= 1; 1 = one
            call per distinct frame count).

    Use as a context manager, or call `close()`: it stops the worker thread and fails the open streams.
    """

    def __init__(
        self, codec: Any, window_s: float = DEFAULT_WINDOW_S, max_pad_ratio: float = DEFAULT_MAX_PAD_RATIO
    ) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s must be >= 0 seconds, got {window_s!r}")
        if not max_pad_ratio >= 1:
            raise ValueError(f"max_pad_ratio must be >= 1, got {max_pad_ratio!r}")
        self.codec = codec
        self.window_s = float(window_s)
        self.max_pad_ratio = float(max_pad_ratio)
        self.calls = 0  # decode_step calls made so far
        self.window_waits = 0  # gatherings that lasted the whole window (a stream joined, or one was late)
        self._cond = threading.Condition()
        # Guarded by _cond: submissions waiting for the worker, streams open, streams opened / closed since the
        # worker last updated its rows, and the stop flag.
        self._jobs: dict[DecodeStream, _Job] = {}
        self._open: set[DecodeStream] = set()
        self._joining: list[DecodeStream] = []
        self._leaving: set[DecodeStream] = set()
        self._stopping = False
        # Owned by the worker thread: the pool state (None when no stream has a row) and the stream of each row.
        self._state: Any = None
        self._rows: list[DecodeStream] = []
        self._worker = threading.Thread(target=self._run, name="cat-tts-decode", daemon=True)
        self._worker.start()

    @property
    def open_streams(self) -> int:
        """Streams taking part (submitted at least once, not closed)."""
        with self._cond:
            return len(self._open)

    def open(self, depth: int | None = None, prefix_codes: torch.Tensor | None = None) -> DecodeStream:
        """A new stream (it takes part from its first `decode`; nothing is decoded here).

        Args:
            depth: layers per frame K (1..32); None = the K of the first frames (a depth "auto" request's K is
                final only once it is admitted).
            prefix_codes: optional [K', L] codes (K' >= K) decoded with the first frames for codec context only,
                e.g. a prompt that ends with audio which the frames continue; their samples are dropped.

        Raises:
            ValueError: a bad depth or prefix.
            RuntimeError: the batcher is closed.
        """
        stream = DecodeStream(self, _Frames(self.codec, depth, prefix_codes))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the decode batcher is closed")
        return stream

    def close(self) -> None:
        """Stops the worker (after the call in progress); waiting and later decodes raise RuntimeError."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not threading.current_thread():
            self._worker.join()

    def __enter__(self) -> DecodeBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- called from the streams' threads ----
    def _submit(self, stream: DecodeStream, codes: torch.Tensor, context: int) -> Future:
        job = _Job(stream, codes, context, Future())
        with self._cond:
            if self._stopping:
                raise RuntimeError("the decode batcher is closed")
            if stream.closed:
                raise RuntimeError("the decode stream is closed")
            assert stream not in self._jobs, "a stream has one submission in flight (its lock)"
            if stream not in self._open:  # its first submission: it takes part from now on
                self._open.add(stream)
                self._joining.append(stream)
            self._jobs[stream] = job
            self._cond.notify_all()
        return job.result

    def _close_stream(self, stream: DecodeStream) -> None:
        with self._cond:
            if stream.closed:
                return
            stream.closed = True
            if stream in self._open:
                self._open.discard(stream)
                self._leaving.add(stream)
            job = self._jobs.pop(stream, None)
            self._cond.notify_all()  # the others may now all have submitted
        if job is not None:
            job.result.set_exception(RuntimeError("the decode stream was closed while decoding"))

    # ---- the worker thread ----
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    jobs = self._gather()
                    joining, leaving = self._joining, self._leaving
                    self._joining, self._leaving = [], set()
                    stopping = self._stopping
                if stopping:  # later submissions are refused (_submit checks the flag under the lock)
                    self._fail(jobs, RuntimeError("the decode batcher is closed"))
                    self._state, self._rows = None, []
                    return
                try:
                    self._update_rows(joining, leaving)
                    for group in self._groups(jobs):
                        self._decode(group)
                except BaseException as err:  # a bug here must fail the callers, not leave them waiting
                    logger.exception("decode batcher worker failed")
                    self._fail([j for j in jobs if not j.result.done()], err)
                    with self._cond:
                        self._stopping = True

    def _gather(self) -> list[_Job]:
        """Waits (holding _cond) for submissions, then for the others; returns the jobs to run now."""
        while not (self._jobs or self._leaving or self._stopping):
            self._cond.wait()
        deadline = time.monotonic() + self.window_s
        # Early end: every active stream has submitted. Not when a stream joins (its first submission): requests
        # admitted together start together, and the window lets the others join the same call.
        while self._jobs and not self._stopping and (self._joining or not self._open.issubset(self._jobs)):
            left = deadline - time.monotonic()
            if left <= 0:
                self.window_waits += 1
                break
            self._cond.wait(left)
        jobs = list(self._jobs.values())
        self._jobs.clear()
        return jobs

    def _update_rows(self, joining: list[DecodeStream], leaving: set[DecodeStream]) -> None:
        """Drops the rows of closed streams and appends rows for new ones (at frame 0)."""
        keep = [i for i, stream in enumerate(self._rows) if stream not in leaving]
        joining = [s for s in joining if s not in leaving]
        if len(keep) < len(self._rows):
            self._rows = [self._rows[i] for i in keep]
            if not self._rows:
                self._state = None  # frees the pool's buffers
            else:
                self._state.keep_rows(keep)
        if joining:
            if self._state is None:
                self._state = self.codec.new_stream_state(len(joining))
            else:
                self._state.add_rows(len(joining))
            self._rows += joining

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """The calls: the most frames first, each taking every job padded to at most max_pad_ratio times its frames;
        each call's rows in pool order (all rows in order need no gather)."""
        jobs = sorted(jobs, key=lambda j: -j.codes.shape[0])
        groups = []
        while jobs:
            longest = jobs[0].codes.shape[0]
            group = [j for j in jobs if j.codes.shape[0] * self.max_pad_ratio >= longest]
            jobs = jobs[len(group) :]  # sorted: the group is a prefix
            groups.append(group)
        row = {stream: i for i, stream in enumerate(self._rows)}
        return [sorted(group, key=lambda j: row[j.stream]) for group in groups]

    def _decode(self, group: list[_Job]) -> None:
        """One decode_step for a group of jobs; each job's future gets its audio (or the call's error)."""
        row = {stream: i for i, stream in enumerate(self._rows)}
        frames = [j.codes.shape[0] for j in group]
        depths = [j.codes.shape[1] for j in group]
        t, k = max(frames), max(depths)
        codes = torch.zeros(len(group), k, t, dtype=torch.long)  # [R, K, t]; zeros where a row is padded
        for i, job in enumerate(group):
            codes[i, : depths[i], : frames[i]] = job.codes.t()
        try:
            audio = self.codec.decode_step(
                codes,
                self._state,
                rows=[row[j.stream] for j in group],
                lengths=None if min(frames) == t else frames,
                depths=None if min(depths) == k else depths,
            )
            audio = audio.float().cpu()  # [R, t * frame_size]
        except Exception as err:
            for job in group:
                job.stream.error = err
            self._fail(group, err)
            return
        finally:
            self.calls += 1
        size = self.codec.frame_size
        for i, job in enumerate(group):
            job.result.set_result(audio[i, job.context * size : frames[i] * size].clone())

    @staticmethod
    def _fail(jobs: list[_Job], err: BaseException) -> None:
        for job in jobs:
            if not job.result.done():
                job.result.set_exception(err)
