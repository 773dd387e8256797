"""A generation request as the engine and its consumers see it.

Shapes: T prompt rows, N layers of the grid, K the request's depth, F generated audio frames, t frames in a piece.

The request is passive: the engine (the producer) calls `admitted`, `deliver` and `finish`; its consumer reads the
delivered frames from the request's own queue and asks the engine for progress only through the engine's public
`pump()` (when no background thread runs it) and `cancel()`.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Literal

import torch

from cat_tts.generation.config import GenerationConfig
from cat_tts.generation.errors import EngineClosed

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.generation.engine import Engine


class RequestState(str, Enum):
    """Where a request is."""

    QUEUED = "queued"  # waiting for a slot
    PREFILL = "prefill"  # in a slot, its prompt being run through the temporal transformer
    RUNNING = "running"  # generating frames
    FINISHED = "finished"  # ended by audio_end or by its frame budget
    CANCELLED = "cancelled"  # cancelled by its consumer (or the engine shut down)
    FAILED = "failed"  # the engine could not run it (`error` says why)


FinishReason = Literal["audio_end", "budget", "cancelled", "shutdown", "error"]
ENDED = (RequestState.FINISHED, RequestState.CANCELLED, RequestState.FAILED)
_END = object()  # the last item of a request's queue
POLL_S = 0.05  # how long a consumer waits for frames before asking again (background engine)


class Request:
    """One generation request in the engine. Created by `Engine.submit`; consumed through `stream()` / `result()`.

    The frames are `[1+K]` rows: channel 0 (the control token) then the K codes; only audio frames are delivered (the
    audio_end step is not).
    """

    def __init__(
        self,
        engine: Engine,
        rid: int,
        prompt: torch.Tensor,
        config: GenerationConfig,
        depths: tuple[int, int],
        budget: int,
        seed: int,
    ) -> None:
        self.engine = engine
        self.id = rid
        self.prompt = prompt  # [T, 1+N] int64 on the CPU
        self.config = config
        self.depths = depths  # the depths it accepts (low, high); the engine picks `depth` within at admission
        self.depth = depths[1]  # K (final once admitted)
        self.budget = budget  # frame budget
        self.seed = seed
        self.state = RequestState.QUEUED
        self.finish_reason: FinishReason | None = None
        self.error: BaseException | None = None
        self.slot: int | None = None
        self.prefilled = 0  # prompt rows already in the cache
        self.frames_run = 0  # frame steps run for this request (host count)
        self.cancel_requested: FinishReason | None = None  # set by `Engine.cancel`: why it stops
        self.num_frames = 0  # audio frames delivered
        self.submitted_at = time.perf_counter()
        self.admitted_at: float | None = None
        self.first_frame_at: float | None = None
        self.finished_at: float | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # delivered pieces [t, 1+K], then _END
        self._frames: list[torch.Tensor] = []  # every delivered piece (for `frames`)
        self._drained = False

    # ------------------------------------------------------------------ producer side (the engine)
    def admitted(self, slot: int, depth: int) -> None:
        self.slot, self.depth = slot, depth
        self.state = RequestState.PREFILL
        self.admitted_at = time.perf_counter()

    def deliver(self, frames: torch.Tensor) -> None:
        """Hands `[t, 1+K]` audio frames (t >= 1) to the consumer."""
        self._frames.append(frames)
        self.num_frames += frames.shape[0]
        if self.first_frame_at is None:
            self.first_frame_at = time.perf_counter()
        self._queue.put(frames)

    def finish(self, state: RequestState, reason: FinishReason, error: BaseException | None = None) -> None:
        """Ends the request (once); its consumer sees the end after the frames delivered before it."""
        self.state, self.finish_reason, self.error = state, reason, error
        self.slot = None
        self.finished_at = time.perf_counter()
        self._queue.put(_END)

    # ------------------------------------------------------------------ consumer API
    @property
    def done(self) -> bool:
        """True once the request has ended (finished, cancelled or failed)."""
        return self.state in ENDED

    @property
    def prompt_rows(self) -> int:
        """T, the prompt length."""
        return self.prompt.shape[0]

    def cancel(self) -> None:
        """Stops the request at the next frame boundary and frees its slot (idempotent, from any thread)."""
        self.engine.cancel(self)

    def stream(self, timeout: float | None = None) -> Iterator[torch.Tensor]:
        """Yields the request's audio frames as they are generated, `[t, 1+K]` at a time (t >= 1).

        Drives the engine from this thread when no background thread runs it. Closing the iterator early cancels
        the request. A request cut short by the engine raises instead of ending: `EngineError` if it failed,
        `EngineClosed` if the engine shut down before it finished; `TimeoutError` after `timeout` seconds without
        progress.
        """
        finished = False
        try:
            while True:
                piece = self._next(timeout)
                if piece is _END:
                    finished = True
                    if self.state == RequestState.FAILED and self.error is not None:
                        raise self.error
                    if self.finish_reason == "shutdown":
                        raise EngineClosed(f"the engine shut down after {self.num_frames} frames of this request")
                    return
                yield piece
        finally:
            if not finished and not self.done:
                self.cancel()

    def result(self, timeout: float | None = None) -> torch.Tensor:
        """Waits for the end and returns all audio frames `[F, 1+K]` (F may be 0)."""
        for _ in self.stream(timeout):
            pass
        return self.frames

    @property
    def frames(self) -> torch.Tensor:
        """Audio frames delivered so far, `[F, 1+K]`."""
        if not self._frames:
            return torch.zeros(0, 1 + self.depth, dtype=torch.long)
        return torch.cat(self._frames)

    def _next(self, timeout: float | None) -> object:
        if self._drained:
            return _END
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                item = self._queue.get(block=self.engine.background, timeout=POLL_S)
            except queue.Empty:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"request {self.id} made no progress for {timeout} s") from None
                self.engine.pump()
                continue
            self._drained = item is _END
            return item

    def __repr__(self) -> str:
        return f"Request(id={self.id}, state={self.state.value}, depth={self.depth}, frames={self.num_frames})"
