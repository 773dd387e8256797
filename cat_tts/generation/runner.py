"""The device side of the engine: runs frames and prompt prefill over the slot state, compiled and captured.

Shapes: B slots, b slots in a frame, R rows per slot, n prompt rows in a prefill run, C = 1 + N channels, K_max the
largest depth in a frame, W = sync_every.

How a frame runs (`EngineConfig.compile`):
* On CUDA the depth side runs stacked projections (`views.packed_view`: one q/k/v and one gate/up product).
* "auto" on CUDA (the default) and True: the frame's units go through torch.compile (norms and elementwise work fused;
  one compiled code unit serves every layer), and on CUDA the whole frame (`frame.run_frame`: positions 0..K_max with
  their sampling, the temporal step, the read-back copy) is captured as ONE CUDA graph per (batch bucket, K_max
  bucket) at warm-up and replayed once per frame; a slot whose K is below the bucket keeps the pad code.
* "auto" on the CPU: eager, with oneDNN-prepacked depth weights for the buckets where a measurement at warm-up finds
  them faster (never assumed: a lone request runs plain matrix-vector products).
* "graphs": the eager frame captured as CUDA graphs (no compiler: bit-identical to eager); False: eager.
Nothing in the frame loop synchronises with the host or builds tensors from host data: the read-back window's index
is a device counter, and the host reads frames back every `sync_every` frames into pinned memory, asynchronously
(`start_read` / `PendingRead.wait`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cat_tts.errors import FieldError
from cat_tts.generation.config import EngineConfig
from cat_tts.generation.frame import UNITS, Units, run_frame
from cat_tts.generation.slots import FrameConstants, SlotState
from cat_tts.generation.views import DECISIONS, packed_view, shared_prepacked_view

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.generation.request import Request
    from cat_tts.model import CatTTSModel

logger = logging.getLogger(__name__)

K_BUCKET_STEP = 4  # CUDA graphs are captured for K_max in {1, 2, 4, 8, 12, ...}: at most 3 extra depth positions


@dataclass
class PendingRead:
    """Frames on their way to the host: pinned buffers filled by an asynchronous copy, and its event."""

    tokens: torch.Tensor  # [b, n, C] int64
    audio: torch.Tensor  # [b, n] bool
    ended: torch.Tensor  # [b] bool
    event: Any = None  # torch.cuda.Event, None when the copy was synchronous

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.event is not None:
            self.event.synchronize()
        return self.tokens, self.audio, self.ended


def default_compile_cache() -> Path:
    """The per-user directory of PyTorch's compile caches (`$XDG_CACHE_HOME/cat-tts/compile`)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "cat-tts" / "compile"


