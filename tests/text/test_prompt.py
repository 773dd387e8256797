"""Prompt grids: the chat layout matches the official processor (golden grids made by the official code); the plain
layout's prompts are the starts of its training grids; `generation_prompt` picks modes and refuses what a layout
cannot do."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from cat_tts.errors import InputError
from cat_tts.text.prompt import Prompt, PromptBuilder, join_transcript

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
    with pytest.raises(ValueError, match=r"\[N=32, T\]"):
        builder.voice_clone("Hi.", torch.zeros(8, 5, dtype=torch.long))


def test_join_transcript():
    assert join_transcript("One two.", "Hello.") == "One two. Hello."
    assert join_transcript("太阳系八大行星之一。", "你好") == "太阳系八大行星之一。你好"


# ------------------------------------------------------------------ generation_prompt, both layouts


@pytest.fixture(scope="module")
def plain(builder):
    return PromptBuilder(builder.tokenizer, IDS, n_vq=32, layout="plain")


def test_chat_generation_prompt_picks_the_mode_from_the_transcript(builder, golden):
    ref = golden["ref_codes"]
    clone = builder.generation_prompt("Hello there.", ref, None)
    assert clone.mode == "clone" and clone.prefix_codes is None
    assert torch.equal(clone.grid, golden["grid_clone"])
    cont = builder.generation_prompt("Hello there.", golden["prefix_codes"], "One two.")
    assert cont.mode == "continuation" and torch.equal(cont.prefix_codes, golden["prefix_codes"])
    assert torch.equal(cont.grid, golden["grid_continuation"])
    forced = builder.generation_prompt("Hello there.", ref, "One two.", mode="clone")
    assert forced.mode == "clone" and torch.equal(forced.grid, golden["grid_clone"])
    assert torch.equal(builder.generation_prompt("Hi.", None, None).grid, golden["grid_plain"])
    with_fields = builder.generation_prompt("Hi.", None, None, language="en")
    assert "- Language:\nen\n" in builder.tokenizer.decode(with_fields.grid[:, 0].tolist())


def test_plain_generation_prompt_is_the_start_of_the_training_grid(plain):
    ref = torch.randint(0, 64, (32, 5))
    target = torch.randint(0, 64, (32, 3))
    prompt = plain.generation_prompt("hello there", ref, "one two")
    assert isinstance(prompt, Prompt) and prompt.mode == "continuation" and torch.equal(prompt.prefix_codes, ref)
    # the utterance "one two hello there" (reference frames, then the target frames) as the model was trained
    grid, loss_start = plain.training_example("one two hello there", torch.cat([ref, target], dim=1))
    assert torch.equal(prompt.grid, grid[: loss_start + ref.shape[1]])
    # obvious layout: text rows, audio_start, then one generation-slot row per reference frame
    text_ids = plain.tokenizer.encode("one two hello there", add_special_tokens=False)
    L = len(text_ids)
    assert prompt.grid[:L, 0].tolist() == text_ids and (prompt.grid[: L + 1, 1:] == PAD_CODE).all()
    assert prompt.grid[L, 0] == IDS.audio_start
    assert (prompt.grid[L + 1 :, 0] == IDS.audio_assistant_gen_slot).all()
    assert torch.equal(prompt.grid[L + 1 :, 1:], ref.t())
    # without a reference: the text and audio_start, exactly the training prompt
    bare = plain.generation_prompt("hello there", None, None)
    grid, loss_start = plain.training_example("hello there", target)
    assert bare.prefix_codes is None and torch.equal(bare.grid, grid[:loss_start])
    assert grid[-1, 0] == IDS.audio_end and loss_start == bare.grid.shape[0]


def test_chat_training_prompt_is_the_clone_generation_prompt(builder, golden):
    grid, loss_start = builder.training_example("Hello there.", golden["prefix_codes"], golden["ref_codes"])
    assert torch.equal(grid[:loss_start], builder.generation_prompt("Hello there.", golden["ref_codes"], None).grid)


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        (("hi", "REF", None), {}, "needs the clip's transcript"),
        (("hi", "REF", "one"), {"mode": "clone"}, "no clone mode"),
        (("hi", "REF", "one"), {"language": "en"}, "no user-message fields"),
        (("hi", None, "one"), {}, "without its reference audio"),
        (("hi", "REF", "one"), {"mode": "echo"}, "mode must be one of clone | continuation"),
    ],
)
def test_plain_layout_refuses_what_it_cannot_do(plain, args, kwargs, message):
    args = tuple(torch.zeros(32, 4, dtype=torch.long) if a == "REF" else a for a in args)
    with pytest.raises(InputError, match=message):
        plain.generation_prompt(*args, **kwargs)


def test_chat_continuation_needs_a_transcript(builder, golden):
    with pytest.raises(InputError, match="continuation mode needs a reference clip and its transcript"):
        builder.generation_prompt("Hi.", golden["ref_codes"], None, mode="continuation")
    with pytest.raises(InputError, match="unknown user-message fields"):
        builder.generation_prompt("Hi.", None, None, speed="fast")


def test_for_model_takes_the_layout_from_the_config(builder):
    from cat_tts.model import CatTTSConfig

    cfg = CatTTSConfig.tiny()
    assert PromptBuilder.for_model(builder.tokenizer, cfg).layout == "chat"  # the released layout by default
    cfg.prompt_layout = "plain"
    made = PromptBuilder.for_model(builder.tokenizer, cfg)
    assert made.layout == "plain" and made.n_vq == cfg.n_vq and made.ids == cfg.token_ids
    with pytest.raises(ValueError, match="chat-layout prompts"):
        made.voice_clone("Hi.", None)
    with pytest.raises(ValueError, match="layout = 'echo' is invalid; allowed: chat \\| plain"):
        PromptBuilder(builder.tokenizer, IDS, 32, layout="echo")
