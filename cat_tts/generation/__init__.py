"""Generation: the settings (`GenerationConfig`, `EngineConfig`), tensor sampling, the continuous-batching engine,
streaming decode.

Every caller runs the engine: `CatTTSModel.generate` (a batch of prompt grids), `cat_tts.inference.CatTTS`
(text + voice -> audio, one-shot, streaming, batch), infer.py, the demo, the evaluator and the server.
"""

from cat_tts.generation.batch import FrameStep, GenerationOutput, generate
from cat_tts.generation.config import EngineConfig, GenerationConfig
from cat_tts.generation.engine import Engine, EngineStats
from cat_tts.generation.errors import EngineClosed, EngineError, QueueFull
from cat_tts.generation.request import Request, RequestState
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
