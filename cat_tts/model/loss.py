"""The training losses of CAT-TTS: the depth side of the teacher-forced forward, over the temporal states.

Shapes: B batch, T frames, C = 1 + N channels, D temporal width, Dd depth width, V_c vocabulary of channel c, R_c
frames supervised on channel c.

Only the work that a loss needs is done (see `cat_tts.model.tts`): frames whose labels are all ignored skip the depth
side, a frame runs exactly 1 + (last supervised channel) depth positions (Progressive Sequence Dropout truncates
compute), frames are grouped by that length, and each head sees only the rows whose label of its channel is kept.
In rank-uniform mode (`model.uniform_graph`) every module runs a fixed number of times instead (ZeRO-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.model.config import CatTTSConfig
    from cat_tts.model.tts import CatTTSModel

IGNORE_INDEX = -100  # label value of entries without a loss


@dataclass
class TTSOutput:
    """Result of `CatTTSModel.forward`.

    Attributes:
        loss: scalar, the uniform mean of `channel_losses` over the channels with at least one kept label
            (0 with a gradient path when no label is kept at all); None without labels.
        channel_losses: `[C]` float32, channel c's mean cross-entropy over its kept labels (0 for a channel
            with no kept label in the batch: check `channel_counts`); None without labels.
        channel_counts: `[C]` int64, number of kept labels per channel (for exact token-weighted
            accumulation across micro-batches); None without labels.
        logits: per channel c, `[R_c, V_c]` logits of the R_c frames whose channel-c label is kept
            (frames without a kept label are never computed); None without labels or with return_logits=False.
        logit_rows: per channel c, `[R_c]` int64 flat frame index `b * T + t` of each row of `logits[c]`.
            Use `dense_logits(c)` for a `[B, T, V_c]` view with the skipped frames filled in.
        hidden_states: `[B, T, D]` final-normed temporal states.
    """

    loss: torch.Tensor | None
    channel_losses: torch.Tensor | None
    channel_counts: torch.Tensor | None
    logits: list[torch.Tensor] | None
    logit_rows: list[torch.Tensor] | None
    hidden_states: torch.Tensor

    def dense_logits(self, channel: int, fill: float = float("nan")) -> torch.Tensor:
        """Scatter `logits[channel]` into `[B, T, V_c]`, with `fill` on frames that were not computed."""
        if self.logits is None or self.logit_rows is None:
            raise ValueError("this output has no logits: call the model with labels")
        b, t = self.hidden_states.shape[:2]
        values = self.logits[channel]
        dense = values.new_full((b * t, values.shape[-1]), fill)
        dense[self.logit_rows[channel]] = values
        return dense.view(b, t, -1)


def kept_labels(config: CatTTSConfig, labels: torch.Tensor, depths: torch.Tensor | None) -> torch.Tensor:
    """Boolean `[B, T, C]`: labels that carry a loss (not -100, not the pad code, within the sample's depth)."""
    keep = labels != IGNORE_INDEX
    keep[..., 1:] &= labels[..., 1:] != config.audio_pad_code
    if depths is not None:
        channel = torch.arange(config.num_channels, device=labels.device)
        keep &= channel[None, None, :] <= depths[:, None, None]
    # Targets must be valid ids of their channel's vocabulary.
    text_bad = keep[..., 0] & ((labels[..., 0] < 0) | (labels[..., 0] >= config.vocab_size))
    audio_bad = keep[..., 1:] & ((labels[..., 1:] < 0) | (labels[..., 1:] > config.audio_vocab_size))
    if bool(text_bad.any()) or bool(audio_bad.any()):
        raise ValueError(
            f"labels hold ids outside their channel's vocabulary (text < {config.vocab_size}, "
            f"codes < {config.audio_vocab_size}); use -100 for ignored entries"
        )
    return keep


def depth_loss(
    model: CatTTSModel, hidden: torch.Tensor, labels: torch.Tensor, depths: torch.Tensor | None, return_logits: bool
) -> TTSOutput:
    """The depth side of the teacher-forced forward and its losses, over temporal states `hidden [B, T, D]` and
    shifted `labels [B, T, C]` (see the module docstring and `cat_tts.model.tts`)."""
    b, t, n_ch = labels.shape
    keep = kept_labels(model.config, labels, depths).reshape(b * t, n_ch)  # [B*T, C]
    labels = labels.reshape(b * t, n_ch)  # [B*T, C]
    hidden_flat = hidden.reshape(b * t, -1)  # [B*T, D]

    # Depth positions each frame needs: 1 + its last supervised channel (0 = skip the frame).
    channel_rank = torch.arange(1, n_ch + 1, device=labels.device)
    row_len = (keep * channel_rank).amax(dim=-1)  # [B*T]
    order = torch.argsort(row_len, descending=True, stable=True)  # longest first
    histogram = torch.bincount(row_len, minlength=n_ch + 1).tolist()  # frames per length 0..C
    # longer[i] = number of frames that need more than i positions = frames that need position i.
    longer = [0] * (n_ch + 1)
    for i in range(n_ch - 1, -1, -1):
        longer[i] = longer[i + 1] + histogram[i + 1]
    n_rows = longer[0]
    uniform = model.uniform_graph
    # Uniform mode: every column, every length and every head, even when empty (zero-row tensors).
    max_len = n_ch if uniform else max((i + 1 for i in range(n_ch) if longer[i] > 0), default=0)
    rows = order[:n_rows]  # [R] frames with at least one kept label, longest first

    # Depth inputs column by column: column i holds position i of the first longer[i] frames.
    columns = [hidden_flat[rows]]  # position 0: temporal state, [R, D]
    for i in range(1, max_len):
        r = rows[: longer[i]]
        label, kept = labels[r, i - 1], keep[r, i - 1]  # channel i-1 feeds position i
        emb = model.embeddings[i - 1](torch.where(kept, label, 0))  # [R_i, D]
        columns.append(torch.where(kept[:, None], emb, 0.0))  # ignored label -> zero vector
    sizes = [col.shape[0] for col in columns]
    adapted = model.depth_input(torch.cat(columns, dim=0)).split(sizes)  # one adapter pass, per column [R_i, Dd]

    # Depth transformer, one call per sequence length (frames of a length are contiguous in `rows`).
    out_columns: list[list[torch.Tensor]] = [[] for _ in range(max_len)]
    for length in range(max_len, 0, -1):
        start, end = longer[length], longer[length - 1]
        if end == start and not uniform:
            continue
        x = torch.stack([adapted[i][start:end] for i in range(length)], dim=1)  # [M, length, Dd]
        y = model.depth(x)  # [M, length, Dd]
        for i in range(length):
            out_columns[i].append(y[:, i])

    # Heads: channel c sees only the frames whose channel-c label is kept.
    logits, logit_rows, sums, counts = [], [], [], []
    zero = hidden.new_zeros((), dtype=torch.float32)
    for ch in range(n_ch):
        if ch >= max_len:
            vocab = model.config.channel_vocab_size(ch)
            logits.append(hidden.new_zeros((0, vocab)))
            logit_rows.append(rows.new_zeros(0))
            sums.append(zero)
            counts.append(0)
            continue
        col = torch.cat(out_columns[ch], dim=0)  # [longer[ch], Dd]
        r = rows[: longer[ch]]
        sel = keep[r, ch].nonzero().squeeze(1)  # [R_c]
        h, target = col[sel], labels[r[sel], ch]  # [R_c, Dd], [R_c]
        counts.append(int(sel.numel()))
        vocab = model.config.channel_vocab_size(ch)
        lg = h.new_zeros((0, vocab))
        if uniform:
            lg, loss_sum = _uniform_channel_loss(model, ch, h, target, return_logits)
            sums.append(loss_sum)
        elif not sel.numel():
            sums.append(zero)
        elif not return_logits and h.shape[0] * vocab > model.loss_chunk_elements:
            sums.append(_chunked_loss_sum(model, ch, h, target))  # the full [R_c, V_c] never exists
        else:
            lg = model.channel_logits(ch, h)  # [R_c, V_c]
            sums.append(F.cross_entropy(lg.float(), target, reduction="sum"))
        if return_logits:
            logits.append(lg)
            logit_rows.append(r[sel])

    count_t = torch.tensor(counts, device=hidden.device)
    channel_losses = torch.stack(sums) / count_t.clamp(min=1)  # [C]
    present = count_t > 0
    if bool(present.any()):
        loss = channel_losses[present].mean()  # (uniform mode: the other channels' zero sums stay wired in)
    elif uniform:  # nothing supervised: a zero that still reaches every module called
        loss = channel_losses.sum() * 0.0 + hidden.float().sum() * 0.0
    else:  # nothing supervised: a zero that still backpropagates
        loss = hidden.float().sum() * 0.0
    if not return_logits:
        return TTSOutput(loss, channel_losses, count_t, None, None, hidden)
    return TTSOutput(loss, channel_losses, count_t, logits, logit_rows, hidden)


def _uniform_channel_loss(
    model: CatTTSModel, channel: int, h: torch.Tensor, target: torch.Tensor, return_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform mode: `(logits [R_c, V_c] or a zero-row stand-in, summed cross-entropy)` with a fixed call count.

    The head runs even when `R_c = 0` (a zero-row call still fires the module hooks, and its zero-sized output
    stays wired into the loss). With `uniform_loss_chunks > 1` and no logits requested, the rows are split
    into exactly that many (possibly empty) chunks, each recomputed in the backward pass; only the text
    channel (0) is chunked, its vocabulary is the only wide one.
    """
    chunks = model.uniform_loss_chunks if channel == 0 else 1
    if return_logits or chunks <= 1:
        lg = model.channel_logits(channel, h)  # [R_c, V_c]
        return lg, F.cross_entropy(lg.float(), target, reduction="sum")
    total = h.new_zeros((), dtype=torch.float32)
    for h_part, t_part in zip(h.tensor_split(chunks), target.tensor_split(chunks), strict=True):
        total = total + torch.utils.checkpoint.checkpoint(
            _channel_loss_sum, model, channel, h_part, t_part, use_reentrant=False
        )
    return h.new_zeros((0, model.config.channel_vocab_size(channel))), total


def _channel_loss_sum(model: CatTTSModel, channel: int, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model.channel_logits(channel, h).float(), target, reduction="sum")


def _chunked_loss_sum(model: CatTTSModel, channel: int, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of channel `channel` over row chunks, each recomputed in the backward pass.

    Keeps at most `loss_chunk_elements` logits alive at a time (the text head of the release has 155648
    outputs: all rows at once would hold R x 155648 floats several times over).
    """
    chunk = max(1, model.loss_chunk_elements // model.config.channel_vocab_size(channel))
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk):
        part = torch.utils.checkpoint.checkpoint(
            _channel_loss_sum,
            model,
            channel,
            h[start : start + chunk],
            target[start : start + chunk],
            use_reentrant=False,
        )
        total = total + part
    return total
