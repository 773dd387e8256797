"""The frames between host reads: the window the device fills, the reads in flight, and the frame times they measure.

Shapes: b slots in a frame, n frames in the window, C = 1 + N channels.

The device writes every frame into a window of `sync_every` rows per slot; the host starts a read of the window (an
asynchronous copy into pinned memory on CUDA) and hands the frames to their requests one step later, while the device
runs the next frame. Each read also measures the wall time per frame of its window, which the scheduling policy's
`FrameClock` keeps per (bucket, K_max): the time spent admitting and prefilling new requests counts (it is load the
running streams wait for), the time the engine waited idle does not.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cat_tts.generation.policy import FrameClock
from cat_tts.generation.runner import FrameRunner, PendingRead

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.generation.request import Request


@dataclass
class Read:
    """A read in flight: the copy, and which request ran how many of the window's last frames in which slot."""

    pending: PendingRead
    ran: list[tuple[int, Request, int]]  # (slot, request, frames of the window it ran)


@dataclass
class ReadBack:
    """The window of frames since the last read and the reads not yet delivered."""

    clock: FrameClock = field(default_factory=FrameClock)  # measured seconds per frame
    frames: int = 0  # frames run since the last read
    bucket: int = 0  # the largest bucket of those frames (the slots a read covers)
    k_max: int = 0  # the largest K_max of those frames
    started: float = field(default_factory=time.perf_counter)
    frame_seconds: float | None = None  # the last measured wall time per frame
    reads: deque[Read] = field(default_factory=deque)

    def ran(self, bucket: int, k_max: int) -> None:
        """One more frame in the window."""
        self.frames += 1
        self.bucket, self.k_max = max(self.bucket, bucket), max(self.k_max, k_max)

    def start(self, runner: FrameRunner, ran: list[tuple[int, Request, int]]) -> None:
        """Starts reading the window (no-op when empty) and restarts it; measures the window's time per frame."""
        if not self.frames:
            return
        self.reads.append(Read(runner.start_read(self.bucket, self.frames), ran))
        now = time.perf_counter()
        self.frame_seconds = (now - self.started) / self.frames
        self.clock.observe(self.bucket, self.k_max, self.frame_seconds, self.frames)
        self.frames, self.bucket, self.k_max, self.started = 0, 0, 0, now

    def idle(self) -> None:
        """The engine waited with no request: the next window's clock starts now (a wait is not frame time)."""
        if not self.frames:
            self.started = time.perf_counter()

    def ready(self, all_reads: bool) -> Read | None:
        """The oldest read to deliver now (waiting for its copy), or None: without `all_reads` the newest read is left
        for the next step unless its copy is already done."""
        if not self.reads:
            return None
        if not all_reads and len(self.reads) == 1 and not self.reads[0].pending.ready():
            return None
        return self.reads.popleft()

    def clear(self) -> None:
        """Forgets the window and the reads in flight (after a failed step)."""
        self.frames, self.bucket, self.k_max = 0, 0, 0
        self.reads.clear()
