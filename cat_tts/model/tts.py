"""CAT-TTS model: temporal Qwen3 over frames + depth transformer over the RVQ layers of each frame.

Shapes: B batch, T frames, N = n_vq RVQ layers, C = 1 + N channels (channel 0 = text/control),
D temporal width, Dd depth width, V_c output vocabulary of channel c (text vocabulary for c = 0,
audio_vocab_size + 1 codes for c >= 1), R_c rows (frames) supervised on channel c.

Teacher-forced forward (`forward`):
1. Frame input = text-channel embedding + sum of the kept layers' code embeddings.
2. Temporal Qwen3 -> final-normed state `h [B, T, D]`.
3. Per frame, depth sequence: position 0 = adapter(h), position i = adapter(embedding of channel i-1's
   label) (an ignored label gives a zero vector); depth transformer (causal, no positions).
4. Output position c -> per-channel adapter -> RMSNorm -> head c -> logits of channel c (steps 3-4 and the losses:
   `cat_tts.model.loss`).

Only the work that a loss needs is done: frames whose labels are all ignored (prompt rows, padding) skip
the depth transformer, adapters and heads; a frame runs the depth transformer over exactly
1 + (last supervised channel) positions (so a sample kept at depth K under Progressive Sequence Dropout
runs K + 1 positions; a text-only row runs 1), frames grouped by that length; each head only sees the
rows whose label of that channel is kept.

Rank-uniform mode (`model.uniform_graph = True`): the same losses and gradients, but every forward calls the
same modules the same number of times in the same order whatever the batch's depths and labels, as DeepSpeed
ZeRO-3 with several ranks needs (its per-module parameter all-gathers are collectives that must match across
ranks). Every layer's embedding is looked up (dropped layers masked to zero), the depth transformer runs once for
every sequence length 1..C (zero-row batches for lengths nobody needs), and every channel's adapter, RMSNorm and
head runs (on zero rows when nothing is kept), each output wired into the loss so that its backward hooks fire.
The normal mode keeps the real truncation of Progressive Sequence Dropout and skips all of that.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.utils.checkpoint
from torch import nn

from cat_tts.generation.batch import generate
from cat_tts.model.checkpoint import load_from_qwen3, load_pretrained, save_pretrained
from cat_tts.model.config import CatTTSConfig, TokenIds
from cat_tts.model.depth import DepthKVCache, DepthTransformer
from cat_tts.model.layers import RMSNorm, SwiGLU
from cat_tts.model.loss import TTSOutput, depth_loss
from cat_tts.model.temporal import (
    SlotKVCache,
    build_temporal,
    resolve_attn_implementation,
    run_temporal,
    set_temporal_gradient_checkpointing,
)

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.generation import GenerationConfig, GenerationOutput

logger = logging.getLogger(__name__)


class ChannelModules(NamedTuple):
    """The modules of one output channel c, as the inference engine's code step takes them (the same compiled step
    serves every audio channel because these are arguments, not attributes looked up by index)."""

    embedding: nn.Embedding  # table of channel c's tokens (fed back into the depth transformer and the next frame)
    adapter: SwiGLU  # depth width -> temporal width
    norm: RMSNorm  # pre-head norm
    head: nn.Linear  # temporal width -> V_c

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits `[..., V_c]` of this channel from depth outputs `h [..., Dd]`."""
        return self.head(self.norm(self.adapter(h)))


