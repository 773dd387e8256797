"""The CatTTS pipeline: text + reference clip -> speech at depth K (one-shot, streaming, batch)."""

from cat_tts.inference.pipeline import (
    DEFAULT_CODEC,
    DEFAULT_MODEL,
    CatTTS,
    InputError,
    ModelLoadError,
    SpeechStream,
    SynthesisConfig,
    frame_budget,
)

__all__ = [
    "DEFAULT_CODEC",
    "DEFAULT_MODEL",
    "CatTTS",
    "InputError",
    "ModelLoadError",
    "SpeechStream",
    "SynthesisConfig",
    "frame_budget",
]
