"""Fixtures for the demo tests: reference clips written on the fly, a fake service, and real tiny services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from demo_fakes import FakeService, speechlike, tiny_model_config


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reference files, good and bad, by name."""
    root = tmp_path_factory.mktemp("clips")
    paths = {name: root / f"{name}.wav" for name in ("good", "stereo16k", "silent", "short", "long")}
    sf.write(paths["good"], speechlike(3.0), 24000)
    sf.write(paths["stereo16k"], speechlike(2.0, 16000, channels=2), 16000)
    sf.write(paths["silent"], np.zeros(24000 * 2, dtype=np.float32), 24000)
    sf.write(paths["short"], speechlike(0.3), 24000)
    sf.write(paths["long"], speechlike(31.0, 8000), 8000)
    paths["garbage"] = root / "garbage.wav"
    paths["garbage"].write_bytes(b"RIFF this is not a wave file at all" * 10)
    paths["missing"] = root / "missing.wav"
    return paths


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m cat_tts.tools.make_tiny` checkpoints (random weights), written once per session."""
    from cat_tts.tools.make_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_service(tiny_dirs: dict[str, Path]) -> Iterator:
    """The real `CatTTS` service on the tiny checkpoints, loaded and started the way the demo's command does it (its
    engine runs in a background thread, so concurrent handlers share its batch)."""
    from cat_tts.demo.cli import load_service
    from cat_tts.generation import EngineConfig

    service = load_service(tiny_dirs["model"], tiny_dirs["codec"], "cpu", "auto", EngineConfig(max_slots=4))
    service.start()
    yield service
    service.close()


@pytest.fixture(scope="session")
def make_tiny_tts() -> Callable:
    """Builds an in-memory `CatTTS` over a random tiny model with `n_vq` layers (not started)."""

    def build(n_vq: int, max_slots: int = 4):
        from cat_tts.codec.config import CodecConfig
        from cat_tts.codec.tiny import random_codec
        from cat_tts.generation import EngineConfig
        from cat_tts.inference import CatTTS
        from cat_tts.model.tiny import build_tiny_model
        from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

        model = build_tiny_model(seed=0, config=tiny_model_config(n_vq))
        codec = random_codec(CodecConfig.tiny(), seed=0).eval()
        return CatTTS(model, codec, build_tiny_tokenizer(), engine=EngineConfig(max_slots=max_slots))

    return build
