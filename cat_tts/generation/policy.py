"""The engine's scheduling policy: pure functions of the queue, the slot table and measured frame times that say what
one step does. No tensors, no locks, no model: unit-tested on their own (`tests/generation/test_policy.py`).

Shapes: B slots, b slots in a frame (the batch bucket), K a request's depth.

A step is: admit queued requests into free slots (lowest index first, so the bucket stays small), choosing the depth
of a request that asked for depth "auto"; prefill prompt rows up to a row budget; then one frame for every generating
slot at the smallest bucket that holds them, with the largest depth among them (K_max); read the frames back to the
host every `sync_every` frames, and right after a request's first frame (for latency) or its last one (its budget).

Depth "auto": a frame's cost grows with K_max and with the bucket. A request asking for depth "auto" within
[low, high] gets the highest depth at which the predicted frame time, with it admitted, stays under
`margin x` the real-time period (one frame of audio); under load new requests therefore start lower (at the depth
that would keep real time if every request ran at it), and when load falls they come back up. Before anything was
measured a request gets `high`; alone it gets `high` unless the machine measured even a lone frame at that depth
slower than real time (a CPU at the released sizes): then the highest depth that keeps it in real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Phase = Literal["prefill", "running"]


@dataclass(frozen=True)
class Waiting:
    """A queued request as the policy sees it."""

    request: int  # the request's id (admission order)
    prompt_rows: int  # T
    depths: tuple[int, int]  # the depths it accepts, (low, high); low == high for a fixed depth
    budget: int  # its frame budget
    full_control: bool = False  # channel 0 over the whole text vocabulary


@dataclass(frozen=True)
class Slot:
    """A slot holding a request, as the policy sees it."""

    request: int  # the request's id
    phase: Phase  # "prefill": its prompt is being run; "running": it generates frames
    prompt_rows: int  # T
    prefilled: int  # prompt rows already in the cache
    depth: int  # K
    frames_run: int  # frame steps run for it
    budget: int  # its frame budget
    full_control: bool = False  # channel 0 over the whole text vocabulary (not captured in CUDA graphs)


@dataclass(frozen=True)
class Admission:
    slot: int  # the free slot it takes
    request: int  # the request's id
    depth: int  # K, chosen within the request's range


@dataclass(frozen=True)
class Prefill:
    slot: int
    rows: int  # prompt rows run in this chunk (a whole chunk of the request's fixed chunk grid, or its tail)
    completes: bool  # the prompt is then complete: the slot generates from this step's frame on


@dataclass(frozen=True)
class FramePlan:
    """The frame part of a step."""

    bucket: int  # b: the frame runs the first b slots
    k_max: int  # depth positions 1..k_max run (slots with a smaller K keep the pad code)
    full_control: bool  # some slot samples channel 0 over the whole vocabulary
    read_after: bool  # read back right after this frame


@dataclass(frozen=True)
class StepPlan:
    admit: tuple[Admission, ...] = ()
    prefill: tuple[Prefill, ...] = ()
    frame: FramePlan | None = None  # None: no slot generates


@dataclass(frozen=True)
class Limits:
    """The engine settings the policy reads."""

    buckets: tuple[int, ...]  # batch sizes a frame may run at (ascending; the last = B)
    prefill_chunk: int  # prompt rows per prefill forward
    prefill_budget: int  # prompt rows per step at most (whole chunks, at least one)
    sync_every: int  # frames between host reads
    frame_period: float | None = None  # seconds of audio per frame (real time); None = unknown (auto = high)
    margin: float = 0.8  # depth "auto" keeps the predicted frame time under margin x frame_period

    @classmethod
    def of_engine(cls, config: Any, buckets: tuple[int, ...], frame_rate: float | None, host: bool = False) -> Limits:
        """The limits of an engine configured by `config` (an `EngineConfig`) running at `buckets`; `host`: its frames
        are in host memory (the CPU), where a read costs nothing and is made after every frame (a stream's audio then
        leaves as each frame is generated, not in bunches of `sync_every`)."""
        period = None if frame_rate is None else 1.0 / frame_rate
        return cls(buckets, config.prefill_chunk, config.prefill_budget, 1 if host else config.sync_every, period,
                   config.auto_depth_margin)  # fmt: skip


@dataclass
class FrameClock:
    """Measured frame times per (bucket, K_max): exponential moving averages of wall seconds per frame.

    Prediction for an unmeasured (b, K): the frame time grows linearly with K (one depth position each, plus the
    temporal step worth `temporal_positions` positions), fitted per bucket from the measured depths; a bucket with
    no measurement borrows the nearest measured bucket's (a larger bucket never costs less). A measurement older than
    `max_age_s` is forgotten: only a (b, K) that runs is measured again, so a depth once measured slow would
    otherwise never be tried again after the load that slowed it has gone.
    """

    temporal_positions: float = 4.0  # the temporal step's cost in depth positions, until two depths are measured
    smoothing: float = 0.3  # weight of a new measurement of 4 frames
    max_age_s: float = 10.0  # measurements older than this are forgotten
    now: Callable[[], float] = time.monotonic  # the clock measurements are dated by
    seconds: dict[tuple[int, int], float] = field(default_factory=dict)
    dated: dict[tuple[int, int], float] = field(default_factory=dict)  # when each was last measured

    def observe(self, bucket: int, k_max: int, seconds_per_frame: float, frames: int = 4) -> None:
        """A window of `frames` frames took `seconds_per_frame` each: it weighs as `frames` 1-frame windows would
        (`smoothing` is the weight of a 4-frame window), so a short window (a request's first frame, after its
        prefill) moves the average little."""
        key = (bucket, k_max)
        old = self.seconds.get(key)
        weight = 1.0 - (1.0 - self.smoothing) ** (max(frames, 1) / 4)
        self.seconds[key] = seconds_per_frame if old is None else old + weight * (seconds_per_frame - old)
        self.dated[key] = self.now()

    def predict(self, bucket: int, k_max: int) -> float | None:
        """Predicted seconds per frame, or None before any (recent) measurement."""
        limit = self.now() - self.max_age_s
        for key in [key for key, at in self.dated.items() if at < limit]:
            del self.seconds[key], self.dated[key]
        if (bucket, k_max) in self.seconds:
            return self.seconds[(bucket, k_max)]
        measured = sorted({b for b, _ in self.seconds})
        if not measured:
            return None
        above = [b for b in measured if b >= bucket]
        b = above[0] if above else measured[-1]
        points = sorted((k, t) for (bb, k), t in self.seconds.items() if bb == b)
        if len(points) >= 2:  # a line through the two extreme depths
            (k0, t0), (k1, t1) = points[0], points[-1]
            slope = max((t1 - t0) / (k1 - k0), 0.0)
            estimate = t0 + slope * (k_max - k0)
        else:
            k0, t0 = points[0]
            estimate = t0 * (k_max + 1 + self.temporal_positions) / (k0 + 1 + self.temporal_positions)
        return max(estimate, 0.0)


def waiting(queue: Iterable[Any]) -> list[Waiting]:
    """What the policy sees of the engine's queued requests (`cat_tts.generation.request.Request`)."""
    return [Waiting(r.id, r.prompt_rows, r.depths, r.budget, r.config.control_tokens == "full") for r in queue]


