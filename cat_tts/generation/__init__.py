"""Generation: pure sampling functions, the KV-cached frame loop, streaming."""

from cat_tts.generation.loop import (
    FrameStep,
    GenerationConfig,
    GenerationOutput,
    default_max_new_frames,
    generate,
    iter_frames,
)
from cat_tts.generation.mixin import CatTTSGenerationMixin, build_generation_config
from cat_tts.generation.sampling import AUDIO_DEFAULTS, CONTROL_DEFAULTS, SamplingParams
from cat_tts.generation.streaming import stream_audio

__all__ = [
    "AUDIO_DEFAULTS",
    "CONTROL_DEFAULTS",
    "CatTTSGenerationMixin",
    "FrameStep",
    "GenerationConfig",
    "GenerationOutput",
    "SamplingParams",
    "build_generation_config",
    "default_max_new_frames",
    "generate",
    "iter_frames",
    "stream_audio",
]
