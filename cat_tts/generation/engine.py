"""The inference engine: a pool of slots advanced one frame at a time, requests joining and leaving between frames.

Shapes: B slots (the pool: the batch), b slots in a step (the batch bucket), R rows per slot, T prompt rows,
N layers of the grid, K a request's depth, C = 1 + N channels.

Every caller (`CatTTSModel.generate`, `CatTTS`, infer.py, the demo, the evaluator, the server) runs this one path.

* The device side (`cat_tts.generation.units.FrameRunner`) holds typed, preallocated state: per slot, the temporal
  KV rows (`SlotKVCache`, R rows), the depth KV cache (1+N positions), the next depth input, the frame being built,
  the request's depth K, its sampling settings and seed key as tensors, its repetition history, its frame counter
  and end flag. Nothing is allocated or concatenated per frame; every tensor keeps its address.
* `Engine.step()` admits queued requests into free slots, runs prompt prefill in fixed chunks up to a row budget
  (`prefill_budget`: a long prompt never stalls the running requests for more than that), then advances every
  generating slot by one frame:
  depth position 0 samples the control token, positions 1..K_max sample the layers (a slot whose K is smaller
  ignores the extra positions), then one temporal step appends the frame to every slot's cache.
* Sampling happens inside those units (`cat_tts.generation.sampling`): per-slot settings as tensors, counter-based
  Gumbel-max noise keyed by (seed, frame, channel), so a seeded request yields the same frames alone or beside
  others, and greedy decoding is exactly `argmax`.
* The host reads back frames and end-of-speech flags once every `sync_every` frames (and right after a request's
  first frame, for latency), never inside a frame.
* Compilation (`EngineConfig.compile`): on CUDA the units are captured as CUDA graphs per batch bucket (`auto`);
  `True` adds `torch.compile(fullgraph=True)` (on the CPU: compiled units, no graphs).
* Requests wait in a bounded queue when every slot is busy (`QueueFull` beyond it); they leave on audio_end, their
  frame budget or cancellation, and free their slot at once. A failing step fails the requests in flight
  (`EngineError`) and the engine keeps serving.
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

from cat_tts.errors import InputError, UserError
from cat_tts.generation.config import EngineConfig, GenerationConfig
from cat_tts.generation.request import FinishReason, Request, RequestState
from cat_tts.generation.units import FrameRunner

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel

logger = logging.getLogger(__name__)

# Frame budget when none is given: a floor plus frames per prompt row (runaway protection).
MIN_DEFAULT_FRAMES = 64
DEFAULT_FRAMES_PER_PROMPT_ROW = 12


def default_budget(prompt_rows: int) -> int:
    """The frame budget of a request that gives none (before the slot capacity bounds it)."""
    return MIN_DEFAULT_FRAMES + DEFAULT_FRAMES_PER_PROMPT_ROW * prompt_rows


class QueueFull(UserError):
    """Every slot is busy and the waiting queue is full; retry later."""


class EngineClosed(UserError):
    """The engine no longer admits requests (it is shutting down)."""


class EngineError(RuntimeError):
    """The engine failed while running a request (the traceback is in the log); other requests are unaffected."""


@dataclass
class EngineStats:
    """A snapshot of the engine (for /health, /metrics and benchmarks)."""

    active_requests: int  # requests holding a slot (prefilling or generating)
    queued_requests: int  # requests waiting for a slot
    busy_slots: int  # slots in use
    max_slots: int  # S
    frames_generated: int  # frames produced since start (all requests, cumulative)
    frame_steps: int  # frame steps run since start
    requests_finished: int  # requests ended by audio_end or budget since start
    requests_cancelled: int  # cancelled since start
    requests_failed: int  # failed since start
    accepting: bool  # False once the engine is closing
    warm: bool  # True once warm-up (CUDA graph capture / compilation) is done


class Engine:
    """Continuous batching over a pool of slots (see the module docstring).

    Args:
        model: a `CatTTSModel` (put in eval mode; its attention runs SDPA or eager: FlashAttention-2 takes no masks).
        config: sizes and compilation.

    Use: `request = engine.submit(prompt [T, 1+N], GenerationConfig(...))`, then `request.chunks()` /
    `request.result()`; with `engine.start()` a background thread steps the engine and any number of threads consume.
    """

    def __init__(self, model: CatTTSModel, config: EngineConfig | None = None) -> None:
        self.model = model.eval()
        self.config = config or EngineConfig()
        cfg = self.config
        if model.attn_implementation == "flash_attention_2":
            logger.info("the engine runs attention with SDPA (FlashAttention-2 takes no per-slot masks)")
            model.set_attn_implementation("sdpa")
        self.n_vq = model.config.n_vq
        self.runner = FrameRunner(model, self.config)  # the device side: slot tensors, units, compilation, graphs

        self._mutex = threading.Lock()  # guards the queue, the slot table and every Request's consumer fields
        self._changed = threading.Condition(self._mutex)  # notified whenever requests progress
        self._step_lock = threading.Lock()  # one thread runs `step()` at a time
        self._queue: deque[Request] = deque()
        self._slots: list[Request | None] = [None] * cfg.max_slots
        self._ids = itertools.count()
        self._window = 0  # frames in the history window since the last host read
        self._accepting = True
        self._thread: threading.Thread | None = None
        self._stop = False
        self._counters = dict(frames=0, steps=0, finished=0, cancelled=0, failed=0)

    # ------------------------------------------------------------------ public API
    @property
    def max_slots(self) -> int:
        """B, the number of slots."""
        return self.config.max_slots

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch sizes a frame runs at."""
        return self.runner.buckets

    @property
    def uses_cuda_graphs(self) -> bool:
        """True when frames replay captured CUDA graphs."""
        return self.runner.uses_cuda_graphs

    @property
    def uses_compile(self) -> bool:
        """True when the frame units run through torch.compile."""
        return self.runner.uses_compile

    @property
    def warm(self) -> bool:
        """True once the units are compiled / the CUDA graphs captured (always true when eager)."""
        return self.runner.warm

    def submit(
        self,
        prompt: torch.Tensor,
        config: GenerationConfig | None = None,
        max_new_frames: int | None = None,
        wait: bool = False,
    ) -> Request:
        """Queues a request; it joins the running batch at the next frame boundary with a free slot.

        Args:
            prompt: `[T, 1+N]` int64 prompt grid (no padding).
            config: generation settings (depth, sampling, seed, frame limits).
            max_new_frames: frame budget (overrides `config.max_new_frames`); None = the config's, else a default
                from the prompt length. Bounded by the slot capacity (`max_rows`).
            wait: when the queue is full, wait for room (driving the engine if no background thread runs it)
                instead of raising `QueueFull`.

        Raises:
            InputError: a malformed prompt, a depth outside 1..N, a budget that does not fit a slot.
            QueueFull: the queue is full (and `wait` is False).
            EngineClosed: the engine is shutting down.
        """
        config = config or GenerationConfig()
        depth = config.resolved_depth(self.n_vq)
        prompt = self._check_prompt(prompt)
        rows = prompt.shape[0]
        room = self.config.max_rows - self.config.sync_every - rows
        budget = max_new_frames if max_new_frames is not None else config.max_new_frames
        if budget is None:
            budget = min(room, default_budget(rows))
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise InputError(f"max_new_frames must be a positive integer, got {budget!r}")
        if budget > room:
            raise InputError(
                f"a prompt of {rows} rows plus {budget} new frames does not fit a slot of {self.config.max_rows} rows "
                f"(room for {max(room, 0)} frames): shorten the reference or the text, lower max_new_frames, or raise "
                "the engine's max_rows"
            )
        if budget < config.min_new_frames:
            raise InputError(f"min_new_frames ({config.min_new_frames}) must not exceed the budget ({budget})")
        while True:
            with self._mutex:
                if not self._accepting:
                    raise EngineClosed("the engine is shutting down and no longer accepts requests")
                if len(self._queue) < self._free_slots() + self.config.max_queue:
                    request = Request(self, next(self._ids), prompt, config, depth, budget)
                    self._queue.append(request)
                    self._changed.notify_all()
                    return request
                if not wait:
                    raise QueueFull(
                        f"all {self.max_slots} slots are busy and {len(self._queue)} requests are waiting; retry later"
                    )
                if self._background():
                    self._changed.wait(0.05)
                    continue
            self._drive()

    def _check_prompt(self, prompt: torch.Tensor) -> torch.Tensor:
        """Checks a prompt grid on the host: a bad id would otherwise fail deep inside an embedding (on CUDA: a
        device-side assert that poisons the whole process)."""
        c = 1 + self.n_vq
        if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] != c or prompt.shape[0] < 1:
            got = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
            raise InputError(f"a prompt must be an integer grid [T >= 1, {c}], got {got}")
        if prompt.dtype.is_floating_point or prompt.dtype == torch.bool:
            raise InputError(f"a prompt must hold integer token ids, got {prompt.dtype}")
        prompt = prompt.detach().to("cpu", torch.long).contiguous()
        text, codes = prompt[:, 0], prompt[:, 1:]
        vocab, pad = self.runner.text_vocab, self.runner.pad_code
        if int(text.min()) < 0 or int(text.max()) >= vocab:
            raise InputError(f"prompt text ids must be in 0..{vocab - 1}")
        if int(codes.min()) < 0 or int(codes.max()) > pad:
            raise InputError(f"prompt audio codes must be in 0..{pad} (the pad code)")
        return prompt

    def stats(self) -> EngineStats:
        """A consistent snapshot of the engine's load and counters."""
        with self._mutex:
            busy = sum(r is not None for r in self._slots)
            return EngineStats(
                active_requests=busy,
                queued_requests=len(self._queue),
                busy_slots=busy,
                max_slots=self.max_slots,
                frames_generated=self._counters["frames"],
                frame_steps=self._counters["steps"],
                requests_finished=self._counters["finished"],
                requests_cancelled=self._counters["cancelled"],
                requests_failed=self._counters["failed"],
                accepting=self._accepting,
                warm=self.runner.warm,
            )

    def can_admit(self) -> bool:
        """True when a `submit` now would not raise `QueueFull` / `EngineClosed`."""
        with self._mutex:
            return self._accepting and (len(self._queue) < self._free_slots() + self.config.max_queue)

    def warmup(self) -> None:
        """Captures the CUDA graphs / compiles the units for every bucket before the first request (idempotent).

        Runs by itself at the first step with work; call it at start-up so that the first request does not pay it (the
        server reports ready only after it).
        """
        with self._step_lock:
            with torch.inference_mode():
                self._warmup()

    def _warmup(self) -> None:
        if any(r is not None for r in self._slots):
            raise RuntimeError("warm-up must run while no request holds a slot")  # its runs touch every slot's buffers
        self.runner.warmup()
        self._window = 0

    def step(self) -> bool:
        """Admits, prefills up to `prefill_budget` prompt rows, and runs one frame for every generating slot.

        Returns:
            False when there was nothing to do.
        """
        with self._step_lock:
            try:
                with torch.inference_mode():
                    return self._step()
            except Exception as err:  # a failing step must not take the engine (or the server) down
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
                busy = bool(self._queue) or any(r is not None for r in self._slots)
                if not busy:
                    break
                if self._background():
                    self._changed.wait(0.05)
                    continue
            self._drive()
        with self._mutex:
            pending = list(self._queue) + [r for r in self._slots if r is not None]
        for request in pending:
            request.cancel()
        if not self._background():
            self._drive()  # release the cancelled slots
        self.stop()
        self._drive()

    # ------------------------------------------------------------------ consumer side (called by Request)
    def _background(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop

    def _drive(self) -> None:
        """Runs one step from a consumer thread (when no background thread does)."""
        self.step()

    def _cancel(self, request: Request) -> None:
        with self._mutex:
            if request.done:
                return
            request._cancel = True
            if request.state == RequestState.QUEUED:
                self._queue.remove(request)
                self._end(request, RequestState.CANCELLED, "cancelled")
            self._changed.notify_all()
        if self._step_lock.acquire(blocking=False):  # no step running: free the slot now, not at the next step
            try:
                with self._mutex:
                    self._release_cancelled()
                    self._changed.notify_all()
            finally:
                self._step_lock.release()

    def _next_chunk(self, request: Request, timeout: float | None) -> torch.Tensor | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._mutex:
                if request._chunks:
                    return request._chunks.popleft()
                if request.done:
                    if request.state == RequestState.FAILED and request.error is not None:
                        raise request.error
                    return None
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"request {request.id} made no progress for {timeout} s")
                if self._background():
                    self._changed.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic())))
                    continue
            self._drive()

    # ------------------------------------------------------------------ the step
    def _loop(self) -> None:
        while True:
            with self._mutex:
                if self._stop:
                    return
                idle = not self._queue and all(r is None for r in self._slots)
                if idle:
                    self._changed.wait(0.1)
                    continue
            self.step()

    def _free_slots(self) -> int:
        return sum(r is None for r in self._slots)

    def _step(self) -> bool:
        if not self.warm and self._queue and all(r is None for r in self._slots):
            self._warmup()  # before the first admission: its runs may touch every slot
        with self._mutex:
            self._release_cancelled()
            admitted = self._admit()
        for slot, request in admitted:
            self.runner.setup_slot(slot, request)
        did_prefill = self._prefill_once()
        running = self._running()
        if running and self._window and any(self._slots[s].frames_run == 0 for s in running):
            self._sync(self._bucket(running))  # a request starts: the frames of the current window go out first
            running = self._running()
        if not running:
            return did_prefill or bool(admitted)
        b = self._bucket(running)
        k_max = max(self._slots[s].depth for s in running)
        full = any(self._slots[s].config.control_tokens == "full" for s in running)
        self.runner.frame(b, k_max, full)
        self.runner.record(b, self._window)
        self._window += 1
        first = False
        over_budget = False
        for s in running:
            request = self._slots[s]
            first |= request.frames_run == 0
            request.frames_run += 1
            over_budget |= request.frames_run >= request.budget
        self._counters["steps"] += 1
        if self._window == self.config.sync_every or first or over_budget:
            self._sync(b)
        return True

    def _running(self) -> list[int]:
        return [s for s, r in enumerate(self._slots) if r is not None and r.state == RequestState.RUNNING]

    def _bucket(self, running: list[int]) -> int:
        """The smallest batch bucket that holds every generating slot (slots fill from index 0)."""
        return next(size for size in self.runner.buckets if size > max(running))

    # ------------------------------------------------------------------ admission, prefill, delivery
    def _admit(self) -> list[tuple[int, Request]]:
        admitted = []
        while self._queue and self._free_slots():
            slot = self._slots.index(None)
            request = self._queue.popleft()
            request.slot = slot
            request.state = RequestState.PREFILL
            self._slots[slot] = request
            admitted.append((slot, request))
        return admitted

    def _prefill_once(self) -> bool:
        """Runs prompt chunks, first come first served, until `prefill_budget` rows ran in this step (whole chunks of
        the request's own fixed chunk grid, so its cache never depends on its neighbours); when no slot is generating,
        at least until one prompt is complete. Running requests therefore wait for at most one budget per frame."""
        did, rows = False, 0
        while True:
            pending = [r for r in self._slots if r is not None and r.state == RequestState.PREFILL]
            if not pending:
                return did
            if did and rows >= self.config.prefill_budget and self._running():
                return did
            request = min(pending, key=lambda r: r.id)
            rows += min(self.config.prefill_chunk, request.prompt_rows - request.prefilled)
            if self.runner.prefill_chunk(request):
                request.state = RequestState.RUNNING
            did = True

    def _sync(self, b: int) -> None:
        """Reads the frames of the current window back to the host (one synchronisation) and delivers them."""
        n = self._window
        if n == 0:
            return
        tokens, audio, ended = self.runner.read(b, n)  # [b, n, C], [b, n], [b]
        self._window = 0
        with self._mutex:
            for slot in range(b):
                request = self._slots[slot]
                if request is None or request.state != RequestState.RUNNING:
                    continue
                ran = min(n, request.frames_run)  # a request that started in this window ran its last `ran` frames
                frames = tokens[slot, n - ran :][audio[slot, n - ran :]][:, : 1 + request.depth]  # [t, 1+K]
                if frames.shape[0]:
                    request._chunks.append(frames)
                    request._frames.append(frames)
                    request.num_frames += frames.shape[0]
                    self._counters["frames"] += frames.shape[0]
                    if request.first_frame_at is None:
                        request.first_frame_at = time.perf_counter()
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
            if request is not None and request._cancel:
                self._release(slot)
                self._end(request, RequestState.CANCELLED, "cancelled")

    def _end(self, request: Request, state: RequestState, reason: FinishReason) -> None:
        request.state = state
        request.finish_reason = reason
        request.finished_at = time.perf_counter()
        request.slot = None
        key = {RequestState.FINISHED: "finished", RequestState.CANCELLED: "cancelled", RequestState.FAILED: "failed"}
        self._counters[key[state]] += 1

    def _fail_all(self, error: BaseException) -> None:
        message = f"the engine failed while running this request ({type(error).__name__}: {error})"
        with self._mutex:
            for slot, request in enumerate(self._slots):
                if request is not None:
                    self._slots[slot] = None
                    request.error = EngineError(message)  # a fresh error per request: the original's traceback
                    # (logged) holds the step's frames, which must not keep requests alive
                    self._end(request, RequestState.FAILED, "error")
            self._window = 0
            self._changed.notify_all()
        try:
            self.runner.reset()
        except Exception:  # pragma: no cover - the device itself is broken
            logger.exception("could not reset the engine state")
