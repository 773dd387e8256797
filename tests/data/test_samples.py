"""Training samples in both prompt layouts (plain = the paper, chat = official): grids and shifted labels."""

from __future__ import annotations

import torch

from cat_tts.data.dataset import Utterance
from cat_tts.data.samples import SampleBuilder, shift_labels
from cat_tts.model import IGNORE_INDEX as IGNORE
from cat_tts.text.prompt import PromptBuilder

N = 32


def test_shift_labels_is_next_row_with_prompt_and_pad_codes_ignored():
    grid = torch.arange(5 * 3).reshape(5, 3)
    grid[1, 1] = 99  # an audio pad code
    grid[3, 2] = 99
    inputs, labels = shift_labels(grid, loss_start=2, audio_pad_code=99)
    assert torch.equal(inputs, grid[:-1])
    # obvious loop: label t = grid t+1, ignored when t+1 < loss_start or an audio pad code
    for t in range(4):
        for c in range(3):
            target = int(grid[t + 1, c])
            expect = IGNORE if (t + 1 < 2 or (c > 0 and target == 99)) else target
            assert int(labels[t, c]) == expect


def test_plain_grid_layout(tokenizer, token_ids):
    b = SampleBuilder(tokenizer, token_ids, N, "plain")
    codes = torch.randint(0, 1024, (N, 5))
    text_ids = b.text_ids("hello world")
    grid, loss_start = b.prompt_builder.training_example("hello world", codes)
    L = len(text_ids)
    assert grid.shape == (L + 5 + 2, 1 + N)
    assert grid[:L, 0].tolist() == text_ids
    assert grid[L, 0] == token_ids.audio_start
    assert (grid[L + 1 : L + 6, 0] == token_ids.audio_assistant_gen_slot).all()
    assert torch.equal(grid[L + 1 : L + 6, 1:], codes.t())
    assert grid[-1, 0] == token_ids.audio_end
    # text, audio_start and audio_end rows carry the pad code in every audio channel
    pad_rows = torch.cat([grid[: L + 1, 1:], grid[-1:, 1:]])
    assert (pad_rows == token_ids.audio_pad_code).all()
    assert loss_start == L + 1  # the first frame is the first target
    # the generation prompt of a model trained this way is exactly the rows before the first target
    prompt = PromptBuilder(tokenizer, token_ids, N, layout="plain").generation_prompt("hello world", None, None)
    assert torch.equal(prompt.grid, grid[:loss_start]) and prompt.prefix_codes is None


def test_plain_labels_supervise_frames_and_stop_token_only(tokenizer, token_ids):
    b = SampleBuilder(tokenizer, token_ids, N)  # plain is the default layout
    codes = torch.randint(0, 1024, (N, 4))
    s = b.build(Utterance(id="x", text="one two", codes=codes))
    L = len(b.text_ids("one two"))
    kept = s.labels != IGNORE
    assert s.input_ids.shape == s.labels.shape == (L + 4 + 1, 1 + N)
    assert not kept[:L].any()  # text rows and audio_start predict nothing before the first frame
    assert torch.equal(s.labels[L : L + 4, 1:], codes.t())  # rows L..L+3 predict the 4 frames
    assert (s.labels[L : L + 4, 0] == token_ids.audio_assistant_gen_slot).all()
    assert s.labels[L + 4, 0] == token_ids.audio_end and not kept[L + 4, 1:].any()  # stop token: text only
    assert int(kept.sum()) == 4 * (1 + N) + 1
    assert b.estimate_rows(L, 4) == s.input_ids.shape[0]


def test_chat_layout_uses_the_prompt_builder_and_supervises_the_assistant_audio(tokenizer, token_ids):
    b = SampleBuilder(tokenizer, token_ids, N, "chat")
    codes = torch.randint(0, 1024, (N, 6))
    ref = torch.randint(0, 1024, (N, 3))
    s = b.build(Utterance(id="x", text="she sells sea shells", codes=codes), reference=ref)
    grid, loss_start = b.prompt_builder.training_example("she sells sea shells", codes, ref)
    assert torch.equal(s.input_ids, grid[:-1])
    kept_rows = (s.labels != IGNORE).any(-1).nonzero().flatten()
    assert int(kept_rows[0]) == loss_start - 1  # first supervised prediction: the first target frame
    # the reference codes appear in the inputs (user slots) but never as targets
    user_rows = s.input_ids[:, 0] == token_ids.audio_user_slot
    assert torch.equal(s.input_ids[user_rows][:, 1:], ref.t())
    gen_targets = s.labels[:, 0] == token_ids.audio_assistant_gen_slot
    assert torch.equal(s.labels[gen_targets][:, 1:], codes.t())
    # after the last frame only the text channel is supervised (audio_end, <|im_end|>, newline)
    last = int(gen_targets.nonzero().max())
    assert (s.labels[last + 1 :, 1:] == IGNORE).all() and (s.labels[last + 1 :, 0] != IGNORE).all()
    text_tokens = len(b.text_ids("she sells sea shells"))
    est = b.estimate_rows(text_tokens, 6, 3)
    assert s.input_ids.shape[0] <= est <= s.input_ids.shape[0] + 4


def test_the_old_format_name_continuation_means_the_plain_layout(tokenizer, token_ids, caplog):
    b = SampleBuilder(tokenizer, token_ids, N, "continuation")
    assert b.layout == "plain" and "old name" in caplog.text
