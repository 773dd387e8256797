"""CAT-TTS model core: config and token ids, temporal Qwen3 + depth transformer, PSD, checkpoint I/O."""

from cat_tts.model.checkpoint import CheckpointError
from cat_tts.model.config import CatTTSConfig, TokenIds
from cat_tts.model.depth import DepthKVCache, DepthTransformer
from cat_tts.model.loss import IGNORE_INDEX, TTSOutput
from cat_tts.model.psd import sample_depths
from cat_tts.model.tts import CatTTSModel

__all__ = [
    "IGNORE_INDEX",
    "CatTTSConfig",
    "CatTTSModel",
    "CheckpointError",
    "DepthKVCache",
    "DepthTransformer",
    "TTSOutput",
    "TokenIds",
    "sample_depths",
]
