"""The inference engine: a pool of slots advanced one frame at a time, requests joining and leaving between frames.

Shapes: B slots (the pool: the batch), b slots in a step (a prefix of the pool, the batch bucket), R rows per slot,
T prompt rows, N layers of the grid, K a request's depth, C = 1 + N channels, D temporal width, Dd depth width,
V vocabulary.

Every caller (`CatTTSModel.generate`, `CatTTS`, infer.py, the demo, the evaluator, the server) runs this one path.

* State is typed and preallocated (`_SlotState`): per slot, the temporal KV rows (`SlotKVCache`, R rows), the depth
  KV cache (1+N positions), the next depth input, the frame being built, the request's depth K, its sampling settings
  and seed key as tensors, its repetition history, its frame counter and end flag. Nothing is allocated or
  concatenated per frame; every tensor keeps its address.
* `step()` admits queued requests into free slots, runs at most one chunk of prompt prefill (so a long prompt never
  stalls the running requests for more than one chunk), then advances every decoding slot by one frame: position 0
  of the depth transformer samples the control token, positions 1..K_max sample the layers (a slot whose K is smaller
  ignores the extra positions), then one temporal step appends the frame to every slot's cache.
* Sampling happens inside those units (`cat_tts.generation.sampling`): per-slot settings as tensors, counter-based
  Gumbel-max noise keyed by (seed, frame, channel), so a seeded request yields the same frames alone or beside others
  and greedy decoding is exactly `argmax` as before.
* The host reads back frames and end-of-speech flags once every `sync_every` frames (and right after a request's
  first frame, for latency), never inside a frame.
* Compilation (`EngineConfig.compile`): on CUDA the three units are captured as CUDA graphs per batch bucket
  (`auto`); `True` adds `torch.compile(fullgraph=True)` (on the CPU: compiled units, no graphs). Units take the
  channel's modules and the position as arguments, so one compiled code unit serves every layer: nothing recompiles
  across frames, depths or slot occupancy.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

import torch

from cat_tts.errors import InputError, UserError
from cat_tts.generation.config import GenerationConfig
from cat_tts.generation.sampling import gumbel_noise, sample_rows, seed_key, token_hashes

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model import CatTTSModel

logger = logging.getLogger(__name__)

CompileMode = Literal["auto"] | bool

# Frame budget of `model.generate` when none is given: a floor plus frames per prompt row (runaway protection).
_MIN_DEFAULT_FRAMES = 64
_DEFAULT_FRAMES_PER_PROMPT_ROW = 12


class QueueFull(UserError):
    """Every slot is busy and the waiting queue is full; retry later."""


class EngineClosed(UserError):
    """The engine no longer admits requests (it is shutting down)."""


class EngineError(RuntimeError):
    """The engine failed while running a request (the traceback is in the log); other requests are unaffected."""


@dataclass(frozen=True)
class EngineConfig:
    """How the engine is sized and run. Validation raises `InputError` naming the field."""

    max_slots: int = 8  # S: requests generated together (one row of every batched tensor each)
    max_rows: int = 2048  # R: temporal cache rows per slot = prompt rows + generated frames (+ sync_every)
    max_queue: int = 64  # requests waiting for a slot; `submit` raises QueueFull beyond this
    prefill_chunk: int = 256  # prompt rows per prefill forward; one chunk runs between two frames
    sync_every: int = 4  # frames between host reads of the generated frames and end-of-speech flags (>= 1)
    compile: CompileMode = "auto"  # "auto": CUDA graphs on CUDA, eager on CPU; True: also torch.compile; False: eager
    buckets: tuple[int, ...] | None = None  # batch sizes a frame runs at; None = (max_slots,) on CPU (bit-exact
    # batch invariance), powers of two up to max_slots on CUDA (a lone request does not pay for every slot)
    compile_cache: str | None = None  # directory of PyTorch's on-disk compile caches (None: CAT_TTS_COMPILE_CACHE or
    # PyTorch's default); a second start with the same configuration skips most of the compile time

    def __post_init__(self) -> None:
        for name, low in (("max_slots", 1), ("max_rows", 8), ("max_queue", 0), ("prefill_chunk", 1), ("sync_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.compile not in ("auto", True, False):
            raise InputError(f"compile must be 'auto', True or False, got {self.compile!r}")
        if self.buckets is not None:
            if not self.buckets or any(not isinstance(b, int) or not 1 <= b <= self.max_slots for b in self.buckets):
                raise InputError(f"buckets must be batch sizes in 1..max_slots={self.max_slots}, got {self.buckets}")
            if self.max_slots not in self.buckets:
                raise InputError(f"buckets must include max_slots={self.max_slots}, got {self.buckets}")


class RequestState(str, Enum):
    """Where a request is."""

    QUEUED = "queued"  # waiting for a slot
    PREFILL = "prefill"  # in a slot, its prompt being run through the temporal transformer
    RUNNING = "running"  # generating frames
    FINISHED = "finished"  # ended by audio_end or by its frame budget
    CANCELLED = "cancelled"  # cancelled by its consumer (or the engine shut down)
    FAILED = "failed"  # the engine raised while running it (`error` says why)


FinishReason = Literal["audio_end", "budget", "cancelled", "error"]


@dataclass
class FrameStep:
    """Frames delivered to an `on_frame` callback of `generate` (one call per frame, in order)."""

    tokens: torch.Tensor  # [B, 1+K] channel 0 = control token, then K codes
    is_audio: torch.Tensor  # [B] bool: True where this frame is audio (not audio_end, not already finished)
    index: int  # frame index, 0-based


@dataclass
class GenerationOutput:
    """Result of `generate` (a batch of prompt grids)."""

    frames: torch.Tensor  # [B, F, 1+K] audio frames (channel 0 = control token, then K codes); rows >= lengths[b]
    # are padding (text pad id, audio pad code)
    lengths: torch.Tensor  # [B] number of audio frames of each sequence
    finished: torch.Tensor  # [B] bool: True if the sequence ended with audio_end (False: hit the budget)
    prefill_seconds: float  # from the first submission to the last request's first frame
    decode_seconds: float  # time of all frame steps
    steps: int  # frame steps run (including audio_end steps)

    @property
    def codes(self) -> torch.Tensor:
        """`[B, K, F]` codes in the codec layout."""
        return self.frames[:, :, 1:].transpose(1, 2)

    @property
    def frames_per_second(self) -> float:
        """Frame steps per second of decode time."""
        return self.steps / self.decode_seconds if self.decode_seconds > 0 else float("inf")


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

    @property
    def time_to_first_frame(self) -> float | None:
        """Seconds from submission to the delivery of the first audio frame."""
        return None if self.first_frame_at is None else self.first_frame_at - self.submitted_at

    def __repr__(self) -> str:
        return f"Request(id={self.id}, state={self.state.value}, depth={self.depth}, frames={self.num_frames})"


@dataclass
class _SlotState:
    """Every per-slot tensor of the engine, preallocated for the B slots (fixed addresses for CUDA graphs)."""

    hidden: torch.Tensor  # [B, D] temporal state of each slot's last row
    row_embed: torch.Tensor  # [B, D] temporal input of the frame being built (sum of its channels' embeddings)
    x: torch.Tensor  # [B, Dd] next depth position's input
    tokens: torch.Tensor  # [B, C] the frame being built
    is_audio: torch.Tensor  # [B] bool: the current frame is audio
    active: torch.Tensor  # [B] bool: the slot is generating frames
    ended: torch.Tensor  # [B] bool: the slot chose audio_end
    lengths: torch.Tensor  # [B] int64 rows in the temporal cache (= the next row's position and column)
    frame: torch.Tensor  # [B] int64 frames generated by the slot's request
    depth: torch.Tensor  # [B] int64 K
    min_frames: torch.Tensor  # [B] int64 audio_end forbidden before this frame
    keys: torch.Tensor  # [B] int64 seed keys of the noise
    audio_greedy: torch.Tensor  # [B] bool
    audio_temperature: torch.Tensor  # [B] float32
    audio_top_k: torch.Tensor  # [B] int64
    audio_top_p: torch.Tensor  # [B] float32
    repetition_penalty: torch.Tensor  # [B] float32
    control_greedy: torch.Tensor  # [B] bool
    control_temperature: torch.Tensor  # [B] float32
    control_top_k: torch.Tensor  # [B] int64
    control_top_p: torch.Tensor  # [B] float32
    control_full: torch.Tensor  # [B] bool: channel 0 over the whole text vocabulary
    seen: torch.Tensor  # [B, C, V_audio] bool: codes in each layer's history (prompt included; channel 0 unused)
    depth_keys: list[torch.Tensor]  # per depth block [B, Hk, C, Dh]
    depth_values: list[torch.Tensor]
    temporal: Any  # SlotKVCache over [B, Hk, R, Dh] per temporal block
    history: torch.Tensor  # [B, W, C] frames since the last host read (W = sync_every)
    history_audio: torch.Tensor  # [B, W] bool


@dataclass
class _Views:
    """The first B slots of `_SlotState` (views: writes go to the pool) plus the constants a unit needs."""

    b: int
    hidden: torch.Tensor
    row_embed: torch.Tensor
    x: torch.Tensor
    tokens: torch.Tensor
    is_audio: torch.Tensor
    active: torch.Tensor
    ended: torch.Tensor
    lengths: torch.Tensor
    frame: torch.Tensor
    depth: torch.Tensor
    min_frames: torch.Tensor
    keys: torch.Tensor
    audio_greedy: torch.Tensor
    audio_temperature: torch.Tensor
    audio_top_k: torch.Tensor
    audio_top_p: torch.Tensor
    repetition_penalty: torch.Tensor
    control_greedy: torch.Tensor
    control_temperature: torch.Tensor
    control_top_k: torch.Tensor
    control_top_p: torch.Tensor
    control_full: torch.Tensor
    seen: torch.Tensor
    depth_cache: Any  # DepthKVCache over the views
    temporal: Any  # the SlotKVCache (decode mode uses its first B slots)
    columns: torch.Tensor  # [R] int64 0..R-1
    candidates: torch.Tensor  # [2] int64 (continue, audio_end) control tokens
    end_column: torch.Tensor  # [2] bool, True at audio_end's column of `candidates`
    audio_end: int
    pad_code: int
    audio_tokens: torch.Tensor  # [V_audio] token hashes
    control_tokens: torch.Tensor  # [2] token hashes
    text_tokens: torch.Tensor  # [V_text] token hashes (control over the full vocabulary)
    pad_column: torch.Tensor  # [V_audio] bool, True at the pad code


# ---------------------------------------------------------------------------------------------------- frame units
# Free functions over (model, views, ...) so that torch.compile sees plain arguments: one compiled code unit serves
# every layer because the channel's modules and the position are arguments.


def _control_unit(model: CatTTSModel, v: _Views, position: torch.Tensor, full: bool) -> None:
    """Depth position 0: samples channel 0 (continue or audio_end) of every slot, starts the frame."""
    x = model.to_depth(v.hidden)  # [B, Dd]
    h = model.depth_step(x, v.depth_cache, position)  # [B, Dd]
    forbid = (v.frame < v.min_frames)[:, None]  # [B, 1] audio_end not allowed yet
    logits = model.control_logits(h, v.candidates).float()  # [B, 2]
    logits = logits.masked_fill(forbid & v.end_column, float("-inf"))
    noise = gumbel_noise(v.keys, v.frame, position, v.control_tokens)
    args = (v.control_greedy, v.control_temperature, v.control_top_k, v.control_top_p)
    token = v.candidates[sample_rows(logits, *args, noise)]  # [B]
    if full:  # the released behaviour: channel 0 over the whole text vocabulary
        logits = model.control_logits(h).float()  # [B, V_text]
        is_end = torch.arange(logits.shape[-1], device=logits.device) == v.audio_end
        logits = logits.masked_fill(forbid & is_end, float("-inf"))
        noise = gumbel_noise(v.keys, v.frame, position, v.text_tokens)
        token = torch.where(v.control_full, sample_rows(logits, *args, noise), token)
    live = v.active & ~v.ended
    v.is_audio.copy_(live & (token != v.audio_end))
    v.ended.logical_or_(v.active & (token == v.audio_end))
    v.tokens[:, 0] = token
    embedding = model.channel_modules(0).embedding(token)  # [B, D]
    v.row_embed.copy_(embedding)
    v.x.copy_(model.to_depth(embedding))


def _code_unit(model: CatTTSModel, v: _Views, channel: Any, position: torch.Tensor) -> None:
    """Depth position c >= 1: samples layer c of every slot whose depth K >= c (others keep the pad code)."""
    h = model.depth_step(v.x, v.depth_cache, position)  # [B, Dd]
    logits = channel.logits(h).float().masked_fill(v.pad_column, float("-inf"))  # [B, V] pads never sampled
    index = position.view(1)
    seen = v.seen.index_select(1, index).squeeze(1)  # [B, V] this layer's history
    noise = gumbel_noise(v.keys, v.frame, position, v.audio_tokens)
    args = (v.audio_greedy, v.audio_temperature, v.audio_top_k, v.audio_top_p)
    token = sample_rows(logits, *args, noise, seen, v.repetition_penalty)  # greedy rows: plain argmax
    on = v.active & (position <= v.depth)  # [B] the slot generates this layer
    token = torch.where(on, token, torch.full_like(token, v.pad_code))
    v.tokens.index_copy_(1, index, token[:, None])
    hit = torch.zeros_like(seen).scatter_(1, token[:, None], on[:, None])  # [B, V]
    v.seen.index_copy_(1, index, (seen | hit)[:, None])
    embedding = channel.embedding(token)  # [B, D]
    v.row_embed.add_(torch.where(on[:, None], embedding, torch.zeros_like(embedding)))
    v.x.copy_(model.to_depth(embedding))


def _temporal_unit(model: CatTTSModel, v: _Views) -> None:
    """Appends the frame built by the depth units to every slot's temporal cache; updates the hidden states."""
    positions = v.lengths  # [B] each slot's next row = its next position and cache column
    visible = v.columns[None, :] <= positions[:, None]  # [B, R] the slot's rows so far and the new one
    hidden = model.temporal_step(v.row_embed[:, None], positions[:, None], visible[:, None, :], v.temporal)
    v.hidden.copy_(hidden[:, 0])
    step = v.active.long()
    v.lengths.add_(step)
    v.frame.add_(step)


