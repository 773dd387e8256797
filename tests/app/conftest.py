"""Fixtures for the demo tests: reference clips written on the fly and a fake pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from app_fakes import FakePipeline, speechlike


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
def fake() -> FakePipeline:
    return FakePipeline()


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m cat_tts.tools.make_tiny` checkpoints (random weights), written once per session."""
    from cat_tts.tools.make_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_dirs: dict[str, Path]):
    """The real `CatTTS` pipeline on the tiny checkpoints, loaded the way app.py loads it."""

    from cat_tts.inference import CatTTS

    return CatTTS.from_pretrained(model=tiny_dirs["model"], codec=tiny_dirs["codec"], device="cpu")