class CatTTSModel(nn.Module):
    """Temporal Qwen3 + depth transformer over the `[B, T, 1+N]` token grid.

    Args:
        config: model configuration (`CatTTSConfig`, e.g. `CatTTSConfig.tiny()`).
        attn_implementation: "eager", "sdpa" or "flash_attention_2" for both transformers; None picks
            FlashAttention-2 when installed on a CUDA machine, else SDPA. The depth transformer is causal under
            all of them.

    Attributes:
        temporal: transformers `Qwen3Model` (call it with inputs_embeds, attention_mask, position_ids,
            past_key_values, use_cache: standard HF semantics; its `embed_tokens` is the text-channel embedding).
        depth: `DepthTransformer` (`depth(x [M, L, Dd], cache=None)`, `depth.new_cache(batch, dtype, device)`).
        depth_input: shared SwiGLU adapter D -> Dd (temporal state and every fed-back embedding).
        embeddings: C embedding tables (0 = text vocabulary, c >= 1 = codes of layer c plus the pad row).
        depth_output: C SwiGLU adapters Dd -> D, one per channel.
        head_norms: C RMSNorms (computed in the input dtype, as in the checkpoint).
        heads: C bias-free output heads D -> V_c.
        loss_chunk_elements: with `return_logits=False`, channels with more kept rows x vocabulary than this
            compute their loss in row chunks recomputed in the backward pass (bounded memory; same result).
            Normal mode only (the chunk count depends on the batch).
        uniform_graph: False (default) = skip all work without a loss (fast). True = rank-uniform mode: every
            forward calls the same modules in the same order (needed by DeepSpeed ZeRO-3); same loss
            and gradients, more (mostly empty) module calls.
        uniform_loss_chunks: in uniform mode, the number of row chunks (recomputed in the backward pass when > 1)
            the text channel's loss is split into, whatever its row count; raise it to bound the memory of the
            text head's logits (the audio heads, 1025 wide, always run in one call).
    """

    def __init__(self, config: CatTTSConfig, attn_implementation: str | None = None) -> None:
        super().__init__()
        config.validate_fields()
        self.config = config
        self.attn_implementation = resolve_attn_implementation(attn_implementation)
        d, dd, ffn = config.hidden_size, config.local_hidden_size, config.additional_mlp_ffn_hidden_size
        n_channels = config.num_channels

        self.embeddings = nn.ModuleList([nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)])
        for _ in range(config.n_vq):
            self.embeddings.append(nn.Embedding(config.audio_vocab_size + 1, d, padding_idx=config.audio_pad_code))
        self.temporal = build_temporal(config.language_config, self.attn_implementation)
        # The temporal model is always driven by inputs_embeds; its own token table would be dead weight,
        # so it is the text-channel table (the checkpoint's unused copy is dropped on load, see checkpoint.py).
        self.temporal.embed_tokens = self.embeddings[0]
        self.depth = DepthTransformer(config, self.attn_implementation)
        self.depth_input = SwiGLU(d, ffn, dd)
        self.depth_output = nn.ModuleList(SwiGLU(dd, ffn, d) for _ in range(n_channels))
        self.head_norms = nn.ModuleList(RMSNorm(d, 1e-6, upcast=False) for _ in range(n_channels))
        self.heads = nn.ModuleList(nn.Linear(d, config.channel_vocab_size(c), bias=False) for c in range(n_channels))
        # With return_logits=False, a channel whose kept rows x vocabulary exceed this many logits computes its loss
        # in row chunks recomputed in the backward pass (bounded memory for the text head).
        self.loss_chunk_elements = 2**26
        # Rank-uniform execution (see the module docstring): a module call sequence that does not depend on the batch.
        # The training loop turns it on under DeepSpeed ZeRO-3; it costs extra (mostly empty) module calls.
        self.uniform_graph = False
        # Uniform mode only: the text channel's loss is computed in exactly this many row chunks, recomputed in the
        # backward pass when > 1 (a rank-independent count; bounds the logits memory of the wide text head).
        self.uniform_loss_chunks = 1
        for name, module in self.named_children():
            if name != "temporal":
                module.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range) for linear/embedding weights (padding rows zero), ones for norms."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    # ------------------------------------------------------------------ small accessors
    @property
    def token_ids(self) -> TokenIds:
        """The special token ids of this model."""
        return self.config.token_ids

    @property
    def n_vq(self) -> int:
        """Number of RVQ layers N."""
        return self.config.n_vq

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.heads[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters."""
        return self.heads[0].weight.dtype

    def set_attn_implementation(self, attn_implementation: str | None) -> None:
        """Switch the attention kernel of both transformers ("eager", "sdpa", "flash_attention_2", None = auto)."""
        impl = resolve_attn_implementation(attn_implementation)
        self.attn_implementation = impl
        self.temporal.config._attn_implementation = impl
        self.depth.set_attn_implementation(impl)

    def gradient_checkpointing_enable(self) -> None:
        """Recompute the temporal and depth blocks in the backward pass (saves activation memory)."""
        set_temporal_gradient_checkpointing(self.temporal, True)
        self.depth.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Undo `gradient_checkpointing_enable`."""
        set_temporal_gradient_checkpointing(self.temporal, False)
        self.depth.gradient_checkpointing = False

    def channel_embedding(self, channel: int, tokens: torch.Tensor) -> torch.Tensor:
        """Embed `tokens [...]` with the table of channel `channel` (0 = text) -> `[..., D]`."""
        return self.embeddings[channel](tokens)

    def channel_logits(self, channel: int, h: torch.Tensor) -> torch.Tensor:
        """Logits of channel `channel` from depth outputs `h [..., Dd]` -> `[..., V_c]`."""
        return self.heads[channel](self.head_norms[channel](self.depth_output[channel](h)))

    def new_depth_cache(self, batch: int) -> DepthKVCache:
        """An empty depth KV cache for `batch` frames on the model's device and dtype."""
        return self.depth.new_cache(batch, self.dtype, self.device)

    # ------------------------------------------------------------------ inference primitives (the engine's vocabulary)
    def channel_modules(self, channel: int) -> ChannelModules:
        """The embedding, adapter, norm and head of channel `channel` (0 = text/control, 1..N = RVQ layers)."""
        return ChannelModules(
            self.embeddings[channel], self.depth_output[channel], self.head_norms[channel], self.heads[channel]
        )

    def to_depth(self, x: torch.Tensor) -> torch.Tensor:
        """The shared adapter from temporal width to depth width: `[..., D]` -> `[..., Dd]` (a frame's temporal state
        becomes depth position 0; every sampled token's embedding becomes the next position)."""
        return self.depth_input(x)

    def depth_step(self, x: torch.Tensor, cache: DepthKVCache, position: torch.Tensor) -> torch.Tensor:
        """One depth position with static shapes: `x [M, Dd]` at tensor index `position` -> `[M, Dd]`."""
        return self.depth.step(x, cache, position)

    def control_logits(self, h: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Channel-0 logits from depth outputs `h [M, Dd]`.

        Args:
            h: depth outputs of position 0.
            candidates: `[n]` token ids to score (e.g. continue / audio_end): only those rows of the text head are
                computed (the release's head has 155648 rows). None = the whole text vocabulary.

        Returns:
            `[M, n]` or `[M, V_text]`.
        """
        x = self.head_norms[0](self.depth_output[0](h))  # [M, D]
        if candidates is None:
            return self.heads[0](x)
        return x @ self.heads[0].weight[candidates].t()  # [M, n]

    def new_temporal_cache(self, slots: int, rows: int, write_columns: torch.Tensor) -> SlotKVCache:
        """A preallocated temporal cache for `slots` requests of up to `rows` rows each (see `SlotKVCache`)."""
        return SlotKVCache(self.temporal.config, slots, rows, write_columns, self.dtype, self.device)

    def temporal_step(
        self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, visible: torch.Tensor, cache: SlotKVCache
    ) -> torch.Tensor:
        """Runs new temporal rows `[B, L, D]` at `position_ids [B, L]` against a slot cache; `visible [B, L, P]` says
        which cached columns each row attends to. Returns final-normed states `[B, L, D]`."""
        return run_temporal(self.temporal, inputs_embeds, position_ids, visible, cache)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        config: GenerationConfig | None = None,
        on_frame: Any = None,
        **settings: Any,
    ) -> GenerationOutput:
        """Generates speech frames at depth K for a batch of prompt grids (runs the inference engine).

        Args:
            input_ids: `[B, T, 1+N]` prompt grids, left-padded (`cat_tts.text.PromptBuilder.pad_left`).
            attention_mask: `[B, T]` (1 = real row) or None.
            config: a `cat_tts.generation.GenerationConfig`; keyword `settings` replace its fields (`depth=8`,
                `do_sample=False`, `temperature=...`, `seed=...`). Row b of a seeded batch uses seed + b.
            on_frame: called with each `FrameStep` (progress bars).

        Returns:
            `GenerationOutput` (`.frames [B, F, 1+K]`, `.lengths [B]`, `.finished [B]`, timings).
        """
        return generate(self, input_ids, attention_mask, config, on_frame=on_frame, **settings)

    # ------------------------------------------------------------------ inputs
    def _check_grid(self, grid: torch.Tensor, name: str) -> None:
        c = self.config.num_channels
        if grid.dim() != 3 or grid.shape[-1] != c:
            raise ValueError(f"{name} must be [B, T, {c}] (text channel + {self.n_vq} layers), got {tuple(grid.shape)}")

    def _depths_tensor(
        self, depths: int | torch.Tensor | None, batch: int, device: torch.device
    ) -> torch.Tensor | None:
        """Validate depths; returns None (all layers) or a LongTensor `[B]` in 1..N."""
        n = self.n_vq
        if depths is None:
            return None
        if isinstance(depths, int):
            if not 1 <= depths <= n:
                raise ValueError(f"depth must be in 1..{n}, got {depths}")
            return None if depths == n else torch.full((batch,), depths, dtype=torch.long, device=device)
        depths = torch.as_tensor(depths, device=device).long()
        if depths.shape != (batch,):
            raise ValueError(f"depths must be [B] = [{batch}], got {tuple(depths.shape)}")
        if batch and (int(depths.min()) < 1 or int(depths.max()) > n):
            raise ValueError(f"depths must be in 1..{n}, got values {depths.tolist()}")
        return depths

    def embed_frames(self, input_ids: torch.Tensor, depths: int | torch.Tensor | None = None) -> torch.Tensor:
        """Temporal input: text embedding + sum of the embeddings of the kept layers.

        Args:
            input_ids: `[B, T, 1+N]` grid.
            depths: keep layers 1..depths[b] of sample b (int for all samples, None = all N layers).
                Dropped layers are not looked up at all (no compute, no gradient).

        Returns:
            `[B, T, D]`.
        """
        self._check_grid(input_ids, "input_ids")
        depths_t = self._depths_tensor(depths, input_ids.shape[0], input_ids.device)
        x = self.embeddings[0](input_ids[..., 0])  # [B, T, D]
        if depths_t is None:
            for c in range(1, self.n_vq + 1):
                x = x + self.embeddings[c](input_ids[..., c])
            return x
        if self.uniform_graph:  # every table is looked up; a dropped layer's embedding is masked to zero
            for c in range(1, self.n_vq + 1):
                kept = (depths_t >= c).to(x.dtype)[:, None, None]  # [B, 1, 1]
                x = x + self.embeddings[c](input_ids[..., c]) * kept
            return x
        depth_list = depths_t.tolist()  # one device sync, then host-side decisions
        for c in range(1, max(depth_list) + 1):
            kept = [b for b, d in enumerate(depth_list) if d >= c]
            if len(kept) == len(depth_list):
                x = x + self.embeddings[c](input_ids[..., c])
            else:
                idx = torch.tensor(kept, device=input_ids.device)  # [B']
                x = x.index_add(0, idx, self.embeddings[c](input_ids[idx, :, c]))
        return x

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        depths: int | torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_logits: bool = True,
    ) -> TTSOutput:
        """Teacher-forced forward and loss.

        Args:
            input_ids: `[B, T, 1+N]` grid (channel 0 text ids, channels 1..N codes or the pad code).
            attention_mask: `[B, T]`, 1 on real rows, 0 on padding (left padding).
            labels: `[B, T, 1+N]`, already shifted (row t holds row t+1's tokens), -100 = ignored. The audio pad
                code is never a target (treated as ignored). None: only the temporal states are computed.
            depths: Progressive Sequence Dropout depths `[B]` (or one int): sample b keeps layers 1..depths[b] in
                its input sum, its depth sequence and its loss. None = all N layers (the plain model).
            position_ids: optional `[B, T]` temporal positions (default 0..T-1, as in the official training forward).
            return_logits: keep the per-channel logits in the output. Training loops should pass False: the
                logits (text vocabulary wide) would otherwise stay alive until the output is dropped.

        Returns:
            `TTSOutput`.

        Raises:
            ValueError: on wrong shapes, depths out of range, or kept labels outside the channel's vocabulary.
        """
        self._check_grid(input_ids, "input_ids")
        b, t, c = input_ids.shape
        depths_t = self._depths_tensor(depths, b, input_ids.device)
        inputs_embeds = self.embed_frames(input_ids, depths_t)
        hidden = self.temporal(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # [B, T, D]
        if labels is None:
            return TTSOutput(None, None, None, None, None, hidden)
        self._check_grid(labels, "labels")
        if labels.shape[:2] != (b, t):
            raise ValueError(
                f"labels must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(labels.shape)}"
            )
        return depth_loss(self, hidden, labels.to(hidden.device).long(), depths_t, return_logits)

    # ------------------------------------------------------------------ weights I/O
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        dtype: str | torch.dtype | None = None,
        attn_implementation: str | None = None,
        device: torch.device | str | None = None,
    ) -> CatTTSModel:
        """Load the official MOSS-TTS-Local-Transformer format (also what `save_pretrained` writes), tensor by tensor
        straight into parameters on `device` in the target dtype (~1x the weights in host memory on a CPU).

        Args:
            path_or_hub_id: a local directory (config.json + model.safetensors or sharded safetensors with
                model.safetensors.index.json) or a Hugging Face hub repo id.
            dtype: None / "auto" (see `cat_tts.weights.resolve_dtype`: float32 on the CPU, bfloat16 on CUDA unless the
                checkpoint records float16), a name ("bf16", "float32", ...) or a torch dtype.
            attn_implementation: see `CatTTSModel`.
            device: where to put the weights (default CPU).

        Raises:
            CheckpointError: when weights are missing, unexpected or of the wrong shape (all are named).
        """
        return load_pretrained(cls, path_or_hub_id, dtype=dtype, attn_implementation=attn_implementation, device=device)

    def save_pretrained(self, directory: str | Path, max_shard_size: int = 5 * 1024**3) -> Path:
        """Write config.json + safetensors in the official format (sharded with an index above `max_shard_size` bytes).

        Returns:
            The directory.
        """
        return save_pretrained(self, directory, max_shard_size=max_shard_size)

    @classmethod
    def from_qwen3(
        cls,
        path_or_hub_id: str | Path,
        config: CatTTSConfig,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
    ) -> CatTTSModel:
        """Start a new model from a Qwen3 causal LM checkpoint (temporal weights + text embedding).

        The depth transformer, adapters, audio embeddings and all heads are freshly initialised.

        Args:
            path_or_hub_id: Qwen3 checkpoint directory or hub id (e.g. "Qwen/Qwen3-1.7B").
            config: the CAT-TTS config; its `language_config` must match the Qwen3 architecture.
            dtype: parameter dtype (default float32).
            attn_implementation: see `CatTTSModel`.
        """
        return load_from_qwen3(cls, path_or_hub_id, config, dtype=dtype, attn_implementation=attn_implementation)
