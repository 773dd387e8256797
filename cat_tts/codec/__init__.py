"""The CAT codec (MOSS-Audio-Tokenizer): encode 24 kHz speech to 32 RVQ layers, decode any prefix, stream."""

from cat_tts.codec.checkpoint import CheckpointError
from cat_tts.codec.codec import CatCodec, CodecOutput
from cat_tts.codec.config import CodecConfig, PatchConfig, QuantizerConfig, TransformerConfig
from cat_tts.codec.stream import CodecStreamState

__all__ = [
    "CatCodec",
    "CheckpointError",
    "CodecConfig",
    "CodecOutput",
    "CodecStreamState",
    "PatchConfig",
    "QuantizerConfig",
    "TransformerConfig",
]