# ---------------------------------------------------------------------------------------------------- the engine


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
        self.device = model.device
        self.n_vq = model.config.n_vq
        ids = model.config.token_ids
        self.audio_end = ids.audio_end
        self.pad_code = model.config.audio_pad_code
        self.text_pad = ids.pad
        self.text_vocab = model.config.vocab_size
        self.audio_vocab = model.config.audio_vocab_size + 1
        self._buckets = self._resolve_buckets()
        self._use_graphs, self._use_compile = self._resolve_compile()
        self._state = self._allocate()
        self._views: dict[int, _Views] = {}
        self._constants = self._make_constants()
        self._positions = [torch.tensor(c, dtype=torch.long, device=self.device) for c in range(1 + self.n_vq)]
        self._channels = [model.channel_modules(c) for c in range(1 + self.n_vq)]
        self._units = self._build_units()
        self._graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self._graph_pool = None
        self.warm = not self._use_graphs and not self._use_compile

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

    # ------------------------------------------------------------------ setup
    def _resolve_buckets(self) -> tuple[int, ...]:
        s = self.config.max_slots
        if self.config.buckets is not None:
            return tuple(sorted(set(self.config.buckets)))
        if self.device.type != "cuda":
            return (s,)
        powers = [2**i for i in range(int(math.log2(s)) + 1) if 2**i < s]
        return tuple(powers + [s])

    def _resolve_compile(self) -> tuple[bool, bool]:
        mode = self.config.compile
        cuda = self.device.type == "cuda"
        if mode == "auto":
            return cuda, False
        if mode is True:
            self._configure_compile_cache()
            return cuda, True
        return False, False

    def _configure_compile_cache(self) -> None:
        """Points PyTorch's on-disk compile caches (inductor FX graphs, AOT autograd) at the configured directory."""
        directory = self.config.compile_cache or os.environ.get("CAT_TTS_COMPILE_CACHE")
        if directory:
            os.makedirs(directory, exist_ok=True)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
        try:
            import torch._functorch.config as functorch_config
            import torch._inductor.config as inductor_config

            inductor_config.fx_graph_cache = True
            functorch_config.enable_autograd_cache = True
        except (ImportError, AttributeError):  # pragma: no cover - older PyTorch
            logger.warning("this PyTorch has no on-disk compile cache; every start compiles again")

    def _allocate(self) -> _SlotState:
        model, cfg, dev = self.model, self.config, self.device
        s, c = cfg.max_slots, 1 + self.n_vq
        d, dd = model.config.hidden_size, model.config.local_hidden_size
        dtype = model.dtype
        lengths = torch.zeros(s, dtype=torch.long, device=dev)
        depth_cache = model.new_depth_cache(s)

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(*shape, dtype=dtype, device=dev)

        return _SlotState(
            hidden=zeros(s, d, dtype=dtype),
            row_embed=zeros(s, d, dtype=dtype),
            x=zeros(s, dd, dtype=dtype),
            tokens=zeros(s, c),
            is_audio=zeros(s, dtype=torch.bool),
            active=zeros(s, dtype=torch.bool),
            ended=zeros(s, dtype=torch.bool),
            lengths=lengths,
            frame=zeros(s),
            depth=zeros(s),
            min_frames=zeros(s),
            keys=zeros(s),
            audio_greedy=zeros(s, dtype=torch.bool),
            audio_temperature=torch.ones(s, device=dev),
            audio_top_k=zeros(s),
            audio_top_p=torch.ones(s, device=dev),
            repetition_penalty=torch.ones(s, device=dev),
            control_greedy=zeros(s, dtype=torch.bool),
            control_temperature=torch.ones(s, device=dev),
            control_top_k=zeros(s),
            control_top_p=torch.ones(s, device=dev),
            control_full=zeros(s, dtype=torch.bool),
            seen=zeros(s, c, self.audio_vocab, dtype=torch.bool),
            depth_keys=depth_cache.keys,
            depth_values=depth_cache.values,
            temporal=model.new_temporal_cache(s, cfg.max_rows, lengths),
            history=zeros(s, cfg.sync_every, c),
            history_audio=zeros(s, cfg.sync_every, dtype=torch.bool),
        )

    def _make_constants(self) -> dict[str, Any]:
        dev = self.device
        ids = self.model.config.token_ids
        pad_column = torch.zeros(self.audio_vocab, dtype=torch.bool, device=dev)
        pad_column[self.pad_code] = True
        return dict(
            columns=torch.arange(self.config.max_rows, device=dev),
            candidates=torch.tensor([ids.audio_assistant_gen_slot, ids.audio_end], device=dev),
            end_column=torch.tensor([False, True], device=dev),
            audio_end=self.audio_end,
            pad_code=self.pad_code,
            audio_tokens=token_hashes(self.audio_vocab, dev),
            control_tokens=token_hashes(2, dev),
            text_tokens=token_hashes(self.text_vocab, dev),
            pad_column=pad_column,
        )

    def _view(self, b: int) -> _Views:
        if b in self._views:
            return self._views[b]
        from cat_tts.model import DepthKVCache

        st = self._state
        views = _Views(
            b=b,
            **{
                name: getattr(st, name)[:b]
                for name in (
                    "hidden row_embed x tokens is_audio active ended lengths frame depth min_frames keys audio_greedy "
                    "audio_temperature audio_top_k audio_top_p repetition_penalty control_greedy control_temperature "
                    "control_top_k control_top_p control_full seen"
                ).split()
            },
            depth_cache=DepthKVCache([k[:b] for k in st.depth_keys], [v[:b] for v in st.depth_values]),
            temporal=st.temporal,
            **self._constants,
        )
        self._views[b] = views
        return views

    def _build_units(self) -> dict[str, Callable]:
        units = {"control": _control_unit, "code": _code_unit, "temporal": _temporal_unit}
        if self._use_compile:
            units = {name: torch.compile(fn, fullgraph=True, dynamic=False) for name, fn in units.items()}
        return units

    # ------------------------------------------------------------------ public API
    @property
    def max_slots(self) -> int:
        """S."""
        return self.config.max_slots

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch sizes a frame runs at."""
        return self._buckets

    @property
    def uses_cuda_graphs(self) -> bool:
        """True when frames replay captured CUDA graphs."""
        return self._use_graphs

    @property
    def uses_compile(self) -> bool:
        """True when the frame units run through torch.compile."""
        return self._use_compile

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
            budget = min(room, _MIN_DEFAULT_FRAMES + _DEFAULT_FRAMES_PER_PROMPT_ROW * rows)
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
        if int(text.min()) < 0 or int(text.max()) >= self.text_vocab:
            raise InputError(f"prompt text ids must be in 0..{self.text_vocab - 1}")
        if int(codes.min()) < 0 or int(codes.max()) > self.pad_code:
            raise InputError(f"prompt audio codes must be in 0..{self.pad_code} (the pad code)")
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
                warm=self.warm,
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
        if self.warm:
            return
        if any(r is not None for r in self._slots):
            raise RuntimeError("warm-up must run while no request holds a slot")  # its runs touch every slot's buffers
        start = time.perf_counter()
        for b in self._buckets:
            self._frame(b, self.n_vq, full=False)
            if self._use_compile and not self._use_graphs:
                self._frame(b, self.n_vq, full=False)  # a second run: nothing may recompile
        self._reset_state()
        self.warm = True
        logger.info(
            "engine warm in %.1f s (buckets %s, CUDA graphs %s, torch.compile %s)",
            time.perf_counter() - start,
            self._buckets,
            self._use_graphs,
            self._use_compile,
        )

    def step(self) -> bool:
        """Admits, prefills one chunk, and runs one frame for every generating slot.

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
            self._setup_slot(slot, request)
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
        self._frame(b, k_max, full)
        st = self._state
        st.history[:b, self._window].copy_(st.tokens[:b])
        st.history_audio[:b, self._window].copy_(st.is_audio[:b])
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
        return next(size for size in self._buckets if size > max(running))

    def _frame(self, b: int, k_max: int, full: bool) -> None:
        """One frame for the first `b` slots: depth positions 0..k_max, then the temporal step."""
        views = self._view(b)
        if not self._use_graphs:
            self._units["control"](self.model, views, self._positions[0], full)
            for c in range(1, k_max + 1):
                self._units["code"](self.model, views, self._channels[c], self._positions[c])
            self._units["temporal"](self.model, views)
            return
        if full:  # channel 0 over the whole vocabulary: not captured (the released-code parity mode)
            self._units["control"](self.model, views, self._positions[0], True)
        else:
            self._replay(("control", b), lambda: self._units["control"](self.model, views, self._positions[0], False))
        for c in range(1, k_max + 1):
            channel, position = self._channels[c], self._positions[c]
            self._replay(("code", b, c), lambda ch=channel, p=position: self._units["code"](self.model, views, ch, p))
        self._replay(("temporal", b), lambda: self._units["temporal"](self.model, views))

    def _replay(self, key: tuple, run: Callable[[], None]) -> None:
        graph = self._graphs.get(key)
        if graph is None:
            try:
                graph = self._capture(run)
            except Exception:  # a kernel that cannot be captured: keep serving, eagerly
                logger.exception("CUDA graph capture of %s failed; the engine runs eagerly from now on", key)
                self._use_graphs = False
                self._graphs.clear()
                run()
                return
            self._graphs[key] = graph
        graph.replay()

    def _capture(self, run: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Warm-up runs on a side stream, then capture (the warm-up runs touch the bucket's slot buffers: captures
        happen in `warmup()` or, lazily, only for buckets whose extra rows are free)."""
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            run()
        return graph

    # ------------------------------------------------------------------ admission, prefill, delivery
    def _admit(self) -> list[tuple[int, Request]]:
        admitted = []
        while self._queue and self._accepting_slots():
            slot = self._slots.index(None)
            request = self._queue.popleft()
            request.slot = slot
            request.state = RequestState.PREFILL
            self._slots[slot] = request
            admitted.append((slot, request))
        return admitted

    def _accepting_slots(self) -> bool:
        return any(r is None for r in self._slots)

    def _setup_slot(self, slot: int, request: Request) -> None:
        """Writes the request's settings into its slot (small host-to-device writes, no synchronisation)."""
        st, cfg = self._state, request.config
        st.active[slot] = False
        st.ended[slot] = False
        st.frame[slot] = 0
        st.lengths[slot] = 0
        st.depth[slot] = request.depth
        st.min_frames[slot] = cfg.min_new_frames
        st.keys[slot] = seed_key(request.seed)
        st.audio_greedy[slot] = cfg.audio_greedy
        st.audio_temperature[slot] = cfg.temperature if not cfg.audio_greedy else 1.0
        st.audio_top_k[slot] = cfg.top_k
        st.audio_top_p[slot] = cfg.top_p
        st.repetition_penalty[slot] = cfg.repetition_penalty
        st.control_greedy[slot] = cfg.control_greedy
        st.control_temperature[slot] = cfg.control_temperature if not cfg.control_greedy else 1.0
        st.control_top_k[slot] = cfg.control_top_k
        st.control_top_p[slot] = cfg.control_top_p
        st.control_full[slot] = cfg.control_tokens == "full"
        # The repetition history of layer c starts with the prompt's codes of that layer (as the released code does).
        codes = request.prompt[:, 1 : 1 + request.depth].clamp(0, self.audio_vocab - 1).t().to(self.device)  # [K, T]
        seen = torch.zeros(1 + self.n_vq, self.audio_vocab, dtype=torch.bool, device=self.device)
        seen[1 : 1 + request.depth].scatter_(1, codes, True)
        st.seen[slot].copy_(seen)

    def _prefill_once(self) -> bool:
        """Runs prompt chunks: one chunk if some slot is generating (so it waits at most one chunk), else until one
        prompt is complete."""
        did = False
        while True:
            pending = [r for r in self._slots if r is not None and r.state == RequestState.PREFILL]
            if not pending:
                return did
            request = min(pending, key=lambda r: r.id)  # first come, first served
            self._prefill_chunk(request)
            did = True
            if request.state == RequestState.RUNNING or any(
                r is not None and r.state == RequestState.RUNNING for r in self._slots
            ):
                return did

    def _prefill_chunk(self, request: Request) -> None:
        model, st, slot = self.model, self._state, request.slot
        start = request.prefilled
        n = min(self.config.prefill_chunk, request.prompt_rows - start)
        rows = request.prompt[start : start + n].to(self.device)[None]  # [1, n, C]
        embeds = model.embed_frames(rows, request.depth)  # [1, n, D]
        positions = torch.arange(start, start + n, device=self.device)  # [n]
        visible = torch.arange(start + n, device=self.device)[None, :] <= positions[:, None]  # [n, start+n]
        cache = st.temporal
        cache.prefill(slot, start)
        try:
            hidden = model.temporal_step(embeds, positions[None], visible[None], cache)  # [1, n, D]
        finally:
            cache.decode()
        request.prefilled = start + n
        st.lengths[slot] = start + n
        if request.prefilled == request.prompt_rows:
            st.hidden[slot] = hidden[0, -1]
            st.active[slot] = True
            request.state = RequestState.RUNNING

    def _sync(self, b: int) -> None:
        """Reads the frames of the current window back to the host (one synchronisation) and delivers them."""
        n = self._window
        if n == 0:
            return
        st = self._state
        tokens = st.history[:b, :n].cpu()  # [B, n, C]
        audio = st.history_audio[:b, :n].cpu()  # [B, n]
        ended = st.ended[:b].cpu()  # [B]
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
        self._state.active[slot] = False
        self._state.ended[slot] = False
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
            self._reset_state()
        except Exception:  # pragma: no cover - the device itself is broken
            logger.exception("could not reset the engine state")

    def _reset_state(self) -> None:
        st = self._state
        st.active.zero_()
        st.ended.zero_()
        st.lengths.zero_()
        st.frame.zero_()
        self._window = 0


# ---------------------------------------------------------------------------------------------------- generate()


def _row_seed(config: GenerationConfig, b: int) -> GenerationConfig:
    return config if config.seed is None else config.with_overrides(seed=config.seed + b)


def generate(
    model: CatTTSModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    on_frame: Callable[[FrameStep], None] | None = None,
    engine: Engine | None = None,
    **settings: Any,
) -> GenerationOutput:
    """Generates audio frames at depth K for a batch of left-padded prompt grids (one engine request per row).

    Args:
        model: a `CatTTSModel`.
        input_ids: `[B, T, 1+N]` prompt grids, left-padded.
        attention_mask: `[B, T]` (1 = real row), or None for no padding.
        config: generation settings; keyword `settings` replace its fields. A seeded batch uses seed + b for row b
            (so row 0 of a batch equals the same prompt alone).
        on_frame: called with each frame of the batch, in order.
        engine: an engine to run on (default: a new one sized for this batch, eager).

    Returns:
        `GenerationOutput`.
    """
    config = (config or GenerationConfig()).with_overrides(**settings)
    n_vq = model.config.n_vq
    k = config.resolved_depth(n_vq)
    if input_ids.dim() != 3 or input_ids.shape[-1] != 1 + n_vq:
        raise InputError(f"input_ids must be [B, T, 1+{n_vq}], got {tuple(input_ids.shape)}")
    b, t, _ = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(b, t, dtype=torch.bool)
    mask = attention_mask.bool().cpu()
    prompts = [input_ids[i].cpu()[mask[i]] for i in range(b)]
    budget = config.max_new_frames or _MIN_DEFAULT_FRAMES + _DEFAULT_FRAMES_PER_PROMPT_ROW * max(
        p.shape[0] for p in prompts
    )
    if engine is None:
        sync_every = 4
        rows = max(p.shape[0] for p in prompts) + budget + sync_every
        engine = Engine(model, EngineConfig(max_slots=max(b, 1), max_rows=rows, max_queue=b, compile=False))
    start = time.perf_counter()
    requests = [engine.submit(p, _row_seed(config, i), max_new_frames=budget) for i, p in enumerate(prompts)]
    for request in requests:
        request.result()
    elapsed = time.perf_counter() - start
    ids = model.config.token_ids
    lengths = torch.tensor([r.num_frames for r in requests], dtype=torch.long)
    f = int(lengths.max()) if b else 0
    frames = torch.full((b, f, 1 + k), model.config.audio_pad_code, dtype=torch.long)
    frames[:, :, 0] = ids.pad
    for i, request in enumerate(requests):
        frames[i, : request.num_frames] = request.frames
    steps = max((r.frames_run for r in requests), default=0)
    if on_frame is not None:
        for index in range(f):
            on_frame(FrameStep(tokens=frames[:, index], is_audio=index < lengths, index=index))
    first = [r.first_frame_at for r in requests if r.first_frame_at is not None]
    prefill = (min(first) - start) if first else 0.0
    return GenerationOutput(
        frames=frames,
        lengths=lengths,
        finished=torch.tensor([r.finish_reason == "audio_end" for r in requests]),
        prefill_seconds=prefill,
        decode_seconds=max(elapsed - prefill, 0.0),
        steps=steps,
    )
