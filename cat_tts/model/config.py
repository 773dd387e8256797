"""Configuration of the CAT-TTS model and its special token ids.

`CatTTSConfig` reads and writes the official MOSS-TTS-Local-Transformer `config.json` as published
(model_type "moss_tts_delay": the local-transformer model reuses the Delay model's config class).
The temporal transformer's Qwen3 config lives under `language_config`; the depth transformer copies
its attention geometry (heads, KV heads, head dim, RMSNorm eps) and overrides width, FFN and depth
with the `local_*` fields.

Named presets: `CatTTSConfig.cat_tts_1_7b()` (the release/paper size), `small()` (benchmarks),
`tiny()` (tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

from cat_tts.model.temporal import is_language_config, make_language_config
from cat_tts.text.prompt import DEFAULT_LAYOUT, LAYOUTS

# The `architectures` entry of the released config.json (a name the official format readers look for).
OFFICIAL_ARCHITECTURE = "MossTTSDelayModel"


@dataclass(frozen=True)
class TokenIds:
    """Special token ids of the text channel, plus the structural pad code of the audio channels."""

    pad: int  # text pad `<|endoftext|>`, also the left-padding token of batches
    im_start: int  # ChatML `<|im_start|>`
    im_end: int  # ChatML `<|im_end|>`
    audio_start: int  # opens an audio block
    audio_end: int  # closes an audio block; end-of-speech during generation
    audio_user_slot: int  # text-channel token on rows carrying reference (user) audio
    audio_assistant_gen_slot: int  # text-channel token on rows carrying generated (assistant) audio
    audio_assistant_delay_slot: int  # delay-pattern slot of the sibling Delay model; unused here
    audio_pad_code: int  # audio-channel code on rows without audio (1024 in the release); never a target


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class CatTTSConfig(PretrainedConfig):
    """Configuration of `CatTTSModel` (reads the official MOSS-TTS-Local-Transformer config.json).

    Args:
        language_config: Qwen3 config (dict or Qwen3Config) of the temporal transformer; also gives the text
            vocabulary size (`vocab_size`) and the model width (`hidden_size`).
        initializer_range: std of the normal init of linear and embedding weights.
        n_vq: number of RVQ layers (audio channels); channels per frame = 1 + n_vq.
        pad_token_id: text pad id.
        im_start_token_id: `<|im_start|>` id.
        im_end_token_id: `<|im_end|>` id.
        audio_vocab_size: codes per RVQ layer; audio heads and embeddings have audio_vocab_size + 1 rows.
        audio_user_slot_token_id: text-channel id of reference-audio rows.
        audio_assistant_gen_slot_token_id: text-channel id of generated-audio rows.
        audio_assistant_delay_slot_token_id: delay slot id (unused by this model; kept for the format).
        audio_start_token_id: id opening an audio block.
        audio_end_token_id: id closing an audio block (end of speech).
        audio_pad_code: audio pad code (row `audio_pad_code` of every audio table).
        sampling_rate: audio sample rate in Hz (of the codec the model was trained with).
        additional_mlp_ffn_hidden_size: hidden width of the SwiGLU adapters between temporal and depth width.
        local_ffn_hidden_size: FFN width of the depth transformer.
        local_hidden_size: width of the depth transformer.
        local_num_layers: number of depth transformer blocks.
        prompt_layout: the prompt layout the model was trained with: "chat" (the released checkpoint's ChatML
            format) or "plain" (text, then audio: the paper's pre-training format); see `cat_tts.text.prompt`.
            Absent from the released config.json, hence "chat" by default; written by `save_pretrained`.
        **kwargs: other `PretrainedConfig` fields (architectures, dtype, ...), kept and written back.

    Raises:
        ValueError: naming the field, the value and the allowed range when a field is invalid.
    """

    model_type = "moss_tts_delay"

    def __init__(
        self,
        language_config: dict[str, Any] | Any | None = None,
        initializer_range: float = 0.02,  # std of normal init
        n_vq: int = 32,  # RVQ layers (audio channels)
        pad_token_id: int = 151643,  # text pad `<|endoftext|>`
        im_start_token_id: int = 151644,  # `<|im_start|>`
        im_end_token_id: int = 151645,  # `<|im_end|>`
        audio_vocab_size: int = 1024,  # codes per RVQ layer
        audio_user_slot_token_id: int = 151654,  # reference-audio row marker
        audio_assistant_gen_slot_token_id: int = 151656,  # generated-audio row marker
        audio_assistant_delay_slot_token_id: int = 151662,  # unused by this model
        audio_start_token_id: int = 151652,  # opens an audio block
        audio_end_token_id: int = 151653,  # closes an audio block / end of speech
        audio_pad_code: int = 1024,  # audio-channel pad code
        sampling_rate: int = 24000,  # Hz
        additional_mlp_ffn_hidden_size: int = 2048,  # adapter SwiGLU hidden width
        local_ffn_hidden_size: int = 8960,  # depth transformer FFN width
        local_hidden_size: int = 1536,  # depth transformer width
        local_num_layers: int = 4,  # depth transformer blocks
        prompt_layout: str = DEFAULT_LAYOUT,  # prompt layout the model was trained with: "chat" | "plain"
        **kwargs: Any,
    ) -> None:
        self.language_config = (
            make_language_config(language_config) if not is_language_config(language_config) else language_config
        )
        # Written by the official config class as derived copies; we always derive them from language_config.
        kwargs.pop("hidden_size", None)
        kwargs.pop("vocab_size", None)
        self.hidden_size = self.language_config.hidden_size
        self.vocab_size = self.language_config.vocab_size
        self.initializer_range = initializer_range
        self.n_vq = n_vq
        self.audio_vocab_size = audio_vocab_size
        self.audio_user_slot_token_id = audio_user_slot_token_id
        self.audio_assistant_gen_slot_token_id = audio_assistant_gen_slot_token_id
        self.audio_assistant_delay_slot_token_id = audio_assistant_delay_slot_token_id
        self.audio_start_token_id = audio_start_token_id
        self.audio_end_token_id = audio_end_token_id
        self.audio_pad_code = audio_pad_code
        self.sampling_rate = sampling_rate
        self.im_start_token_id = im_start_token_id
        self.im_end_token_id = im_end_token_id
        self.additional_mlp_ffn_hidden_size = additional_mlp_ffn_hidden_size
        self.local_ffn_hidden_size = local_ffn_hidden_size
        self.local_hidden_size = local_hidden_size
        self.local_num_layers = local_num_layers
        self.prompt_layout = prompt_layout
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.validate_fields()

    # ------------------------------------------------------------------ validation / derived values
    def validate_fields(self) -> None:
        """Check every field; raises ValueError naming the field, its value and the allowed range."""
        for name in (
            "n_vq",
            "audio_vocab_size",
            "additional_mlp_ffn_hidden_size",
            "local_ffn_hidden_size",
            "local_hidden_size",
            "local_num_layers",
            "sampling_rate",
        ):
            _check_positive(name, getattr(self, name))
        if not (0 <= self.audio_pad_code <= self.audio_vocab_size):
            raise ValueError(
                f"audio_pad_code must be in [0, audio_vocab_size={self.audio_vocab_size}], got {self.audio_pad_code}"
            )
        lc = self.language_config
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            _check_positive(f"language_config.{name}", getattr(lc, name))
        kv = lc.num_key_value_heads or lc.num_attention_heads
        if lc.num_attention_heads % kv != 0:
            raise ValueError(
                f"language_config.num_attention_heads ({lc.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({kv})"
            )
        for name, value in self.token_ids_dict().items():
            if name == "audio_pad_code":
                continue
            if value is None or not (0 <= value < self.vocab_size):
                raise ValueError(f"{name} must be a text token id in [0, {self.vocab_size}), got {value!r}")
        if self.prompt_layout not in LAYOUTS:
            raise ValueError(f"prompt_layout must be one of {' | '.join(LAYOUTS)}, got {self.prompt_layout!r}")
        if not (self.initializer_range > 0):
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range}")

    def token_ids_dict(self) -> dict[str, int]:
        """The special ids as a plain dict keyed by config field name."""
        return {
            "pad_token_id": self.pad_token_id,
            "im_start_token_id": self.im_start_token_id,
            "im_end_token_id": self.im_end_token_id,
            "audio_start_token_id": self.audio_start_token_id,
            "audio_end_token_id": self.audio_end_token_id,
            "audio_user_slot_token_id": self.audio_user_slot_token_id,
            "audio_assistant_gen_slot_token_id": self.audio_assistant_gen_slot_token_id,
            "audio_assistant_delay_slot_token_id": self.audio_assistant_delay_slot_token_id,
            "audio_pad_code": self.audio_pad_code,
        }

    @property
    def token_ids(self) -> TokenIds:
        """The special token ids as one `TokenIds` object."""
        return TokenIds(
            pad=self.pad_token_id,
            im_start=self.im_start_token_id,
            im_end=self.im_end_token_id,
            audio_start=self.audio_start_token_id,
            audio_end=self.audio_end_token_id,
            audio_user_slot=self.audio_user_slot_token_id,
            audio_assistant_gen_slot=self.audio_assistant_gen_slot_token_id,
            audio_assistant_delay_slot=self.audio_assistant_delay_slot_token_id,
            audio_pad_code=self.audio_pad_code,
        )

    @property
    def num_channels(self) -> int:
        """Channels per frame: the text channel plus n_vq audio channels."""
        return 1 + self.n_vq

    def channel_vocab_size(self, channel: int) -> int:
        """Output vocabulary of channel `channel`: the text vocabulary for 0, codes + pad for 1..n_vq."""
        if not (0 <= channel <= self.n_vq):
            raise ValueError(f"channel must be in [0, {self.n_vq}], got {channel}")
        return self.vocab_size if channel == 0 else self.audio_vocab_size + 1

    @property
    def depth_num_heads(self) -> int:
        """Attention heads of the depth transformer (inherited from the temporal config)."""
        return self.language_config.num_attention_heads

    @property
    def depth_num_kv_heads(self) -> int:
        """Key/value heads of the depth transformer (inherited from the temporal config)."""
        return self.language_config.num_key_value_heads or self.language_config.num_attention_heads

    @property
    def depth_head_dim(self) -> int:
        """Head dim of the depth transformer (inherited from the temporal config)."""
        lc = self.language_config
        return getattr(lc, "head_dim", None) or lc.hidden_size // lc.num_attention_heads

    @property
    def rms_norm_eps(self) -> float:
        """RMSNorm epsilon of the transformer blocks (inherited from the temporal config)."""
        return self.language_config.rms_norm_eps

    def to_dict(self) -> dict[str, Any]:
        """Serialise (official field names; `language_config` as a nested dict)."""
        output = super().to_dict()
        output["language_config"] = self.language_config.to_dict()
        output["hidden_size"] = self.hidden_size
        output["vocab_size"] = self.vocab_size
        return output

    # ------------------------------------------------------------------ presets
    @classmethod
    def cat_tts_1_7b(cls) -> CatTTSConfig:
        """The released MOSS-TTS-Local-Transformer / paper size (Qwen3-1.7B temporal, 4 x 1536 depth)."""
        language = {
            "vocab_size": 155648,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 40960,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
        }
        return cls(language_config=language, architectures=[OFFICIAL_ARCHITECTURE])

    @classmethod
    def small(cls) -> CatTTSConfig:
        """A small but non-trivial size for CPU benchmarks (release layout, scaled-down widths)."""
        language = {
            "vocab_size": 8192,
            "hidden_size": 512,
            "intermediate_size": 1536,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "head_dim": 64,
            "max_position_embeddings": 8192,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
        }
        return cls(
            language_config=language,
            additional_mlp_ffn_hidden_size=512,
            local_hidden_size=384,
            local_ffn_hidden_size=2240,
            local_num_layers=4,
            **tiny_token_ids(),
            architectures=[OFFICIAL_ARCHITECTURE],
        )

    @classmethod
    def tiny(cls) -> CatTTSConfig:
        """A tiny random-init size for tests: text vocab 512, 32 layers x 1024 codes, tiny widths."""
        language = {
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
        }
        return cls(
            language_config=language,
            additional_mlp_ffn_hidden_size=64,
            local_hidden_size=48,
            local_ffn_hidden_size=96,
            local_num_layers=2,
            **tiny_token_ids(),
            architectures=[OFFICIAL_ARCHITECTURE],
        )

    @classmethod
    def from_preset(cls, name: str) -> CatTTSConfig:
        """Build a named preset: "cat_tts_1.7b" (alias "cat_tts_1_7b"), "small" or "tiny"."""
        presets = {
            "cat_tts_1.7b": cls.cat_tts_1_7b,
            "cat_tts_1_7b": cls.cat_tts_1_7b,
            "small": cls.small,
            "tiny": cls.tiny,
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]()


def tiny_token_ids() -> dict[str, int]:
    """Special ids of the tiny tokenizer (shared by the tiny and small presets)."""
    return {
        "pad_token_id": 500,
        "im_start_token_id": 501,
        "im_end_token_id": 502,
        "audio_start_token_id": 503,
        "audio_end_token_id": 504,
        "audio_user_slot_token_id": 505,
        "audio_assistant_gen_slot_token_id": 506,
        "audio_assistant_delay_slot_token_id": 507,
        "audio_pad_code": 1024,
    }
