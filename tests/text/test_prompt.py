"""Prompt grids match the official processor's layout (golden grids made by the official code)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from cat_tts.text import PromptBuilder, join_transcript

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "generation"
PAD_CODE = 64  # the golden checkpoint's audio pad code
IDS = SimpleNamespace(
    pad=500,
    im_start=501,
    im_end=502,
    audio_start=503,
    audio_end=504,
    audio_user_slot=505,
    audio_assistant_gen_slot=506,
    audio_assistant_delay_slot=507,
    audio_pad_code=PAD_CODE,
)


@pytest.fixture(scope="module")
def golden():
    return load_file(str(ASSETS / "golden.safetensors"))


@pytest.fixture(scope="module")
def builder():
    tokenizer = AutoTokenizer.from_pretrained(str(ASSETS / "tokenizer"))
    return PromptBuilder(tokenizer, IDS, n_vq=32)


def test_voice_clone_grid_matches_official(builder, golden):
    grid = builder.voice_clone("Hello there.", golden["ref_codes"])
    assert torch.equal(grid, golden["grid_clone"])


def test_generation_grid_without_reference_matches_official(builder, golden):
    assert torch.equal(builder.voice_clone("Hi.", None), golden["grid_plain"])


def test_continuation_grid_matches_official(builder, golden):
    grid = builder.continuation(join_transcript("One two.", "Hello there."), golden["prefix_codes"])
    assert torch.equal(grid, golden["grid_continuation"])


def test_left_padded_batch_matches_official(builder, golden):
    grids = [builder.voice_clone("Hello there.", golden["ref_codes"]), builder.voice_clone("Hi.", None)]
    input_ids, mask = builder.pad_left(grids)
    assert torch.equal(input_ids, golden["batch_input_ids"])
    assert torch.equal(mask.long(), golden["batch_attention_mask"])


def test_voice_clone_layout(builder, golden):
    ref = golden["ref_codes"]  # [32, 6]
    grid = builder.voice_clone("Hello there.", ref)
    text = grid[:, 0]
    # ends with "<|im_start|>assistant\n" then one audio_start row carrying pads
    assert text[-1] == IDS.audio_start and (grid[-1, 1:] == PAD_CODE).all()
    # the reference block: audio_start, 6 user-slot rows with the codes in order, audio_end
    start = int((text == IDS.audio_start).nonzero()[0])
    assert (text[start + 1 : start + 7] == IDS.audio_user_slot).all()
    assert torch.equal(grid[start + 1 : start + 7, 1:], ref.t())
    assert text[start + 7] == IDS.audio_end
    # every non-slot row carries pad codes only
    slot_rows = text == IDS.audio_user_slot
    assert (grid[~slot_rows, 1:] == PAD_CODE).all()
    assert int(slot_rows.sum()) == ref.shape[1]


def test_continuation_ends_with_last_prefix_frame(builder, golden):
    prefix = golden["prefix_codes"]
    grid = builder.continuation("One two. Hello there.", prefix)
    assert grid[-1, 0] == IDS.audio_assistant_gen_slot
    assert torch.equal(grid[-4:, 1:], prefix.t())
    assert (grid[:, 0] == IDS.audio_end).sum() == 0  # no closed assistant audio block


def test_training_example_starts_with_the_generation_prompt(builder, golden):
    target = golden["prefix_codes"]
    grid, loss_start = builder.training_example("Hello there.", target, golden["ref_codes"])
    prompt = builder.voice_clone("Hello there.", golden["ref_codes"])
    assert loss_start == prompt.shape[0]
    assert torch.equal(grid[:loss_start], prompt)
    gen_rows = (grid[:, 0] == IDS.audio_assistant_gen_slot).nonzero().flatten()
    assert gen_rows.tolist() == list(range(loss_start, loss_start + target.shape[1]))
    assert grid[loss_start + target.shape[1], 0] == IDS.audio_end
    assert grid[-2, 0] == IDS.im_end  # ... <|audio_end|><|im_end|>\n


def test_wrong_reference_shape_is_rejected(builder):
    with pytest.raises(ValueError, match=r"\[N=32, L\]"):
        builder.voice_clone("Hi.", torch.zeros(8, 5, dtype=torch.long))


def test_join_transcript():
    assert join_transcript("One two.", "Hello.") == "One two. Hello."
    assert join_transcript("太阳系八大行星之一。", "你好") == "太阳系八大行星之一。你好"
