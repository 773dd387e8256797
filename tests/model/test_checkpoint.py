"""Weights I/O: round trip, official key names, strict errors, sharding, from_qwen3, tiny writer."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cat_tts.model import CatTTSConfig, CatTTSModel, CheckpointError
from cat_tts.model.checkpoint import internal_to_official, official_to_internal
from cat_tts.model.tiny import build_tiny_model, write_tiny_model

from .conftest import make_batch


def _all_keys(directory):
    keys = set()
    for f in directory.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            keys |= set(h.keys())
    return keys


def test_save_then_load_is_bit_identical(tmp_path, tiny_config):
    model = build_tiny_model(seed=1)
    model.save_pretrained(tmp_path)
    loaded = CatTTSModel.from_pretrained(tmp_path)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert loaded.temporal.embed_tokens is loaded.embeddings[0]
    ids, mask, labels = make_batch(tiny_config, seed=1)
    with torch.no_grad():
        assert torch.equal(model(ids, mask, labels).loss, loaded(ids, mask, labels).loss)


def test_saved_directory_uses_official_names_and_fields(tmp_path):
    model = build_tiny_model(seed=2)
    write_tiny_model(tmp_path, seed=2)
    keys = _all_keys(tmp_path)
    n = model.config.n_vq
    expected = {
        "model.embedding_list.0.weight",
        f"model.embedding_list.{n}.weight",
        "model.language_model.embed_tokens.weight",
        "model.language_model.layers.0.self_attn.q_norm.weight",
        "model.language_model.norm.weight",
        "local_transformer.layers.0.self_attn.k_proj.weight",
        "local_transformer.layers.1.mlp.down_proj.weight",
        "local_transformer.norm.weight",
        "speech_embedding_to_local_mlp.gate_proj.weight",
        f"local_to_speech_embedding_mlps.{n}.up_proj.weight",
        f"layer_norm_before_lm_heads.{n}.weight",
        "lm_heads.0.weight",
        f"lm_heads.{n}.weight",
    }
    assert expected <= keys
    assert not any(k.startswith(("temporal.", "depth.", "heads.", "embeddings.")) for k in keys)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "moss_tts_delay" and config["architectures"] == ["MossTTSDelayModel"]
    assert config["language_config"]["hidden_size"] == 64 and config["local_num_layers"] == 2
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert tensors["lm_heads.1.weight"].shape == (1025, 64)
    assert torch.equal(tensors["model.embedding_list.0.weight"], tensors["model.language_model.embed_tokens.weight"])


def test_key_mapping_round_trips():
    model = build_tiny_model()
    for name, _ in model.named_parameters():
        if name == "temporal.embed_tokens.weight":
            continue
        assert official_to_internal(internal_to_official(name)) == name
    assert official_to_internal("something.else") is None


def test_missing_and_unexpected_keys_are_named(tmp_path):
    write_tiny_model(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["lm_heads.3.weight"]
    del tensors["local_transformer.layers.1.self_attn.q_norm.weight"]
    tensors["lm_heads.99.weight"] = torch.zeros(2, 2)
    tensors["model.language_model.rotary_emb.inv_freq"] = torch.zeros(8)  # a buffer: skipped silently
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        CatTTSModel.from_pretrained(tmp_path)
    message = str(err.value)
    assert "missing weights (2)" in message and "lm_heads.3.weight" in message
    assert "local_transformer.layers.1.self_attn.q_norm.weight" in message
    assert "unexpected weights (1): lm_heads.99.weight" in message
    assert "inv_freq" not in message


def test_shape_mismatch_is_named(tmp_path):
    write_tiny_model(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["lm_heads.2.weight"] = torch.zeros(1024, 64)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"lm_heads.2.weight: checkpoint \(1024, 64\) vs model \(1025, 64\)"):
        CatTTSModel.from_pretrained(tmp_path)


def test_unused_qwen_embedding_may_be_absent(tmp_path):
    model = build_tiny_model(seed=4)
    model.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    tensors["model.language_model.embed_tokens.weight"] = torch.randn(512, 64)  # different values: ignored
    save_file(tensors, str(tmp_path / "model.safetensors"))
    a = CatTTSModel.from_pretrained(tmp_path)
    del tensors["model.language_model.embed_tokens.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    b = CatTTSModel.from_pretrained(tmp_path)
    assert torch.equal(a.embeddings[0].weight, model.embeddings[0].weight)
    assert torch.equal(b.embeddings[0].weight, model.embeddings[0].weight)


def test_sharded_save_and_load(tmp_path):
    model = build_tiny_model(seed=5)
    model.save_pretrained(tmp_path, max_shard_size=2 * 1024**2)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (tmp_path / "model.safetensors").exists()
    loaded = CatTTSModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.heads[7].weight, model.heads[7].weight.to(torch.bfloat16))


def test_loading_errors_for_bad_directories(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        CatTTSModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(CheckpointError, match="from_qwen3"):
        CatTTSModel.from_pretrained(tmp_path)
    write_tiny_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no safetensors"):
        CatTTSModel.from_pretrained(tmp_path / "m")


def test_from_qwen3_takes_temporal_and_text_embedding(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = CatTTSConfig.tiny()
    fields = cfg.language_config.to_dict()
    fields["vocab_size"] = 480  # a smaller LM vocabulary than the TTS text vocabulary
    torch.manual_seed(0)
    qwen = Qwen3ForCausalLM(Qwen3Config(**fields))
    qwen.save_pretrained(tmp_path)
    model = CatTTSModel.from_qwen3(tmp_path, cfg)
    q = qwen.state_dict()
    assert torch.equal(model.temporal.layers[1].mlp.up_proj.weight, q["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(model.temporal.norm.weight, q["model.norm.weight"])
    assert torch.equal(model.embeddings[0].weight[:480], q["model.embed_tokens.weight"])
    # fresh parts: not copied from the LM head
    assert model.heads[0].weight.shape == (512, 64)
    ids = torch.randint(0, 480, (1, 6))
    with torch.no_grad():
        ours = model.temporal(inputs_embeds=model.embeddings[0](ids)).last_hidden_state
        theirs = qwen.model(input_ids=ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_from_qwen3_rejects_a_different_architecture(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    fields = CatTTSConfig.tiny().language_config.to_dict()
    fields["num_hidden_layers"] = 3
    fields.pop("layer_types", None)
    Qwen3ForCausalLM(Qwen3Config(**fields)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="num_hidden_layers: Qwen3 3 vs config 2"):
        CatTTSModel.from_qwen3(tmp_path, CatTTSConfig.tiny())
