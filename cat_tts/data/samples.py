"""Training samples: an utterance becomes a `[R, 1+N]` grid and its shifted labels.

Two layouts (`data.format`):

* **continuation** (the paper's format, for training from a Qwen3 LM): the transcript's text tokens, an
  `audio_start` row, one generation-slot row per frame (channel 0 = `audio_assistant_gen_slot`, channels
  1..N = the frame's codes), then `audio_end`. Supervised: every frame and the `audio_end` stop token.
  At inference the prompt is the text rows plus the `audio_start` row (`continuation_prompt`).
* **chat** (the official format, for fine-tuning the released model): the user turn with the transcript
  and a reference clip of the same speaker, then the assistant turn holding the target audio, as built by
  `cat_tts.text.prompt.PromptBuilder.training_example`. Supervised: the target frames, `audio_end`,
  `<|im_end|>` and the newline (text channel only after the last frame).

Labels are shifted: the label of input row t is grid row t+1, -100 where not supervised, and audio labels
equal to the pad code are ignored (the pad code is never a target).

Shapes: R rows, N audio layers, T frames, L text tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cat_tts.data.dataset import Utterance

IGNORE = -100
FORMATS = ("continuation", "chat")


@dataclass
class TrainingSample:
    """One utterance ready for collation."""

    id: str
    input_ids: torch.Tensor  # [R, 1+N] grid rows 0..R-1
    labels: torch.Tensor  # [R, 1+N] grid rows 1..R, IGNORE where not supervised
    num_frames: int  # supervised audio frames


def shift_labels(grid: torch.Tensor, loss_start: int, audio_pad_code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits a full grid into inputs and next-row labels.

    Args:
        grid: `[R+1, 1+N]` token rows.
        loss_start: the first grid row that is a target (rows before it are prompt).
        audio_pad_code: the structural pad code of the audio channels (never a target).

    Returns:
        `(input_ids [R, 1+N], labels [R, 1+N])`: `labels[t] = grid[t+1]`, IGNORE for targets before
        `loss_start` and for audio pad codes.
    """
    if not 1 <= loss_start < grid.shape[0]:
        raise ValueError(
            f"loss_start must be in 1..{grid.shape[0] - 1} for a grid of {grid.shape[0]} rows, got {loss_start}"
        )
    input_ids = grid[:-1].clone()  # [R, 1+N]
    labels = grid[1:].clone()  # [R, 1+N]
    labels[: loss_start - 1] = IGNORE
    audio = labels[:, 1:]
    audio[audio == audio_pad_code] = IGNORE
    return input_ids, labels


class SampleBuilder:
    """Builds grids in one of the two formats.

    Args:
        tokenizer: a Hugging Face tokenizer (`encode(text, add_special_tokens=False)`; the chat format also
            uses its chat template).
        token_ids: the model's `TokenIds` (special ids and the audio pad code).
        n_vq: audio layers per frame (32).
        format: "continuation" or "chat".
    """

    def __init__(self, tokenizer: Any, token_ids: Any, n_vq: int, format: str = "continuation") -> None:
        if format not in FORMATS:
            raise ValueError(f"format = {format!r} is invalid; allowed: {' | '.join(FORMATS)}")
        self.tokenizer = tokenizer
        self.ids = token_ids
        self.n_vq = n_vq
        self.format = format
        self._prompt_builder: Any = None
        self._chat_overhead: dict[bool, int] = {}

    # ------------------------------------------------------------------ grids

    def text_ids(self, text: str) -> list[int]:
        """The transcript's token ids (no special tokens)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _rows(self, channel0: list[int] | torch.Tensor) -> torch.Tensor:
        channel0 = torch.as_tensor(channel0, dtype=torch.long)
        rows = torch.full((channel0.numel(), 1 + self.n_vq), self.ids.audio_pad_code, dtype=torch.long)
        rows[:, 0] = channel0
        return rows  # [L, 1+N]

    def continuation_prompt(self, text: str) -> torch.Tensor:
        """Generation prompt of the continuation format: text rows then the `audio_start` row, `[L+1, 1+N]`."""
        return self._rows([*self.text_ids(text), self.ids.audio_start])

    def continuation_example(self, text: str, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Full continuation grid `[L+T+2, 1+N]` and its loss start (the first frame row)."""
        if codes.dim() != 2 or codes.shape[0] != self.n_vq:
            raise ValueError(f"codes must be [N={self.n_vq}, T], got {tuple(codes.shape)}")
        prompt = self.continuation_prompt(text)  # [L+1, 1+N]
        frames = self._rows([self.ids.audio_assistant_gen_slot] * codes.shape[1])  # [T, 1+N]
        frames[:, 1:] = codes.t()
        end = self._rows([self.ids.audio_end])  # [1, 1+N]
        return torch.cat([prompt, frames, end]), prompt.shape[0]

    def chat_example(
        self, text: str, codes: torch.Tensor, reference: torch.Tensor | None, fields: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, int]:
        """Full chat-format grid and its loss start (via the shared `PromptBuilder`)."""
        return self.prompt_builder.training_example(text, codes, reference, **(fields or {}))

    @property
    def prompt_builder(self) -> Any:
        if self._prompt_builder is None:
            from cat_tts.text.prompt import PromptBuilder

            self._prompt_builder = PromptBuilder(self.tokenizer, self.ids, self.n_vq)
        return self._prompt_builder

    # ---------------------------------------------------------------- samples

    def build(self, utt: Utterance, reference: torch.Tensor | None = None) -> TrainingSample:
        """The training sample of one utterance (`reference [N, T']` is used by the chat format only)."""
        if self.format == "continuation":
            grid, loss_start = self.continuation_example(utt.text, utt.codes)
        else:
            fields = dict(utt.fields)
            if utt.language is not None:
                fields.setdefault("language", utt.language)
            grid, loss_start = self.chat_example(utt.text, utt.codes, reference, fields)
        input_ids, labels = shift_labels(grid, loss_start, self.ids.audio_pad_code)
        return TrainingSample(id=utt.id, input_ids=input_ids, labels=labels, num_frames=int(utt.codes.shape[1]))

    def estimate_rows(self, text_tokens: int, frames: int, ref_frames: int = 0) -> int:
        """Input rows of a sample (exact for continuation; chat adds the template, within a few tokens)."""
        if self.format == "continuation":
            return text_tokens + frames + 1  # + audio_start + audio_end - 1 (shift)
        has_ref = ref_frames > 0
        if has_ref not in self._chat_overhead:
            empty = torch.zeros(self.n_vq, 0, dtype=torch.long)
            grid, _ = self.chat_example("", empty, empty if has_ref else None)
            self._chat_overhead[has_ref] = grid.shape[0] - 1
        return self._chat_overhead[has_ref] + text_tokens + frames + ref_frames + 2  # +2: BPE slack at the seams
