"""In-memory tiny pipeline for the inference tests (no files written, no hub)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tts():
    from cat_tts.codec.config import CodecConfig
    from cat_tts.codec.tiny import random_codec
    from cat_tts.generation import EngineConfig
    from cat_tts.inference import CatTTS
    from cat_tts.model.tiny import build_tiny_model
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

    model = build_tiny_model(seed=0)
    codec = random_codec(CodecConfig.tiny(), seed=0).eval()
    # batch-invariant: the tests compare a segment generated beside others with the same segment alone, bit for bit
    return CatTTS(model, codec, build_tiny_tokenizer(), engine=EngineConfig(batch_invariant=True))
