"""Generation: the settings (`GenerationConfig`), tensor sampling, the continuous-batching engine, streaming decode.

Every caller runs the engine: `CatTTSModel.generate` (a batch of prompt grids), `cat_tts.inference.CatTTS`
(text + voice -> audio, one-shot, streaming, batch), infer.py, the demo, the evaluator and the server.
"""

from cat_tts.generation.config import GenerationConfig
from cat_tts.generation.engine import (
    Engine,
    EngineClosed,
    EngineConfig,
    EngineError,
    EngineStats,
    FrameStep,
    GenerationOutput,
    QueueFull,
    Request,
    RequestState,
    generate,
)
from cat_tts.generation.streaming import stream_audio

__all__ = [
    "Engine",
    "EngineClosed",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "FrameStep",
    "GenerationConfig",
    "GenerationOutput",
    "QueueFull",
    "Request",
    "RequestState",
    "generate",
    "stream_audio",
]
