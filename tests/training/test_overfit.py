"""Training and generation agree: a tiny model trained on two utterances reproduces them with greedy decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from memory_dataset import make_utterances, write_prepared

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 4


@pytest.mark.slow  # ~15-30 s on 2 CPU cores
def test_overfit_two_utterances_then_greedy_generation_reproduces_them(tmp_path):
    from transformers import AutoTokenizer

    from cat_tts.model import CatTTSModel
    from cat_tts.text.prompt import PromptBuilder
    from cat_tts.training.config import TrainConfig
    from cat_tts.training.loop import train

    utts = make_utterances(2, seed=5, min_frames=FRAMES, max_frames=FRAMES)
    write_prepared(tmp_path / "data", utts)
    cfg = TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml").with_overrides(
        [
            f"data.path={tmp_path / 'data'}",
            f"run.out={tmp_path / 'run'}",
            "run.max_steps=100",
            "run.save_every=1000",
            "run.log_every=10",
            "run.tensorboard=false",
            "psd.p=0",  # every layer is trained on every step: the fastest way to overfit
            "optim.lr=1e-2",
            "optim.warmup_steps=10",
            "optim.min_lr_ratio=0.05",
            "data.tokens_per_batch=256",  # both utterances in every batch
        ]
    )
    result = train(cfg, progress=False)
    assert result.losses[100] < 0.05

    model = CatTTSModel.from_pretrained(result.model_dir).eval()  # through the exported checkpoint
    assert model.config.prompt_layout == "plain"  # tiny.yaml's layout, recorded in the export
    builder = PromptBuilder.for_model(AutoTokenizer.from_pretrained(result.model_dir), model.config)
    for utt in utts:
        prompt = builder.generation_prompt(utt.text, None, None).grid[None]  # [1, L+1, 33]
        out = model.generate(prompt, depth=32, max_new_frames=FRAMES + 4, do_sample=False, repetition_penalty=1.0)
        assert out.lengths.tolist() == [FRAMES] and out.finished.tolist() == [True]  # stops after the last frame
        assert torch.equal(out.frames[0, :FRAMES, 1:].t(), utt.codes)
