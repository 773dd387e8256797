"""CatTTSConfig: presets, token ids, validation, official config.json round trip."""

from __future__ import annotations

import json

import pytest

from cat_tts.model import CatTTSConfig, TokenIds


def test_release_preset_matches_the_checkpoint_facts():
    cfg = CatTTSConfig.cat_tts_1_7b()
    lc = cfg.language_config
    assert (lc.hidden_size, lc.num_hidden_layers, lc.num_attention_heads, lc.num_key_value_heads) == (2048, 28, 16, 8)
    assert (lc.head_dim, lc.intermediate_size, lc.vocab_size) == (128, 6144, 155648)
    assert (cfg.local_hidden_size, cfg.local_ffn_hidden_size, cfg.local_num_layers) == (1536, 8960, 4)
    assert cfg.additional_mlp_ffn_hidden_size == 2048 and cfg.n_vq == 32 and cfg.audio_vocab_size == 1024
    assert cfg.token_ids == TokenIds(151643, 151644, 151645, 151652, 151653, 151654, 151656, 151662, 1024)
    assert cfg.channel_vocab_size(0) == 155648 and cfg.channel_vocab_size(32) == 1025


def test_tiny_preset_token_ids():
    cfg = CatTTSConfig.tiny()
    assert cfg.vocab_size == 512 and cfg.n_vq == 32 and cfg.audio_vocab_size == 1024
    assert cfg.token_ids == TokenIds(500, 501, 502, 503, 504, 505, 506, 507, 1024)
    assert CatTTSConfig.from_preset("cat_tts_1.7b").hidden_size == 2048


def test_reads_an_official_style_config_json(tmp_path):
    official = {
        "architectures": ["MossTTSDelayModel"],
        "model_type": "moss_tts_delay",
        "hidden_size": 64,
        "vocab_size": 512,
        "n_vq": 32,
        "audio_vocab_size": 1024,
        "audio_pad_code": 1024,
        "pad_token_id": 500,
        "im_start_token_id": 501,
        "im_end_token_id": 502,
        "audio_start_token_id": 503,
        "audio_end_token_id": 504,
        "audio_user_slot_token_id": 505,
        "audio_assistant_gen_slot_token_id": 506,
        "audio_assistant_delay_slot_token_id": 507,
        "local_hidden_size": 48,
        "local_ffn_hidden_size": 96,
        "local_num_layers": 2,
        "additional_mlp_ffn_hidden_size": 64,
        "sampling_rate": 24000,
        "initializer_range": 0.02,
        "dtype": "bfloat16",
        "language_config": {
            "model_type": "qwen3",
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
        },
    }
    (tmp_path / "config.json").write_text(json.dumps(official))
    from cat_tts.model.checkpoint import read_config

    cfg = read_config(tmp_path)
    assert cfg.prompt_layout == "chat"  # the released config.json has no prompt_layout: the released layout
    assert cfg.token_ids.audio_end == 504 and cfg.depth_num_kv_heads == 2 and cfg.depth_head_dim == 16
    assert cfg.language_config.rope_parameters["rope_theta"] == 1e6
    back = cfg.to_dict()
    for key in ("n_vq", "local_hidden_size", "audio_pad_code", "pad_token_id", "hidden_size", "vocab_size"):
        assert back[key] == official[key], key
    assert back["model_type"] == "moss_tts_delay"
    assert CatTTSConfig(**{k: v for k, v in back.items() if k != "model_type"}).to_dict() == back


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("n_vq", 0, "n_vq must be a positive integer"),
        ("local_num_layers", -1, "local_num_layers"),
        ("audio_pad_code", 2000, "audio_pad_code must be in"),
        ("audio_end_token_id", 600, "audio_end_token_id must be a text token id"),
        ("prompt_layout", "continuation", r"prompt_layout must be one of chat \| plain, got 'continuation'"),
    ],
)
def test_invalid_fields_are_named(field, value, match):
    fields = CatTTSConfig.tiny().to_dict()
    fields.pop("model_type")
    fields[field] = value
    with pytest.raises(ValueError, match=match):
        CatTTSConfig(**fields)


def test_pretrained_config_save_and_load(tmp_path):
    cfg = CatTTSConfig.tiny()
    cfg.save_pretrained(tmp_path)
    loaded = CatTTSConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.token_ids == cfg.token_ids


def test_prompt_layout_is_written_and_read_back(tmp_path):
    from cat_tts.model import CatTTSModel
    from cat_tts.model.checkpoint import read_config

    cfg = CatTTSConfig.tiny()
    cfg.prompt_layout = "plain"
    CatTTSModel(cfg).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["prompt_layout"] == "plain"
    assert read_config(tmp_path).prompt_layout == "plain"
    assert CatTTSModel.from_pretrained(tmp_path).config.prompt_layout == "plain"