class FrameRunner:
    """Runs frames for a pool of slots: the preallocated state, the frame function, its compilation and CUDA graphs.

    Args:
        model: the `CatTTSModel` (eval mode, SDPA or eager attention).
        config: the engine's settings (slots, rows, buckets, compilation).
    """

    def __init__(self, model: CatTTSModel, config: EngineConfig) -> None:
        self.config = config
        # on CUDA the depth side runs stacked q/k/v and gate/up projections (fewer kernels; see `views`)
        self.model = model = packed_view(model) if model.device.type == "cuda" else model
        self.device = model.device
        self.n_vq = model.config.n_vq
        self.pad_code = model.config.audio_pad_code
        self.text_vocab = model.config.vocab_size
        self.audio_vocab = model.config.audio_vocab_size + 1
        self.buckets = config.resolved_buckets
        cuda = self.device.type == "cuda"
        self.uses_compile = config.compile is True or (config.compile == "auto" and cuda)
        self.uses_cuda_graphs = cuda and config.compile is not False
        if self.uses_compile:
            configure_compile_cache(config.compile_cache)
        check_memory(model, config)
        self.state = SlotState.allocate(model, config)
        self.cache = model.new_temporal_cache(config.max_slots, config.max_rows, self.state.lengths)
        self.consts = FrameConstants.build(model, config)
        self.window = torch.zeros((), dtype=torch.long, device=self.device)  # read-back index of the next frame
        self.units: Units = (
            {name: torch.compile(fn, fullgraph=True, dynamic=False) for name, fn in UNITS.items()}
            if self.uses_compile
            else dict(UNITS)
        )
        self._models = {b: model for b in self.buckets}  # per bucket: the model or its prepacked view
        self._channels: dict[int, list[Any]] = {}
        self._views: dict[int, SlotState] = {}
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._graph_pool = None
        self._pinned: dict[str, torch.Tensor] = {}
        # compiled engines run prompts in fixed-size chunks through a compiled (and on CUDA captured) unit
        self.static_prefill = self.uses_compile
        chunk, c = config.prefill_chunk, 1 + self.n_vq
        self._prefill_rows = torch.zeros(1, chunk, c, dtype=torch.long, device=self.device)  # fixed addresses
        self._prefill_meta = torch.zeros(4, dtype=torch.long, device=self.device)
        self._prefill_columns = torch.zeros(chunk, dtype=torch.long, device=self.device)
        self.measure_prepack = (
            self.device.type == "cpu" and not self.uses_compile and config.cpu_prepack and self.buckets != (1,)
        )
        self.warm = not (self.uses_cuda_graphs or self.uses_compile or self.measure_prepack)

    # ------------------------------------------------------------------ frames
    def view(self, b: int) -> SlotState:
        """The first `b` slots (built once per bucket: the addresses CUDA graphs capture)."""
        if b not in self._views:
            self._views[b] = self.state.prefix(b)
        return self._views[b]

    def k_bucket(self, k_max: int) -> int:
        """The K_max a graph is captured for: 1, 2, then multiples of K_BUCKET_STEP (capped at N)."""
        if k_max <= 2:
            return k_max
        return min(-(-k_max // K_BUCKET_STEP) * K_BUCKET_STEP, self.n_vq)

    def frame(self, b: int, k_max: int, full: bool) -> None:
        """One frame for the first `b` slots: depth positions 0..k_max, then the temporal step (see the module)."""
        if self.uses_cuda_graphs and not full:  # channel 0 over the whole vocabulary (released parity) runs eagerly
            key = (b, self.k_bucket(k_max))
            graph = self._graphs.get(key)
            if graph is None:
                graph = self._capture(key)
            if graph is not None:
                graph.replay()
                return
        self._run(b, k_max, full)

    def _run(self, b: int, k_max: int, full: bool) -> None:
        model = self._models[b]
        run_frame(model, self.view(b), self.consts, self.cache, self._channels_of(model), self.units, k_max, full,
                  self.window)  # fmt: skip

    def _channels_of(self, model: CatTTSModel) -> list[Any]:
        if id(model) not in self._channels:
            self._channels[id(model)] = [model.channel_modules(c) for c in range(1 + self.n_vq)]
        return self._channels[id(model)]

    def _capture(self, key: tuple) -> torch.cuda.CUDAGraph | None:
        """Captures the frame of (bucket, K_max bucket), or the prefill unit (key `("prefill",)`): warm-up runs on a
        side stream, then capture. Frame runs touch the bucket's slot buffers: frames are captured in `warmup()` (or
        lazily, for buckets whose rows are free); the prefill graph replays whatever its buffers hold."""
        run = self._run_prefill if key == ("prefill",) else (lambda: self._run(key[0], key[1], False))
        try:
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
        except Exception:  # a kernel that cannot be captured: keep serving, eagerly
            logger.exception("CUDA graph capture of frame %s failed; the engine runs eagerly from now on", key)
            self.uses_cuda_graphs = False
            self._graphs.clear()
            return None
        self._graphs[key] = graph
        return graph

    def warmup(self) -> None:
        """Compiles / captures the frame of every bucket, and on the CPU decides per bucket whether prepacked weights
        are faster (its runs touch every slot's buffers: call it while no slot is in use)."""
        if self.warm:
            return
        start = time.perf_counter()
        if self.measure_prepack:
            self._choose_prepacking()
        for b in self.buckets:
            if self.uses_cuda_graphs:
                for k in sorted({self.k_bucket(k) for k in range(1, self.n_vq + 1)}):
                    self.frame(b, k, full=False)
            elif self.uses_compile:
                for _ in range(2):  # a second run: nothing may recompile
                    self._run(b, self.n_vq, False)
        if self.static_prefill:  # one real row into slot 0 (reset below)
            self._prefill_meta.copy_(torch.tensor([0, 1, 1, 0]))
            if self.uses_cuda_graphs:
                self._capture(("prefill",))
            else:
                for _ in range(2):
                    self._run_prefill()
        self.reset()
        self.warm = True
        logger.info("engine warm in %.1f s (buckets %s, CUDA graphs %s, torch.compile %s)",
                    time.perf_counter() - start, self.buckets, self.uses_cuda_graphs, self.uses_compile)  # fmt: skip

    def _choose_prepacking(self, positions: int = 4) -> None:
        """Times a frame of `positions` depth positions per bucket with plain and with prepacked depth weights and
        keeps the faster (a lone row always runs plain matrix-vector products, faster unpacked); decisions are kept
        per model, so later engines over it skip the measurement."""
        packed = shared_prepacked_view(self.model)
        if packed is self.model:
            return
        known = DECISIONS.setdefault(self.model, {1: False})
        chosen = []
        for b in self.buckets:
            if b in known:
                self._models[b] = packed if known[b] else self.model
                continue
            seconds = {}
            for name, model in (("plain", self.model), ("prepacked", packed)):
                self._models[b] = model
                self._run(b, positions, False)  # first use: caches, allocations
                t0 = time.perf_counter()
                self._run(b, positions, False)
                seconds[name] = time.perf_counter() - t0
            known[b] = seconds["prepacked"] < seconds["plain"]
            self._models[b] = packed if known[b] else self.model
            chosen.append(f"{b}: {'prepacked' if known[b] else 'plain'} ({seconds['plain'] * 1e3:.1f} vs "
                          f"{seconds['prepacked'] * 1e3:.1f} ms)")  # fmt: skip
        if chosen:
            logger.info("CPU depth weights per bucket (plain vs prepacked frame): %s", "; ".join(chosen))

    @property
    def prepacked_buckets(self) -> tuple[int, ...]:
        """The buckets whose frames run with prepacked depth weights."""
        return tuple(b for b, m in self._models.items() if m is not self.model)

    # ------------------------------------------------------------------ slots and prompts
    def setup_slot(self, slot: int, request: Request) -> None:
        """Writes the request's settings into its slot (no synchronisation)."""
        self.state.load(slot, request, self.n_vq, self.audio_vocab)

    def prefill_chunk(self, request: Request) -> bool:
        """Runs the request's next `prefill_chunk` prompt rows through the temporal transformer into its slot.

        Returns:
            True when the whole prompt is in the cache (the slot then generates from the next frame on).
        """
        if self.static_prefill:
            return self._prefill_static(request)
        model, st, slot = self.model, self.state, request.slot
        start = request.prefilled
        n = min(self.config.prefill_chunk, request.prompt_rows - start)
        rows = request.prompt[start : start + n].to(self.device)[None]  # [1, n, C]
        embeds = model.embed_frames(rows, request.depth)  # [1, n, D]
        positions = torch.arange(start, start + n, device=self.device)  # [n]
        visible = torch.arange(start + n, device=self.device)[None, :] <= positions[:, None]  # [n, start+n]
        self.cache.prefill(slot, start)
        try:
            hidden = model.temporal_step(embeds, positions[None], visible[None], self.cache)  # [1, n, D]
        finally:
            self.cache.decode()
        request.prefilled = start + n
        st.lengths[slot] = start + n
        if request.prefilled < request.prompt_rows:
            return False
        st.hidden[slot] = hidden[0, -1]
        st.active[slot] = True
        return True

    def _prefill_static(self, request: Request) -> bool:
        """`prefill_chunk` with fixed shapes: the chunk padded to `prefill_chunk` rows, its slot, length and depth in
        device buffers, run by the compiled prefill unit (a CUDA graph replay on CUDA)."""
        chunk, start = self.config.prefill_chunk, request.prefilled
        n = min(chunk, request.prompt_rows - start)
        done = start + n >= request.prompt_rows
        rows = torch.full((1, chunk, 1 + self.n_vq), self.pad_code, dtype=torch.long)
        rows[:, :, 0] = 0
        rows[0, :n] = request.prompt[start : start + n]
        columns = (start + torch.arange(chunk)).clamp(max=self.config.max_rows - 1)
        self._prefill_rows.copy_(rows, non_blocking=True)
        self._prefill_columns.copy_(columns, non_blocking=True)
        self._prefill_meta.copy_(torch.tensor([request.slot, n, request.depth, int(done)]), non_blocking=True)
        graph = self._graphs.get(("prefill",)) if self.uses_cuda_graphs else None
        if self.uses_cuda_graphs and graph is None and self.warm:
            graph = self._capture(("prefill",))
        if graph is not None:
            graph.replay()
        else:
            self._run_prefill()
        request.prefilled = start + n
        return done

    def _run_prefill(self) -> None:
        self.cache.prefill_at(self._prefill_meta[0:1], self._prefill_columns)
        try:
            self.units["prefill"](self.model, self.state, self.consts, self.cache, self._prefill_rows,
                                  self._prefill_meta, self._prefill_columns)  # fmt: skip
        finally:
            self.cache.decode()

    # ------------------------------------------------------------------ read-back and release
    def start_read(self, b: int, n: int) -> PendingRead:
        """Starts copying the last `n` frames of the first `b` slots, their audio flags and the end flags to the host
        (pinned memory, asynchronous on CUDA) and restarts the window."""
        st = self.state
        sources = dict(tokens=st.history[:b, :n], audio=st.history_audio[:b, :n], ended=st.ended[:b])
        if self.device.type != "cuda":
            out = {name: t.clone() for name, t in sources.items()}
            self.window.zero_()
            return PendingRead(**out)
        out = {}
        for name, t in sources.items():
            buffer = self._pinned.get(name)
            if buffer is None or buffer.numel() < t.numel():
                full = {"tokens": st.history, "audio": st.history_audio, "ended": st.ended}[name]
                buffer = self._pinned[name] = torch.empty(full.numel(), dtype=t.dtype, pin_memory=True)
            out[name] = buffer[: t.numel()].view(t.shape)
            out[name].copy_(t, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.window.zero_()
        return PendingRead(**out, event=event)

    def release(self, slot: int) -> None:
        """Stops a slot (device flags cleared asynchronously; the next request overwrites the rest)."""
        self.state.active[slot] = False
        self.state.ended[slot] = False

    def reset(self) -> None:
        """Clears every slot's flags and counters (after warm-up, after a failed step)."""
        st = self.state
        for t in (st.active, st.ended, st.lengths, st.frame, self.window):
            t.zero_()


def cache_bytes(model: CatTTSModel, config: EngineConfig) -> int:
    """Bytes of the slot pool's caches: the temporal keys/values (B x R rows per block) dominate."""
    t = model.temporal.config
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    kv_heads = t.num_key_value_heads or t.num_attention_heads
    itemsize = torch.empty((), dtype=model.dtype).element_size()
    temporal = 2 * t.num_hidden_layers * config.max_slots * kv_heads * config.max_rows * head_dim * itemsize
    seen = config.max_slots * (1 + model.config.n_vq) * (model.config.audio_vocab_size + 1)  # bool
    return temporal + seen


def check_memory(model: CatTTSModel, config: EngineConfig) -> None:
    """Refuses a pool whose caches cannot fit the device's free memory (before allocating them).

    Raises:
        FieldError: on `max_slots`, saying how much the caches need and how much is free.
    """
    need = cache_bytes(model, config)
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux: nothing to check against
            return
    if need > free:
        raise FieldError(
            "max_slots",
            f"{config.max_slots} slots of {config.max_rows} rows need {need / 2**30:.1f} GiB of cache and "
            f"{free / 2**30:.1f} GiB is free on {model.device}: lower max_slots (or max_rows)",
        )


def configure_compile_cache(directory: str | os.PathLike | None) -> None:
    """Points PyTorch's on-disk compile caches (inductor FX graphs, AOT autograd) at a persistent directory: the
    given one, else `CAT_TTS_COMPILE_CACHE`, else a per-user cache directory; a second start skips most compiling."""
    chosen = directory or os.environ.get("CAT_TTS_COMPILE_CACHE")
    if chosen is None:  # a TORCHINDUCTOR_CACHE_DIR the user set stays theirs
        chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_compile_cache()
    try:
        os.makedirs(chosen, exist_ok=True)
    except OSError as err:
        logger.warning("compile cache %s is not usable (%s): every start compiles again", chosen, err)
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(chosen)
    try:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # pragma: no cover - older PyTorch
        logger.warning("this PyTorch has no on-disk compile cache; every start compiles again")
