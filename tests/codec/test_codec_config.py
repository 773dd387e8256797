"""Codec config: read from the checkpoint's config.json, validated, serialised back in the official format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cat_tts.codec import CatCodec, CodecConfig, TransformerConfig

ASSETS = Path(__file__).parent.parent / "assets" / "codec"


def test_released_config_json_gives_the_released_preset() -> None:
    config = CodecConfig.from_json(ASSETS / "released_config.json")
    assert config == CodecConfig.released()
    assert config.frame_rate == 12.5 and config.num_quantizers == 32 and config.codebook_size == 1024
    enc, dec = config.contexts()
    assert enc == {1: 1000, 3: 500, 5: 250, 7: 125}
    assert dec == {0: 125, 2: 250, 4: 500, 6: 1000}


def test_released_parameter_count() -> None:
    with torch.device("meta"):
        codec = CatCodec(CodecConfig.released())
    assert sum(p.numel() for p in codec.parameters()) == 1_774_566_400


def test_to_dict_round_trip() -> None:
    for config in (CodecConfig.released(), CodecConfig.tiny(), CodecConfig.tiny(context_duration=1.28)):
        assert CodecConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_keys_are_rejected() -> None:
    d = CodecConfig.tiny().to_dict()
    d["encoder_kwargs"][1]["dropout"] = 0.1
    with pytest.raises(ValueError, match="dropout"):
        CodecConfig.from_dict(d)
    d = CodecConfig.tiny().to_dict()
    d["mystery"] = 1
    with pytest.raises(ValueError, match="mystery"):
        CodecConfig.from_dict(d)


def test_missing_stage_lists_are_rejected() -> None:
    d = CodecConfig.tiny().to_dict()
    del d["decoder_kwargs"]
    with pytest.raises(ValueError, match="decoder_kwargs"):
        CodecConfig.from_dict(d)


def test_validation_names_field_and_value() -> None:
    with pytest.raises(ValueError, match="gating"):
        TransformerConfig(8, 8, 8, 2, 1, 16, gating="swiglu")
    with pytest.raises(ValueError, match="num_heads"):
        TransformerConfig(8, 8, 12, 5, 1, 16)
    d = CodecConfig.tiny().to_dict()
    d["downsample_rate"] = 960
    with pytest.raises(ValueError, match="downsample_rate=960"):
        CodecConfig.from_dict(d)
    d = CodecConfig.tiny().to_dict()
    d["decoder_kwargs"][2]["input_dimension"] = 25
    with pytest.raises(ValueError, match="input_dimension=25"):
        CodecConfig.from_dict(d)


def test_released_official_key_names_and_shapes() -> None:
    from cat_tts.codec.checkpoint import to_official_name

    with torch.device("meta"):
        codec = CatCodec(CodecConfig.released())
    shapes = {to_official_name(k): tuple(v.shape) for k, v in codec.state_dict().items()}
    assert len(shapes) == 1600  # 136 blocks x 10 tensors + 10 stage projections + 6 + 32 x 7 quantizer tensors
    expected = {
        "encoder.1.input_proj.weight": (768, 240),
        "encoder.1.output_proj.weight": (384, 768),
        "encoder.7.output_proj.weight": (768, 1280),
        "decoder.0.input_proj.weight": (1280, 768),
        "decoder.6.output_proj.weight": (240, 768),
        "encoder.7.transformer.layers.31.self_attn.in_projs.0.weight": (3840, 1280),
        "decoder.2.transformer.layers.11.self_attn.out_projs.0.weight": (768, 768),
        "decoder.0.transformer.layers.0.linear1.weight": (5120, 1280),
        "encoder.3.transformer.layers.5.layer_scale_2.scale": (768,),
        "quantizer.input_proj.parametrizations.weight.original0": (512, 1, 1),
        "quantizer.input_proj.parametrizations.weight.original1": (512, 768, 1),
        "quantizer.output_proj.bias": (768,),
        "quantizer.quantizers.31.in_proj.parametrizations.weight.original1": (8, 512, 1),
        "quantizer.quantizers.0.out_proj.parametrizations.weight.original0": (512, 1, 1),
        "quantizer.quantizers.7.codebook.weight": (1024, 8),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    for absent in ("encoder.3.input_proj.weight", "encoder.7.input_proj.weight", "decoder.0.output_proj.weight"):
        assert absent not in shapes
