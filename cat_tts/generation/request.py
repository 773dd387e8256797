"""A generation request as the engine and its consumers see it.

Shapes: T prompt rows, N layers of the grid, K the request's depth, F generated audio frames, t frames in a chunk.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from enum import Enum
from typing import TYPE_CHECKING, Literal

import torch

from cat_tts.generation.config import GenerationConfig

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.generation.engine import Engine


class RequestState(str, Enum):
    """Where a request is."""

    QUEUED = "queued"  # waiting for a slot
    PREFILL = "prefill"  # in a slot, its prompt being run through the temporal transformer
    RUNNING = "running"  # generating frames
    FINISHED = "finished"  # ended by audio_end or by its frame budget
    CANCELLED = "cancelled"  # cancelled by its consumer (or the engine shut down)
    FAILED = "failed"  # the engine raised while running it (`error` says why)


FinishReason = Literal["audio_end", "budget", "cancelled", "error"]


class Request:
    """One generation request in the engine. Created by `Engine.submit`; consumed through `chunks()` / `result()`.

    The frames are `[1+K]` rows: channel 0 (the control token) then the K codes; only audio frames are delivered (the
    audio_end step is not).
    """

    def __init__(
        self, engine: Engine, rid: int, prompt: torch.Tensor, config: GenerationConfig, depth: int, budget: int
    ) -> None:
        self.engine = engine
        self.id = rid
        self.prompt = prompt  # [T, 1+N] int64 on the CPU
        self.config = config
        self.depth = depth  # K
        self.budget = budget  # frame budget
        self.seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.state = RequestState.QUEUED
        self.finish_reason: FinishReason | None = None
        self.error: BaseException | None = None
        self.slot: int | None = None
        self.prefilled = 0  # prompt rows already in the cache
        self.frames_run = 0  # frame steps run for this request (host count)
        self._chunks: deque[torch.Tensor] = deque()  # delivered, not yet consumed: [t, 1+K] int64 (CPU)
        self._frames: list[torch.Tensor] = []  # every delivered chunk (for `result`)
        self.num_frames = 0  # audio frames delivered
        self.submitted_at = time.perf_counter()
        self.first_frame_at: float | None = None
        self.finished_at: float | None = None
        self._cancel = False

    # ------------------------------------------------------------------ consumer API
    @property
    def done(self) -> bool:
        """True once the request has ended (finished, cancelled or failed)."""
        return self.state in (RequestState.FINISHED, RequestState.CANCELLED, RequestState.FAILED)

    @property
    def prompt_rows(self) -> int:
        """T, the prompt length."""
        return self.prompt.shape[0]

    def cancel(self) -> None:
        """Stops the request at the next frame boundary and frees its slot (idempotent)."""
        self.engine._cancel(self)

    def chunks(self, timeout: float | None = None) -> Iterator[torch.Tensor]:
        """Yields the request's audio frames as they are generated, in `[t, 1+K]` chunks (t >= 1).

        Drives the engine from this thread when no background thread runs it. Closing the iterator early cancels
        the request. Raises the engine's error if the request failed, `TimeoutError` after `timeout` seconds
        without progress.
        """
        finished = False
        try:
            while True:
                chunk = self.engine._next_chunk(self, timeout)
                if chunk is None:
                    finished = True
                    return
                yield chunk
        finally:
            if not finished and not self.done:
                self.cancel()

    def result(self, timeout: float | None = None) -> torch.Tensor:
        """Waits for the end and returns all audio frames `[F, 1+K]` (F may be 0)."""
        for _ in self.chunks(timeout):
            pass
        return self.frames

    @property
    def frames(self) -> torch.Tensor:
        """Audio frames delivered so far, `[F, 1+K]`."""
        if not self._frames:
            return torch.zeros(0, 1 + self.depth, dtype=torch.long)
        return torch.cat(self._frames)

    def __repr__(self) -> str:
        return f"Request(id={self.id}, state={self.state.value}, depth={self.depth}, frames={self.num_frames})"