def table(slots: Sequence[Any]) -> list[Slot | None]:
    """What the policy sees of the engine's slot table (requests or None)."""
    return [None if r is None else Slot(r.id, "running" if r.state == "running" else "prefill", r.prompt_rows,
                                        r.prefilled, r.depth, r.frames_run, r.budget,
                                        r.config.control_tokens == "full") for r in slots]  # fmt: skip


def bucket_for(slots: Sequence[int], buckets: Sequence[int]) -> int:
    """The smallest bucket that holds every slot index in `slots` (slots fill from index 0)."""
    top = max(slots)
    return next(size for size in buckets if size > top)


def choose_depth(depths: tuple[int, int], bucket: int, others_k_max: int, clock: FrameClock, limits: Limits) -> int:
    """The depth of a request admitted into a frame of `bucket` slots whose other slots need `others_k_max`.

    The highest depth in `depths` whose predicted frame time stays under `margin x frame_period`. When the frames
    are too slow whatever this request asks (the others run at a high K), the highest depth that would keep real time
    once the others came down to it too: every new request and segment then starts there, and the frames follow.
    `low` when even that fails; `high` when nothing is known (alone before any measurement, or no real-time period).
    """
    low, high = depths
    if low == high or limits.frame_period is None:
        return high
    target = limits.margin * limits.frame_period
    for others in (others_k_max, 0):
        for depth in range(high, low - 1, -1):
            predicted = clock.predict(bucket, max(depth, others))
            if predicted is None or predicted <= target:
                return depth
    return low


def plan_frame(slots: Sequence[Slot | None], window: int, limits: Limits) -> FramePlan | None:
    """The frame of a step over the slot table as it is after admission and prefill (None: nobody generates)."""
    running = [i for i, s in enumerate(slots) if s is not None and s.phase == "running"]
    if not running:
        return None
    starting = any(slots[i].frames_run == 0 for i in running)
    ending = any(slots[i].frames_run + 1 >= slots[i].budget for i in running)
    return FramePlan(
        bucket=bucket_for(running, limits.buckets),
        k_max=max(slots[i].depth for i in running),
        full_control=any(slots[i].full_control for i in running),
        read_after=window + 1 >= limits.sync_every or starting or ending,
    )


def plan_step(
    queue: Sequence[Waiting], slots: Sequence[Slot | None], window: int, clock: FrameClock, limits: Limits
) -> StepPlan:
    """What one step does: admissions (with their depths), prefill chunks, and the frame.

    Args:
        queue: waiting requests, oldest first.
        slots: the slot table (None = free), B entries.
        window: frames run since the last host read.
        clock: measured frame times (for depth "auto").
        limits: the engine's settings.
    """
    table = list(slots)
    admit = []
    for waiting in queue:
        free = next((i for i, s in enumerate(table) if s is None), None)
        if free is None:
            break
        running = [i for i, s in enumerate(table) if s is not None] + [free]
        k_others = max((s.depth for s in table if s is not None), default=0)  # alone: the ceiling, unless measured slow
        depth = choose_depth(waiting.depths, bucket_for(running, limits.buckets), k_others, clock, limits)
        admit.append(Admission(free, waiting.request, depth))
        table[free] = Slot(waiting.request, "prefill", waiting.prompt_rows, 0, depth, 0, waiting.budget,
                           waiting.full_control)  # fmt: skip

    prefill, rows = [], 0
    while True:
        pending = [(s.request, i) for i, s in enumerate(table) if s is not None and s.phase == "prefill"]
        if not pending:
            break
        generating = any(s is not None and s.phase == "running" for s in table)
        if prefill and rows >= limits.prefill_budget and generating:
            break
        _, i = min(pending)  # first come, first served
        s = table[i]
        n = min(limits.prefill_chunk, s.prompt_rows - s.prefilled)
        done = s.prefilled + n >= s.prompt_rows
        prefill.append(Prefill(i, n, done))
        rows += n
        table[i] = Slot(s.request, "running" if done else "prefill", s.prompt_rows, s.prefilled + n, s.depth,
                        s.frames_run, s.budget, s.full_control)  # fmt: skip
    return StepPlan(tuple(admit), tuple(prefill), plan_frame(table, window, limits))
