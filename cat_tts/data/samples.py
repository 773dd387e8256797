"""Training samples: an utterance becomes a `[R, 1+N]` grid and its shifted labels.

The grid is built by `cat_tts.text.prompt.PromptBuilder.training_example` in the run's prompt layout
(`data.prompt_layout`), the same builder the inference pipeline uses for the exported model, so a trained
model's generation prompt is always the start of its training grids:

* **plain** (the paper's format, for training from a Qwen3 LM): the transcript's text tokens, an `audio_start`
  row, one generation-slot row per frame, then `audio_end`. Supervised: every frame and the `audio_end` stop
  token.
* **chat** (the official format, for fine-tuning the released model): the user turn with the transcript and a
  reference clip of the same speaker, then the assistant turn holding the target audio. Supervised: the target
  frames, `audio_end`, `<|im_end|>` and the newline (text channel only after the last frame).

Labels are shifted: the label of input row t is grid row t+1, `IGNORE_INDEX` where not supervised, and audio
labels equal to the pad code are ignored (the pad code is never a target).

Shapes: R rows of a sample (text tokens and frames), N RVQ layers, T frames, T' reference frames, L text tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cat_tts.data.dataset import Utterance
from cat_tts.model import IGNORE_INDEX
from cat_tts.text.prompt import PromptBuilder, check_layout


@dataclass
class TrainingSample:
    """One utterance ready for collation."""

    id: str
    input_ids: torch.Tensor  # [R, 1+N] grid rows 0..R-1
    labels: torch.Tensor  # [R, 1+N] grid rows 1..R, IGNORE_INDEX where not supervised
    num_frames: int  # supervised audio frames


def shift_labels(grid: torch.Tensor, loss_start: int, audio_pad_code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits a full grid into inputs and next-row labels.

    Args:
        grid: `[R+1, 1+N]` token rows.
        loss_start: the first grid row that is a target (rows before it are prompt).
        audio_pad_code: the structural pad code of the audio channels (never a target).

    Returns:
        `(input_ids [R, 1+N], labels [R, 1+N])`: `labels[t] = grid[t+1]`, IGNORE_INDEX for targets before
        `loss_start` and for audio pad codes.
    """
    if not 1 <= loss_start < grid.shape[0]:
        raise ValueError(
            f"loss_start must be in 1..{grid.shape[0] - 1} for a grid of {grid.shape[0]} rows, got {loss_start}"
        )
    input_ids = grid[:-1].clone()  # [R, 1+N]
    labels = grid[1:].clone()  # [R, 1+N]
    labels[: loss_start - 1] = IGNORE_INDEX
    audio = labels[:, 1:]  # [R, N]
    audio[audio == audio_pad_code] = IGNORE_INDEX
    return input_ids, labels


class SampleBuilder:
    """Builds the training samples of one prompt layout.

    Args:
        tokenizer: a Hugging Face tokenizer (`encode(text, add_special_tokens=False)`; the chat layout also uses
            its chat template).
        token_ids: the model's `TokenIds` (special ids and the audio pad code).
        n_vq: RVQ layers per frame N (32).
        layout: "plain" (the paper's format, the default) or "chat"; see `cat_tts.text.prompt`.
    """

    def __init__(self, tokenizer: Any, token_ids: Any, n_vq: int, layout: str = "plain") -> None:
        self.layout = check_layout(layout, "layout")
        self.tokenizer = tokenizer
        self.ids = token_ids
        self.n_vq = n_vq
        self.prompt_builder = PromptBuilder(tokenizer, token_ids, n_vq, layout=self.layout)
        self._chat_overhead: dict[bool, int] = {}

    def text_ids(self, text: str) -> list[int]:
        """The transcript's token ids (no special tokens)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def build(self, utt: Utterance, reference: torch.Tensor | None = None) -> TrainingSample:
        """The training sample of one utterance (`reference [N, T']` is used by the chat layout only)."""
        if self.layout == "plain":
            grid, loss_start = self.prompt_builder.training_example(utt.text, utt.codes)
        else:
            fields = dict(utt.fields)
            if utt.language is not None:
                fields.setdefault("language", utt.language)
            grid, loss_start = self.prompt_builder.training_example(utt.text, utt.codes, reference, **fields)
        input_ids, labels = shift_labels(grid, loss_start, self.ids.audio_pad_code)
        return TrainingSample(id=utt.id, input_ids=input_ids, labels=labels, num_frames=int(utt.codes.shape[1]))

    def estimate_rows(self, text_tokens: int, frames: int, ref_frames: int = 0) -> int:
        """Input rows of a sample (exact for the plain layout; chat adds the template, within a few tokens)."""
        if self.layout == "plain":
            return text_tokens + frames + 1  # + audio_start + audio_end - 1 (shift)
        has_ref = ref_frames > 0
        if has_ref not in self._chat_overhead:
            empty = torch.zeros(self.n_vq, 0, dtype=torch.long)  # [N, 0]
            grid, _ = self.prompt_builder.training_example("", empty, empty if has_ref else None)
            self._chat_overhead[has_ref] = grid.shape[0] - 1
        return self._chat_overhead[has_ref] + text_tokens + frames + ref_frames + 2  # +2: BPE slack at the seams
