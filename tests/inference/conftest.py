"""In-memory tiny pipeline for the inference tests (no files written, no hub)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is much faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tts():
    from cat_tts.codec.config import CodecConfig
    from cat_tts.codec.tiny import random_codec
    from cat_tts.inference import CatTTS
    from cat_tts.model.tiny import build_tiny_model
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

    model = build_tiny_model(seed=0)
    codec = random_codec(CodecConfig.tiny(), seed=0).eval()
    return CatTTS(model, codec, build_tiny_tokenizer())
