"""The streaming state of the whole codec: one row per stream, and the checks of decode_step's per-row arguments.

Shapes: B rows (streams) of a state, R rows advanced by one call, s pending samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cat_tts.codec.transformer import StageState


@dataclass
class CodecStreamState:
    """Everything a streaming encode/decode carries between calls, for B streams (rows; nothing global).

    The encoder and decoder halves are independent: a state can serve a live encode, a live decode, or both. Decode
    rows are independent streams (each at its own frame, see `CatCodec.decode_step`): a pool of streams drops and
    adds rows with `keep_rows` / `add_rows`.
    """

    batch_size: int  # rows (streams); decode_step may advance any subset of them, encode_step advances all together
    encoder: list[StageState | None]  # per encoder stage: transformer state, None for patch stages
    decoder: list[StageState | None]  # per decoder stage: transformer state, None for patch stages
    pending: torch.Tensor  # [B, s] samples received by encode_step that do not yet fill a frame (s < 1920)
    decoded: torch.Tensor  # [B] int64 (CPU): frames consumed by decode_step per row
    frames_encoded: int = 0  # frames emitted by encode_step so far

    @property
    def frames_decoded(self) -> int:
        """Frames consumed by decode_step (the most of any row, when rows advanced separately)."""
        return int(self.decoded.max()) if self.batch_size else 0

    def keep_rows(self, rows: list[int] | torch.Tensor) -> None:
        """Keep only `rows` (distinct indices, in that order), e.g. to drop finished streams; copies the buffers."""
        rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        for stage in self.encoder + self.decoder:
            if stage is not None:
                stage.keep_rows(rows)
        self.pending = self.pending.index_select(0, rows.to(self.pending.device))
        self.decoded = self.decoded.index_select(0, rows)
        self.batch_size = len(rows)

    def add_rows(self, n: int) -> None:
        """Append `n` fresh decode streams (rows B..B+n-1, at frame 0); copies the buffers.

        Raises:
            ValueError: a live encode has started (encode_step advances all rows together).
        """
        if self.frames_encoded or self.pending.shape[1]:
            raise ValueError("rows can be added to decode streams only: this state's encode_step has started")
        for stage in self.encoder + self.decoder:
            if stage is not None:
                stage.add_rows(n)
        self.pending = torch.cat([self.pending, self.pending.new_zeros(n, 0)])
        self.decoded = torch.cat([self.decoded, self.decoded.new_zeros(n)])
        self.batch_size += n


def check_rows(rows: list[int] | torch.Tensor | None, r: int, batch: int) -> torch.Tensor | None:
    """The state rows of a decode_step as a [R] CPU index, or None when they are all rows in order."""
    if rows is None:
        if r != batch:
            raise ValueError(f"state is for batch {batch}, got codes for batch {r} (pass rows= to advance some)")
        return None
    index = torch.as_tensor(rows, dtype=torch.long).cpu().reshape(-1)
    values = index.tolist()
    if len(values) != r or len(set(values)) != r or (values and not 0 <= min(values) <= max(values) < batch):
        raise ValueError(f"rows must be {r} distinct indices in 0..{batch - 1} (one per row of codes), got {values}")
    return None if values == list(range(batch)) else index


def check_per_row(
    values: list[int] | torch.Tensor | None, r: int, low: int, high: int, name: str
) -> torch.Tensor | None:
    """A per-row count of decode_step as a [R] int64 CPU tensor in low..high (None stays None)."""
    if values is None:
        return None
    out = torch.as_tensor(values).cpu().reshape(-1)
    if out.dtype.is_floating_point or out.dtype == torch.bool or out.shape != (r,):
        raise ValueError(f"{name} must be {r} integers (one per row of codes), got {values}")
    if r and not low <= int(out.min()) <= int(out.max()) <= high:
        raise ValueError(f"{name} must lie in {low}..{high}, got {out.tolist()}")
    return out.long()


def zero_padding(codes: torch.Tensor, steps: torch.Tensor | None, layers: torch.Tensor | None) -> torch.Tensor:
    """codes [R, K, t] with code 0 at the frames past each row's `steps` and the layers past its `layers` (padding,
    e.g. the pad code 1024, which decode_step ignores but must not index a codebook with)."""
    if steps is None and layers is None:
        return codes
    r, k, t = codes.shape
    valid = torch.ones(r, k, t, dtype=torch.bool)
    if steps is not None:
        valid &= torch.arange(t).view(1, 1, t) < steps.view(r, 1, 1)
    if layers is not None:
        valid &= torch.arange(k).view(1, k, 1) < layers.view(r, 1, 1)
    return torch.where(valid.to(codes.device), codes, torch.zeros_like(codes))
