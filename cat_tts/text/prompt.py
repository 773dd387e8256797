"""Prompt grids for CAT-TTS: the chat format of the released checkpoint, laid out as `[T, 1+N]` token rows.

Shapes: T rows (frames/tokens), N audio layers (32 in the release), L reference frames, B batch.

Row layout (one row per text token, channel 0 = the text token, channels 1..N = audio codes):

* every text row carries the audio pad code in channels 1..N;
* an audio block is `audio_start`, then one slot row per audio frame (channel 0 = the slot token, channels
  1..N = that frame's N codes, no delay pattern), then `audio_end`; user audio (the voice reference) uses
  the user slot token, assistant audio (a continuation prefix or a training target) the generation slot;
* a generation prompt ends with `<|im_start|>assistant\\n` and one extra `audio_start` row;
* a continuation prompt ends right after the last prefix-audio row (no `audio_end`, no extra row).

Each message is rendered on its own by the tokenizer's chat template, like the official processor; the
audio placeholder is expanded into token ids directly, so special tokens are always looked up by id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from cat_tts.text.normalize import join_text

logger = logging.getLogger(__name__)

# Placeholder the user-message template uses for a reference clip (never reaches the tokenizer).
AUDIO_PLACEHOLDER = "<|audio|>"

# Header lines of the user instruction block, in order; every value is `None` unless given.
_USER_FIELDS = (
    ("reference", "- Reference(s):"),
    ("instruction", "- Instruction:"),
    ("tokens", "- Tokens:"),
    ("quality", "- Quality:"),
    ("sound_event", "- Sound Event:"),
    ("ambient_sound", "- Ambient Sound:"),
    ("language", "- Language:"),
    ("text", "- Text:"),
)


class TokenIdsLike(Protocol):
    """The special-token ids the prompt needs (`cat_tts.model.TokenIds` satisfies this)."""

    pad: int
    audio_start: int
    audio_end: int
    audio_user_slot: int
    audio_assistant_gen_slot: int
    audio_pad_code: int


def user_content(text: str, has_reference: bool, **fields: Any) -> str:
    """Builds the user-message content of the released chat format.

    Args:
        text: the text to speak (inserted verbatim).
        has_reference: whether one reference clip follows as speaker `[S1]`.
        **fields: optional `instruction`, `tokens`, `quality`, `sound_event`, `ambient_sound`, `language`
            values; a missing field is written as `None`, as the checkpoint was trained with.

    Returns:
        The content string, with `AUDIO_PLACEHOLDER` where the reference audio goes.
    """
    unknown = set(fields) - {name for name, _ in _USER_FIELDS}
    if unknown:
        raise ValueError(f"unknown user-message fields {sorted(unknown)}")
    values = dict(fields)
    values["text"] = text
    values["reference"] = f"[S1]:\n{AUDIO_PLACEHOLDER}" if has_reference else None
    lines = ["<user_inst>"]
    for name, header in _USER_FIELDS:
        lines += [header, str(values.get(name))]
    lines.append("</user_inst>")
    return "\n".join(lines)


def join_transcript(reference_text: str, text: str) -> str:
    """Joins a reference transcript and the target text into the continuation-mode user text.

    The official examples concatenate the two strings directly (right for Chinese); we add one space
    unless both sides of the seam are CJK, so English words do not run together.
    """
    return join_text(reference_text.strip(), text.strip())


class PromptBuilder:
    """Builds `[T, 1+N]` prompt grids exactly like the released processor.

    Args:
        tokenizer: the checkpoint's `transformers` tokenizer (with a chat template).
        token_ids: special-token ids (`cat_tts.model.TokenIds`).
        n_vq: number of audio layers N in the grid (32 for the release).
    """

    def __init__(self, tokenizer: Any, token_ids: TokenIdsLike, n_vq: int) -> None:
        if n_vq < 1:
            raise ValueError(f"n_vq must be >= 1, got {n_vq}")
        if getattr(tokenizer, "chat_template", None) is None:
            # The release renders plain ChatML without a system prompt (reference B.7); use that.
            from cat_tts.text.tiny_tokenizer import CHAT_TEMPLATE

            logger.warning("the tokenizer has no chat template; using plain ChatML")
            tokenizer.chat_template = CHAT_TEMPLATE
        self.tokenizer = tokenizer
        self.ids = token_ids
        self.n_vq = n_vq

    # ----------------------------------------------------------------- public API

    def voice_clone(self, text: str, reference_codes: torch.Tensor | None, **fields: Any) -> torch.Tensor:
        """Generation prompt: the reference clip in the user message, ending with an `audio_start` row.

        Args:
            text: the text to speak.
            reference_codes: `[N, L]` codes of the reference clip (all N layers), or None (no voice prompt).
            **fields: optional user-message fields (see `user_content`).

        Returns:
            LongTensor `[T, 1+N]`.
        """
        refs = [] if reference_codes is None else [reference_codes]
        user = self._message("user", user_content(text, reference_codes is not None, **fields), refs, True)
        start = self._text_rows([self.ids.audio_start])
        return torch.cat([user, start])  # [T, 1+N]

    def continuation(
        self,
        text: str,
        prefix_codes: torch.Tensor,
        reference_codes: torch.Tensor | None = None,
        **fields: Any,
    ) -> torch.Tensor:
        """Continuation prompt: the prefix audio as the assistant's unfinished answer.

        Args:
            text: the prefix transcript followed by the text to speak (see `join_transcript`).
            prefix_codes: `[N, L]` codes of the prefix audio (usually the reference clip), L >= 1.
            reference_codes: optional `[N, L']` codes of a reference clip for the user message.
            **fields: optional user-message fields.

        Returns:
            LongTensor `[T, 1+N]` ending with the last prefix-audio row.
        """
        if prefix_codes.shape[-1] < 1:
            raise ValueError("continuation needs at least one prefix-audio frame")
        refs = [] if reference_codes is None else [reference_codes]
        user = self._message("user", user_content(text, reference_codes is not None, **fields), refs, False)
        assistant = self._message("assistant", AUDIO_PLACEHOLDER, [prefix_codes], False)
        # Cut the assistant turn right after its last audio row: drop audio_end, <|im_end|> and "\n".
        slots = (assistant[:, 0] == self.ids.audio_assistant_gen_slot).nonzero()
        assistant = assistant[: int(slots[-1]) + 1]
        return torch.cat([user, assistant])  # [T, 1+N]

    def training_example(
        self,
        text: str,
        target_codes: torch.Tensor,
        reference_codes: torch.Tensor | None = None,
        **fields: Any,
    ) -> tuple[torch.Tensor, int]:
        """Full conversation for teacher forcing (the official "computing_loss" layout).

        Args:
            text: the transcript of the target audio.
            target_codes: `[N, L]` codes of the target audio.
            reference_codes: optional `[N, L']` codes of a reference clip of the same speaker.
            **fields: optional user-message fields.

        Returns:
            `(grid [T, 1+N], loss_start)`: loss_start is the number of rows of the matching generation
            prompt (which ends with the assistant `audio_start` row); predictions of rows >= loss_start
            (the target frames, `audio_end`, `<|im_end|>`, newline) are supervised.
        """
        refs = [] if reference_codes is None else [reference_codes]
        content = user_content(text, reference_codes is not None, **fields)
        user = self._message("user", content, refs, False)
        assistant = self._message("assistant", AUDIO_PLACEHOLDER, [target_codes], False)
        prompt_rows = self._message("user", content, refs, True).shape[0] + 1
        return torch.cat([user, assistant]), prompt_rows

    def pad_left(self, grids: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pads grids to one batch (text pad in channel 0, audio pad code elsewhere).

        Args:
            grids: B tensors `[T_b, 1+N]`.

        Returns:
            `(input_ids [B, T, 1+N], attention_mask [B, T] bool)`.
        """
        if not grids:
            raise ValueError("pad_left needs at least one grid")
        width = grids[0].shape[1]
        t_max = max(g.shape[0] for g in grids)
        input_ids = torch.full((len(grids), t_max, width), self.ids.audio_pad_code, dtype=torch.long)
        input_ids[:, :, 0] = self.ids.pad
        mask = torch.zeros(len(grids), t_max, dtype=torch.bool)
        for b, g in enumerate(grids):
            if g.shape[1] != width:
                raise ValueError(f"grid {b} has {g.shape[1]} channels, grid 0 has {width}")
            input_ids[b, t_max - g.shape[0] :] = g
            mask[b, t_max - g.shape[0] :] = True
        return input_ids, mask

    # ----------------------------------------------------------------- internals

    def _text_rows(self, token_ids: Sequence[int]) -> torch.Tensor:
        rows = torch.full((len(token_ids), 1 + self.n_vq), self.ids.audio_pad_code, dtype=torch.long)
        rows[:, 0] = torch.tensor(list(token_ids), dtype=torch.long)
        return rows  # [T, 1+N]

    def _audio_rows(self, codes: torch.Tensor, slot: int) -> torch.Tensor:
        if codes.dim() != 2 or codes.shape[0] != self.n_vq:
            raise ValueError(f"audio codes must be [N={self.n_vq}, L] (all layers), got {tuple(codes.shape)}")
        rows = torch.empty(codes.shape[1], 1 + self.n_vq, dtype=torch.long)
        rows[:, 0] = slot
        rows[:, 1:] = codes.t().to(torch.long)
        return torch.cat([self._text_rows([self.ids.audio_start]), rows, self._text_rows([self.ids.audio_end])])

    def _message(self, role: str, content: str, audios: list[torch.Tensor], generation_prompt: bool) -> torch.Tensor:
        """Renders one message with the chat template and expands its audio placeholders into rows."""
        rendered = self.tokenizer.apply_chat_template(
            [{"role": role, "content": content}], add_generation_prompt=generation_prompt, tokenize=False
        )
        pieces = rendered.split(AUDIO_PLACEHOLDER)
        if len(pieces) - 1 != len(audios):
            raise ValueError(f"{len(pieces) - 1} audio placeholders in the {role} message, {len(audios)} clips")
        slot = self.ids.audio_user_slot if role == "user" else self.ids.audio_assistant_gen_slot
        blocks = []
        for i, piece in enumerate(pieces):
            if piece:
                blocks.append(self._text_rows(self.tokenizer.encode(piece, add_special_tokens=False)))
            if i < len(audios):
                blocks.append(self._audio_rows(audios[i], slot))
        return torch.cat(blocks)  # [T, 1+N]
