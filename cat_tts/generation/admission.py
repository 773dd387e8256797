"""What a request must satisfy to be queued: a well-formed prompt grid and a frame budget that fits a slot.

Shapes: T prompt rows, N layers of the grid, R rows per slot.

The frame budget rule is written here once: the engine applies it to every submission; planners only give their
estimate from the text.
"""

from __future__ import annotations

import torch

from cat_tts.errors import InputError
from cat_tts.generation.config import EngineConfig

# Frame budget when none is given: a floor plus frames per prompt row (runaway protection).
MIN_DEFAULT_FRAMES = 64
DEFAULT_FRAMES_PER_PROMPT_ROW = 12


def default_budget(prompt_rows: int) -> int:
    """The frame budget of a request that gives none and has no estimate (before the slot capacity bounds it)."""
    return MIN_DEFAULT_FRAMES + DEFAULT_FRAMES_PER_PROMPT_ROW * prompt_rows


def frame_budget(
    config: EngineConfig, prompt_rows: int, asked: int | None = None, estimate: int | None = None, least: int = 0
) -> int:
    """The frame budget of a request: what it asked (checked: it must fit the slot), else the caller's estimate from
    its text, else `default_budget`; bounded by the room its slot has after the prompt.

    Raises:
        InputError: an asked budget that is not a positive integer or does not fit a slot with this prompt, or a
            budget below `least` (the request's min_new_frames).
    """
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise InputError(f"max_new_frames must be a positive integer, got {asked!r}")
    room = config.max_rows - config.sync_every - prompt_rows
    if asked is None:
        budget = max(1, min(room, estimate if estimate is not None else default_budget(prompt_rows)))
        if budget < least:
            raise InputError(f"min_new_frames ({least}) must not exceed the budget ({budget})")
        return budget
    if asked > room:
        raise InputError(
            f"a prompt of {prompt_rows} rows plus {asked} new frames does not fit a slot of {config.max_rows} rows "
            f"(room for {max(room, 0)} frames): shorten the reference or the text, lower max_new_frames, or raise "
            "the engine's max_rows"
        )
    return asked


def check_prompt(prompt: torch.Tensor, n_vq: int, text_vocab: int, pad_code: int) -> torch.Tensor:
    """Checks a prompt grid `[T, 1+N]` on the host (a bad id would otherwise fail deep inside an embedding; on CUDA a
    device-side assert that poisons the whole process); returns it as int64 on the CPU."""
    c = 1 + n_vq
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[1] != c or prompt.shape[0] < 1:
        got = tuple(prompt.shape) if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise InputError(f"a prompt must be an integer grid [T >= 1, {c}], got {got}")
    if prompt.dtype.is_floating_point or prompt.dtype == torch.bool:
        raise InputError(f"a prompt must hold integer token ids, got {prompt.dtype}")
    prompt = prompt.detach().to("cpu", torch.long).contiguous()
    text, codes = prompt[:, 0], prompt[:, 1:]
    if int(text.min()) < 0 or int(text.max()) >= text_vocab:
        raise InputError(f"prompt text ids must be in 0..{text_vocab - 1}")
    if int(codes.min()) < 0 or int(codes.max()) > pad_code:
        raise InputError(f"prompt audio codes must be in 0..{pad_code} (the pad code)")
    return prompt
