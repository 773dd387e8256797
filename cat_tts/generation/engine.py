"""The inference engine: a pool of slots advanced one frame at a time, requests joining and leaving between frames.

Shapes: B slots (the pool: the batch), b slots in a step (the batch bucket), R rows per slot, T prompt rows,
N layers of the grid, K a request's depth, C = 1 + N channels.

Every caller (`CatTTSModel.generate`, `CatTTS`, infer.py, the demo, the evaluator, the server) runs this one path,
in three parts of one concern each:

* `cat_tts.generation.policy` decides what a step does (admissions and their depths, prefill chunks, the bucket,
  K_max, when to read back): pure functions of the queue, the slot table and measured frame times.
* this module carries the plan out: the queue and the slot table, the background thread, locks, delivery to the
  requests, cancellation, failures and statistics.
* `cat_tts.generation.runner.FrameRunner` runs frames on the device over preallocated, typed slot state
  (`cat_tts.generation.slots`), one frame being `cat_tts.generation.frame.run_frame`.

A request that cannot be run fails alone: loading its settings into a slot and running its prompt are guarded per
request; a frame that raises is retried once without the requests that joined since the last good frame (they fail);
only a frame that fails again fails the requests in it. The engine keeps serving either way.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cat_tts.generation import policy
from cat_tts.generation.admission import check_prompt, frame_budget
from cat_tts.generation.config import EngineConfig, GenerationConfig
from cat_tts.generation.errors import EngineClosed, EngineError, QueueFull
from cat_tts.generation.readback import ReadBack
from cat_tts.generation.request import FinishReason, Request, RequestState
from cat_tts.generation.runner import FrameRunner

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel

logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """A snapshot of the engine (for /health, /metrics and benchmarks)."""

    active_requests: int  # requests holding a slot (prefilling or generating)
    queued_requests: int  # requests waiting for a slot
    max_slots: int  # B
    frames_generated: int  # audio frames delivered since start (all requests, cumulative)
    frame_steps: int  # frame steps run since start
    requests_finished: int  # requests ended by audio_end or budget since start
    requests_cancelled: int  # cancelled since start
    requests_failed: int  # failed since start
    accepting: bool  # False once the engine is closing
    warm: bool  # True once warm-up (CUDA graph capture / compilation) is done
    frame_seconds: float | None  # the last measured wall time per frame step (None before any)


class Engine:
    """Continuous batching over a pool of slots (see the module docstring).

    Args:
        model: a `CatTTSModel` (put in eval mode; its attention runs SDPA or eager: FlashAttention-2 takes no masks).
        config: sizes and compilation.
        frame_rate: frames per second of audio (the codec's); what real time means for depth "auto" (None: depth
            "auto" always takes its ceiling).

    Use: `request = engine.submit(prompt [T, 1+N], GenerationConfig(...))`, then `request.stream()` /
    `request.result()`; with `engine.start()` a background thread steps the engine and any number of threads consume.
    """

    def __init__(self, model: CatTTSModel, config: EngineConfig | None = None, frame_rate: float | None = None) -> None:
        self.model = model.eval()
        self.config = config or EngineConfig()
        cfg = self.config
        if model.attn_implementation == "flash_attention_2":
            logger.info("the engine runs attention with SDPA (FlashAttention-2 takes no per-slot masks)")
            model.set_attn_implementation("sdpa")
        self.n_vq = model.config.n_vq
        self.runner = FrameRunner(model, cfg)  # the device side: slot tensors, frames, compilation, graphs
        self.limits = policy.Limits.of_engine(cfg, self.runner.buckets, frame_rate, self.runner.device.type == "cpu")
        self.readback = ReadBack()  # the window since the last host read, reads in flight, measured frame times
        self._mutex = threading.Lock()  # guards the queue, the slot table and the requests' states
        self._changed = threading.Condition(self._mutex)  # notified whenever requests progress
        self._step_lock = threading.Lock()  # one thread runs `step()` at a time
        self._queue: deque[Request] = deque()
        self._slots: list[Request | None] = [None] * cfg.max_slots
        self._fresh: set[Request] = set()  # admitted since the last good frame (suspects if a frame fails)
        self._ids = itertools.count()
        self._accepting = True
        self._thread: threading.Thread | None = None
        self._stop = False
        self._counters = dict(frames_generated=0, frame_steps=0, requests_finished=0, requests_cancelled=0,
                              requests_failed=0)  # fmt: skip

    # ------------------------------------------------------------------ public API
    @property
    def background(self) -> bool:
        """True while a background thread steps the engine."""
        return self._thread is not None and self._thread.is_alive() and not self._stop

    def submit(
        self,
        prompt: torch.Tensor,
        config: GenerationConfig | None = None,
        max_new_frames: int | None = None,
        wait: bool = False,
        estimate: int | None = None,
    ) -> Request:
        """Queues a request; it joins the running batch at the next frame boundary with a free slot.

        Args:
            prompt: `[T, 1+N]` int64 prompt grid (no padding).
            config: generation settings (depth or depth "auto", sampling, seed, frame limits).
            max_new_frames: frame budget (overrides `config.max_new_frames`); None = the config's, else
                `estimate`, else a default from the prompt length (`admission.frame_budget`: the one rule).
            wait: when the queue is full, wait for room (driving the engine if no background thread runs it)
                instead of raising `QueueFull`.
            estimate: the caller's estimate of the frames needed (from its text), the budget when none is given.

        Raises:
            InputError: a malformed prompt, a depth outside 1..N, a budget that does not fit a slot.
            QueueFull: the queue is full (and `wait` is False).
            EngineClosed: the engine is shutting down.
        """
        config = config or GenerationConfig()
        depths = config.depth_range(self.n_vq)
        prompt = check_prompt(prompt, self.n_vq, self.runner.text_vocab, self.runner.pad_code)
        asked = max_new_frames if max_new_frames is not None else config.max_new_frames
        budget = frame_budget(self.config, prompt.shape[0], asked, estimate, config.min_new_frames)
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, ()).item())
        while True:
            with self._mutex:
                if not self._accepting:
                    raise EngineClosed("the engine is shutting down and no longer accepts requests")
                if len(self._queue) < self._free_slots() + self.config.max_queue:
                    request = Request(self, next(self._ids), prompt, config, depths, budget, seed)
                    self._queue.append(request)
                    self._changed.notify_all()
                    return request
                if not wait:
                    raise QueueFull(
                        f"all {self.config.max_slots} slots are busy and {len(self._queue)} requests are waiting"
                    )
                if self.background:
                    self._changed.wait(0.05)
                    continue
            self.step()

    def cancel(self, request: Request, reason: FinishReason = "cancelled") -> None:
        """Stops `request` at the next frame boundary (queued: at once) and frees its slot (idempotent).

        `reason` "shutdown" (the engine closing past its grace period) makes the request's consumer raise
        `EngineClosed` instead of ending as if the audio were complete.
        """
        with self._mutex:
            if request.done:
                return
            request.cancel_requested = reason
            if request.state == RequestState.QUEUED:
                self._queue.remove(request)
                self._end(request, RequestState.CANCELLED, reason)
            self._changed.notify_all()
        if self._step_lock.acquire(blocking=False):  # no step running: free the slot now, not at the next step
            try:
                with self._mutex:
                    self._release_cancelled()
                    self._changed.notify_all()
            finally:
                self._step_lock.release()

    def pump(self) -> None:
        """Advances the engine by one step from the calling thread, unless a background thread runs it."""
        if not self.background:
            self.step()

    def stats(self) -> EngineStats:
        """A consistent snapshot of the engine's load and counters."""
        with self._mutex:
            return EngineStats(
                active_requests=sum(r is not None for r in self._slots),
                queued_requests=len(self._queue),
                max_slots=self.config.max_slots,
                **self._counters,
                accepting=self._accepting,
                warm=self.runner.warm,
                frame_seconds=self.readback.frame_seconds,
            )

    def can_admit(self) -> bool:
        """True when a `submit` now would not raise `QueueFull` / `EngineClosed`."""
        with self._mutex:
            return self._accepting and (len(self._queue) < self._free_slots() + self.config.max_queue)

    def warmup(self) -> None:
        """Captures the CUDA graphs / compiles the frame for every bucket before the first request (idempotent).

        Runs by itself at the first step with work; call it at start-up so that the first request does not pay it (the
        server reports ready only after it).
        """
        with self._step_lock, torch.inference_mode():
            self._warmup()

    def step(self) -> bool:
        """Admits, prefills up to `prefill_budget` prompt rows, and runs one frame for every generating slot.

        Returns:
            False when there was nothing to do.
        """
        with self._step_lock:
            try:
                with torch.inference_mode():
                    return self._step()
            except Exception as err:  # not attributable to one request: fail those in flight, keep serving
                logger.exception("engine step failed; failing the requests in flight")
                self._fail_all(err)
                return True

    def start(self) -> None:
        """Runs `step()` in a background thread until `stop()` (idempotent)."""
        with self._mutex:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._loop, name="cat-tts-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops the background thread (requests stay; a caller can keep driving with `step()`)."""
        with self._mutex:
            self._stop = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join()
        with self._mutex:
            self._thread = None

    def close(self, grace_s: float = 0.0) -> None:
        """Stops admitting; lets in-flight and queued requests finish for up to `grace_s` seconds, then cancels the
        rest and stops the background thread."""
        with self._mutex:
            self._accepting = False
            self._changed.notify_all()
        deadline = time.monotonic() + max(grace_s, 0.0)
        while time.monotonic() < deadline:
            with self._mutex:
                if not self._queue and all(r is None for r in self._slots):
                    break
                if self.background:
                    self._changed.wait(0.05)
                    continue
            self.step()
        with self._mutex:
            pending = list(self._queue) + [r for r in self._slots if r is not None]
        for request in pending:
            self.cancel(request, reason="shutdown")
        self.stop()
        self.step()  # release the cancelled slots

    # ------------------------------------------------------------------ the step
    def _loop(self) -> None:
        while True:
            with self._mutex:
                if self._stop:
                    return
                if not self._queue and all(r is None for r in self._slots):
                    self._changed.wait(0.1)
                    self.readback.idle()
                    continue
            self.step()

    def _warmup(self) -> None:
        if any(r is not None for r in self._slots):
            raise RuntimeError("warm-up must run while no request holds a slot")  # its runs touch every slot's buffers
        self.runner.warmup()
        self.readback.clear()

    def _step(self) -> bool:
        if not self.runner.warm and self._queue and all(r is None for r in self._slots):
            try:
                self._warmup()  # before the first admission: its runs may touch every slot
            except Exception as err:  # nothing can run: the waiting requests fail instead of waiting forever
                logger.exception("engine warm-up failed")
                self._fail_all(err, queued=True)
                return True
        with self._mutex:
            self._release_cancelled()
            rb = self.readback
            plan = policy.plan_step(policy.waiting(self._queue), policy.table(self._slots), rb.frames, rb.clock,
                                    self.limits)  # fmt: skip
            admitted = [self._queue.popleft() for _ in plan.admit]
            for request, admission in zip(admitted, plan.admit, strict=True):
                request.admitted(admission.slot, admission.depth)
                self._slots[admission.slot] = request
                self._fresh.add(request)
        faults = 0
        for request in admitted:  # a request whose settings cannot be loaded fails before it shares a frame
            faults += not self._guarded(
                request, "could not load its settings", self.runner.setup_slot, request.slot, request
            )
        for run in plan.prefill:
            request = self._slots[run.slot]
            if request is None or request.state != RequestState.PREFILL:
                continue  # failed above
            if not self._guarded(request, "could not run its prompt", self._prefill, request):
                faults += 1
        frame = plan.frame
        if faults:  # the plan assumed requests that failed: plan the frame over the slots as they are
            with self._mutex:
                frame = policy.plan_frame(policy.table(self._slots), self.readback.frames, self.limits)
        ran = frame is not None and self._run_frame(frame)
        if ran and frame.read_after:
            self._start_read()
        # Frames read back in an earlier step are delivered now, while the device runs this step's frame; the read
        # just started waits for the next step unless it is already there (always on the CPU) or no frame follows.
        self._deliver(all_reads=not ran)
        return bool(ran or plan.admit or plan.prefill)

    def _prefill(self, request: Request) -> None:
        if self.runner.prefill_chunk(request):
            request.state = RequestState.RUNNING

    def _run_frame(self, frame: policy.FramePlan) -> bool:
        """Runs one frame; on failure retries once without the requests that joined since the last good frame."""
        try:
            self.runner.frame(frame.bucket, frame.k_max, frame.full_control)
        except Exception as err:
            suspects = [r for r in self._fresh if r.state == RequestState.RUNNING]
            if not suspects:
                raise
            logger.exception("a frame failed; retrying it without the %d request(s) that just joined", len(suspects))
            for request in suspects:
                self._fail(request, err, "failed in its first frame")
            with self._mutex:
                frame = policy.plan_frame(policy.table(self._slots), self.readback.frames, self.limits)
            if frame is None:
                return False
            self.runner.frame(frame.bucket, frame.k_max, frame.full_control)
        self._fresh.clear()
        with self._mutex:
            running = [r for r in self._slots[: frame.bucket] if r is not None and r.state == RequestState.RUNNING]
            for request in running:
                request.frames_run += 1
            self._counters["frame_steps"] += 1
        self.readback.ran(frame.bucket, frame.k_max)
        return True

    def _guarded(self, request: Request, what: str, fn, *args) -> bool:
        """Runs `fn(*args)` for one request; an error fails that request only. Returns False on failure."""
        try:
            fn(*args)
            return True
        except Exception as err:
            logger.exception("request %d %s; it fails alone", request.id, what)
            self._fail(request, err, what)
            return False

    def _free_slots(self) -> int:
        return sum(r is None for r in self._slots)

    # ------------------------------------------------------------------ delivery, release, failures
    def _start_read(self) -> None:
        """Starts reading the window back to the host (asynchronous on CUDA)."""
        n, b = self.readback.frames, self.readback.bucket
        with self._mutex:  # which request ran how many of the window's frames, as of now
            ran = [(slot, r, min(n, r.frames_run)) for slot, r in enumerate(self._slots[:b])
                   if r is not None and r.state == RequestState.RUNNING]  # fmt: skip
        self.readback.start(self.runner, ran)

    def _deliver(self, all_reads: bool) -> None:
        """Hands the frames of started reads to their requests (the oldest first; see `ReadBack.ready`) and frees the
        slots of requests that ended."""
        pad = self.runner.pad_code
        while (read := self.readback.ready(all_reads)) is not None:
            tokens, audio, ended = read.pending.wait()  # [b, n, C], [b, n], [b]
            n = tokens.shape[1]
            with self._mutex:
                for slot, request, count in read.ran:
                    if request.slot != slot or request.state != RequestState.RUNNING:
                        continue  # cancelled or failed meanwhile
                    frames = tokens[slot, n - count :][audio[slot, n - count :]][:, : 1 + request.depth]  # [t, 1+K]
                    if frames.shape[0] and int(frames[:, 1:].max()) >= pad:  # a pad code: its state is broken
                        self._fail(request, None, "generated an invalid code", locked=True)
                        continue
                    if frames.shape[0]:
                        request.deliver(frames)
                        self._counters["frames_generated"] += frames.shape[0]
                    if bool(ended[slot]):
                        self._release(slot)
                        self._end(request, RequestState.FINISHED, "audio_end")
                    elif request.frames_run >= request.budget:
                        self._release(slot)
                        self._end(request, RequestState.FINISHED, "budget")
                self._changed.notify_all()

    def _release(self, slot: int) -> None:
        """Frees a slot (device flags cleared asynchronously; the next request overwrites the rest)."""
        self.runner.release(slot)
        self._slots[slot] = None

    def _release_cancelled(self) -> None:
        for slot, request in enumerate(self._slots):
            if request is not None and request.cancel_requested:
                self._release(slot)
                self._end(request, RequestState.CANCELLED, request.cancel_requested)

    def _end(self, request: Request, state: RequestState, reason: FinishReason, error: BaseException | None = None):
        self._fresh.discard(request)
        request.finish(state, reason, error)
        self._counters[f"requests_{state.value}"] += 1

    def _fail(self, request: Request, error: BaseException | None, what: str, locked: bool = False) -> None:
        """Fails one request and frees its slot; the others are untouched."""
        cause = f" ({type(error).__name__}: {error})" if error is not None else ""
        # a fresh error: the original's traceback (logged) holds the step's frames, which must not keep requests alive
        failure = EngineError(f"the engine {what} for this request{cause}")
        if not locked:
            self._mutex.acquire()
        try:
            if request.slot is not None:
                self._release(request.slot)
            if not request.done:
                self._end(request, RequestState.FAILED, "error", failure)
            self._changed.notify_all()
        finally:
            if not locked:
                self._mutex.release()

    def _fail_all(self, error: BaseException, queued: bool = False) -> None:
        message = f"the engine failed while running this request ({type(error).__name__}: {error})"
        with self._mutex:
            while queued and self._queue:
                self._end(self._queue.popleft(), RequestState.FAILED, "error", EngineError(message))
            for slot, request in enumerate(self._slots):
                if request is not None:
                    self._slots[slot] = None
                    self._end(request, RequestState.FAILED, "error", EngineError(message))
            self._fresh.clear()
            self.readback.clear()
            self._changed.notify_all()
        try:
            self.runner.reset()
        except Exception:  # pragma: no cover - the device itself is broken
            logger.exception("could not reset the engine state")
