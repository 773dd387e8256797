"""Prompt grids for CAT-TTS, laid out as `[T, 1+N]` token rows, in every prompt layout a model can be trained with.

Shapes: T rows (text tokens and frames), N RVQ layers of the grid (32 in the release), T' reference frames,
L text tokens, B batch.

A model's prompt layout is recorded in its config (`CatTTSConfig.prompt_layout`); `PromptBuilder.for_model`
picks it, and the training data (`cat_tts.data.samples`) builds its grids through the same builder, so training
and inference grids cannot drift apart.

Row layout (one row per text token, channel 0 = the text token, channels 1..N = audio codes): every text row
carries the audio pad code in channels 1..N; an audio block is `audio_start`, then one slot row per audio frame
(channel 0 = the slot token, channels 1..N = that frame's N codes, no delay pattern), then `audio_end`.

* **chat** (the released checkpoint; the official processor's format): ChatML messages rendered one by one with
  the tokenizer's chat template. User audio (the voice reference) uses the user slot token, assistant audio (a
  continuation prefix or a training target) the generation slot. Prompt modes:
  - "clone": the reference clip sits in the user message; the prompt ends with `<|im_start|>assistant\\n` and
    one extra `audio_start` row;
  - "continuation": the reference transcript is put before the text and the reference audio becomes the start
    of the assistant's answer; the prompt ends right after the last reference row (no `audio_end`).
* **plain** (the paper's pre-training format, "text, then the utterance's frames"): the transcript's text tokens,
  an `audio_start` row, one generation-slot row per frame, `audio_end`. There are no messages, so there is one
  prompt mode, "continuation": the reference transcript and the text to speak, `audio_start`, then the reference
  frames, which the model continues (without a reference clip: the text and `audio_start` only).

Each chat message is rendered on its own by the tokenizer's chat template, like the official processor; the
audio placeholder is expanded into token ids directly, so special tokens are always looked up by id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from cat_tts.errors import InputError
from cat_tts.text.normalize import join_text
from cat_tts.text.tiny_tokenizer import CHAT_TEMPLATE

logger = logging.getLogger(__name__)

# Placeholder the user-message template uses for a reference clip (never reaches the tokenizer).
AUDIO_PLACEHOLDER = "<|audio|>"

# Prompt layouts a model can be trained with; "chat" is the released checkpoint's.
LAYOUTS = ("chat", "plain")
DEFAULT_LAYOUT = "chat"
# Old names of layouts, still read (with a warning): the training data format once called "continuation" is the
# plain layout; "continuation" now only names a prompt mode.
DEPRECATED_LAYOUT_NAMES = {"continuation": "plain"}

# Generation prompt modes (see the module docstring).
Mode = Literal["clone", "continuation"]
MODES = ("clone", "continuation")

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


def check_layout(layout: str, name: str = "prompt_layout") -> str:
    """Returns `layout` if it is one of `LAYOUTS`, mapping a deprecated name (with a warning).

    Args:
        layout: the layout name to check.
        name: the config field that holds it, for the messages.

    Raises:
        ValueError: for an unknown name (naming the field, the value and the allowed values).
    """
    if layout in DEPRECATED_LAYOUT_NAMES:
        new = DEPRECATED_LAYOUT_NAMES[layout]
        logger.warning("%s = %r is the old name of the %r prompt layout; write %r", name, layout, new, new)
        return new
    if layout not in LAYOUTS:
        raise ValueError(f"{name} = {layout!r} is invalid; allowed: {' | '.join(LAYOUTS)}")
    return layout


class TokenIdsLike(Protocol):
    """The special-token ids the prompt needs (`cat_tts.model.TokenIds` satisfies this)."""

    pad: int
    audio_start: int
    audio_end: int
    audio_user_slot: int
    audio_assistant_gen_slot: int
    audio_pad_code: int


@dataclass
class Prompt:
    """A generation prompt: the grid to generate from, and the audio frames the generated frames continue."""

    grid: torch.Tensor  # [T, 1+N] LongTensor
    prefix_codes: torch.Tensor | None  # [N, T'] frames the grid ends with (decode them first for codec context)
    mode: Mode  # the prompt mode used


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
        raise InputError(
            f"unknown user-message fields {sorted(unknown)}; allowed: {[n for n, _ in _USER_FIELDS[1:-1]]}"
        )
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
    """Builds `[T, 1+N]` prompt and training grids in one prompt layout (the chat layout exactly like the released
    processor).

    Args:
        tokenizer: the checkpoint's `transformers` tokenizer (the chat layout also uses its chat template).
        token_ids: special-token ids (`cat_tts.model.TokenIds`).
        n_vq: number of RVQ layers N in the grid (32 for the release).
        layout: "chat" or "plain" (see the module docstring); use `for_model` to take it from a model's config.

    Raises:
        ValueError: for n_vq < 1 or an unknown layout.
    """

    def __init__(self, tokenizer: Any, token_ids: TokenIdsLike, n_vq: int, layout: str = DEFAULT_LAYOUT) -> None:
        if n_vq < 1:
            raise ValueError(f"n_vq must be >= 1, got {n_vq}")
        self.layout = check_layout(layout, "layout")
        if self.layout == "chat" and getattr(tokenizer, "chat_template", None) is None:
            # The release renders plain ChatML without a system prompt (reference B.7); use that.
            logger.warning("the tokenizer has no chat template; using plain ChatML")
            tokenizer.chat_template = CHAT_TEMPLATE
        self.tokenizer = tokenizer
        self.ids = token_ids
        self.n_vq = n_vq

    @classmethod
    def for_model(cls, tokenizer: Any, model_config: Any) -> PromptBuilder:
        """The builder of the layout a model was trained with.

        Args:
            tokenizer: the model's tokenizer.
            model_config: its `CatTTSConfig` (`prompt_layout`, `token_ids`, `n_vq`); a config without
                `prompt_layout` (the released config.json) has the chat layout.
        """
        layout = getattr(model_config, "prompt_layout", None) or DEFAULT_LAYOUT
        return cls(tokenizer, model_config.token_ids, int(model_config.n_vq), layout=layout)

    # ----------------------------------------------------------------- every layout

    def generation_prompt(
        self,
        text: str,
        reference_codes: torch.Tensor | None,
        reference_text: str | None,
        mode: Mode | None = None,
        **fields: Any,
    ) -> Prompt:
        """The prompt that makes the model speak `text` (in the voice of a reference clip), in this layout.

        Args:
            text: the text to speak (already cleaned).
            reference_codes: `[N, T']` codes of the reference clip (all N layers), or None (no voice prompt).
            reference_text: the reference clip's transcript, or None.
            mode: "clone" (chat layout only: the clip in the user message), "continuation" (the model continues the
                clip, whose transcript is put before `text`), or None: "continuation" when a transcript is given (and
                always in the plain layout), else "clone".
            **fields: user-message fields of the chat layout (`instruction`, `language`, ...; see `user_content`).

        Returns:
            The `Prompt`: its grid, the prefix frames it ends with (continuation with a clip; None otherwise), and
            the mode used.

        Raises:
            InputError: an unknown mode; a transcript without a clip; continuation without the clip's transcript
                (the plain layout always continues the clip, so it needs the transcript); "clone" or user-message
                fields in the plain layout.
        """
        if mode not in (None, *MODES):
            raise InputError(f"mode must be one of {' | '.join(MODES)} (or None for automatic), got {mode!r}")
        if reference_text is not None and not reference_text.strip():
            reference_text = None
        if reference_text is not None and reference_codes is None:
            raise InputError("a reference transcript was given without its reference audio")
        if self.layout == "plain":
            return self._plain_prompt(text, reference_codes, reference_text, mode, fields)
        mode = mode or ("continuation" if reference_text is not None else "clone")
        if mode == "clone":
            return Prompt(self.voice_clone(text, reference_codes, **fields), None, "clone")
        if reference_codes is None or reference_text is None:
            raise InputError("continuation mode needs a reference clip and its transcript (reference_text)")
        grid = self.continuation(join_transcript(reference_text, text), reference_codes, **fields)
        return Prompt(grid, reference_codes, "continuation")

    def training_example(
        self,
        text: str,
        target_codes: torch.Tensor,
        reference_codes: torch.Tensor | None = None,
        **fields: Any,
    ) -> tuple[torch.Tensor, int]:
        """Full grid for teacher forcing: the generation prompt of `text` followed by the target audio.

        Chat layout: the whole conversation (the official "computing_loss" layout), with an optional reference clip
        of the same speaker in the user message. Plain layout: the text, `audio_start`, the frames, `audio_end`
        (no reference clip, no fields).

        Args:
            text: the transcript of the target audio.
            target_codes: `[N, T]` codes of the target audio.
            reference_codes: chat layout: optional `[N, T']` codes of a reference clip of the same speaker.
            **fields: chat layout: optional user-message fields.

        Returns:
            `(grid [R, 1+N], loss_start)`: `grid[:loss_start]` is the generation prompt (`generation_prompt` with the
            same reference and no transcript); predictions of rows >= loss_start (the target frames, `audio_end`,
            and in the chat layout `<|im_end|>` and the newline) are supervised.

        Raises:
            ValueError: target codes of the wrong shape; a reference clip or fields in the plain layout.
        """
        if target_codes.dim() != 2 or target_codes.shape[0] != self.n_vq:
            raise ValueError(f"target codes must be [N={self.n_vq}, T], got {tuple(target_codes.shape)}")
        if self.layout == "plain":
            if reference_codes is not None or fields:
                raise ValueError("plain-layout training examples take no reference clip and no user-message fields")
            prompt = self._plain_prompt(text, None, None, None, {}).grid  # [L+1, 1+N]
            frames = self._audio_rows(target_codes, self.ids.audio_assistant_gen_slot)  # [T+2, 1+N]
            return torch.cat([prompt, frames[1:]]), prompt.shape[0]
        refs = [] if reference_codes is None else [reference_codes]
        content = user_content(text, reference_codes is not None, **fields)
        user = self._message("user", content, refs, False)
        assistant = self._message("assistant", AUDIO_PLACEHOLDER, [target_codes], False)
        prompt_rows = self._message("user", content, refs, True).shape[0] + 1
        return torch.cat([user, assistant]), prompt_rows

    # ----------------------------------------------------------------- the chat layout

    def voice_clone(self, text: str, reference_codes: torch.Tensor | None, **fields: Any) -> torch.Tensor:
        """Chat layout, "clone" prompt: the reference clip in the user message, ending with an `audio_start` row.

        Args:
            text: the text to speak.
            reference_codes: `[N, T']` codes of the reference clip (all N layers), or None (no voice prompt).
            **fields: optional user-message fields (see `user_content`).

        Returns:
            LongTensor `[T, 1+N]`.
        """
        self._require_chat("voice_clone")
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
        """Chat layout, "continuation" prompt: the prefix audio as the assistant's unfinished answer.

        Args:
            text: the prefix transcript followed by the text to speak (see `join_transcript`).
            prefix_codes: `[N, T']` codes of the prefix audio (usually the reference clip), T' >= 1.
            reference_codes: optional `[N, T'']` codes of a reference clip for the user message.
            **fields: optional user-message fields.

        Returns:
            LongTensor `[T, 1+N]` ending with the last prefix-audio row.
        """
        self._require_chat("continuation")
        if prefix_codes.shape[-1] < 1:
            raise InputError("continuation needs at least one prefix-audio frame")
        refs = [] if reference_codes is None else [reference_codes]
        user = self._message("user", user_content(text, reference_codes is not None, **fields), refs, False)
        assistant = self._message("assistant", AUDIO_PLACEHOLDER, [prefix_codes], False)
        # Cut the assistant turn right after its last audio row: drop audio_end, <|im_end|> and "\n".
        slots = (assistant[:, 0] == self.ids.audio_assistant_gen_slot).nonzero()
        assistant = assistant[: int(slots[-1]) + 1]
        return torch.cat([user, assistant])  # [T, 1+N]

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

    def _plain_prompt(
        self,
        text: str,
        reference_codes: torch.Tensor | None,
        reference_text: str | None,
        mode: Mode | None,
        fields: dict[str, Any],
    ) -> Prompt:
        """Plain layout: text rows, `audio_start`, then the reference frames (if any) for the model to continue."""
        if fields:
            raise InputError(
                f"this model uses the plain prompt layout (text, then audio), which has no user-message fields; "
                f"got {sorted(fields)}"
            )
        if mode == "clone":
            raise InputError(
                "this model uses the plain prompt layout (text, then audio), which has no clone mode: "
                "give the reference clip's transcript (continuation)"
            )
        if reference_codes is None:
            return Prompt(self._text_rows([*self._encode(text), self.ids.audio_start]), None, "continuation")
        if reference_text is None:
            raise InputError(
                "this model uses the plain prompt layout (text, then audio): it continues the reference clip, so it "
                "needs the clip's transcript (reference_text; infer.py --prompt-text)"
            )
        text_rows = self._text_rows([*self._encode(join_transcript(reference_text, text)), self.ids.audio_start])
        frames = self._audio_rows(reference_codes, self.ids.audio_assistant_gen_slot)[1:-1]  # [T', 1+N]
        if frames.shape[0] < 1:
            raise InputError("the reference clip has no frames")
        return Prompt(torch.cat([text_rows, frames]), reference_codes, "continuation")  # [T, 1+N]

    def _require_chat(self, what: str) -> None:
        if self.layout != "chat":
            raise ValueError(f"{what} builds chat-layout prompts; this builder has the {self.layout!r} layout")

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _text_rows(self, token_ids: Sequence[int]) -> torch.Tensor:
        rows = torch.full((len(token_ids), 1 + self.n_vq), self.ids.audio_pad_code, dtype=torch.long)
        rows[:, 0] = torch.tensor(list(token_ids), dtype=torch.long)
        return rows  # [T, 1+N]

    def _audio_rows(self, codes: torch.Tensor, slot: int) -> torch.Tensor:
        if codes.dim() != 2 or codes.shape[0] != self.n_vq:
            raise InputError(f"audio codes must be [N={self.n_vq}, T] (all layers), got {tuple(codes.shape)}")
        rows = torch.empty(codes.shape[1], 1 + self.n_vq, dtype=torch.long)  # [T, 1+N]
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
                blocks.append(self._text_rows(self._encode(piece)))
            if i < len(audios):
                blocks.append(self._audio_rows(audios[i], slot))
        return torch.cat(blocks)  # [T, 1+N]
