"""SIM model: parity with the official UniSpeech ECAPA-TDNN + s3prl WavLM, strict loading, safe checkpoint reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from seedtts_helpers import ASSETS, TINY_SV

from cat_tts.errors import USER_ERROR_EXIT_CODE
from eval.seedtts.audio import resample_sinc
from eval.seedtts.sim import (
    CheckpointError,
    SpeakerEncoder,
    SpeakerEncoderConfig,
    SpeakerSimilarity,
    convert_checkpoint,
    convert_wavlm_key,
    load_checkpoint_tensors,
    load_official_state_dict,
)

GOLDEN = load_file(str(ASSETS / "sim_golden_io.safetensors"))


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return load_file(str(TINY_SV))


@pytest.mark.parametrize(("src", "dst", "rate"), [("wav_a_24k", "wav_a_16k", 24000), ("wav_c_22k", "wav_c_16k", 22050)])
def test_sinc_resampler_matches_torchaudio_default(src, dst, rate):
    out = resample_sinc(GOLDEN[src], rate)
    assert out.shape == GOLDEN[dst].shape
    torch.testing.assert_close(out, GOLDEN[dst], rtol=0, atol=1e-6)
    batched = resample_sinc(torch.stack([GOLDEN[src], -GOLDEN[src]]), rate)
    torch.testing.assert_close(batched[1], -out)


def test_hidden_states_and_embeddings_match_the_official_model(tiny_sim: SpeakerSimilarity):
    hs = tiny_sim.model.hidden_states(GOLDEN["wav_a_16k"][None])  # [L, 1, T, D]
    torch.testing.assert_close(hs[:, 0], GOLDEN["hidden_states_a"], rtol=1e-4, atol=1e-5)
    emb_a = tiny_sim.embed_waveform(GOLDEN["wav_a_24k"], 24000)  # resampled inside
    emb_b = tiny_sim.embed_waveform(GOLDEN["wav_b_16k"], 16000)
    torch.testing.assert_close(emb_a, GOLDEN["emb_a"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb_b, GOLDEN["emb_b"], rtol=1e-4, atol=1e-5)
    sim = torch.nn.functional.cosine_similarity(emb_a[None], emb_b[None])
    torch.testing.assert_close(sim, GOLDEN["sim_ab"], rtol=0, atol=1e-5)


def test_file_similarity_uses_first_channel_and_caches(tiny_sim: SpeakerSimilarity, tmp_path: Path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, GOLDEN["wav_a_24k"].numpy(), 24000, subtype="FLOAT")
    stereo = torch.stack([GOLDEN["wav_b_16k"], torch.zeros_like(GOLDEN["wav_b_16k"])], dim=1).numpy()
    sf.write(b, stereo, 16000, subtype="FLOAT")
    assert tiny_sim.similarity(a, b) == pytest.approx(float(GOLDEN["sim_ab"]), abs=1e-5)
    assert tiny_sim.similarity(a, a) == pytest.approx(1.0, abs=1e-6)


def test_strict_loading_names_missing_unexpected_and_misshapen_keys(official_state):
    model = SpeakerEncoder(SpeakerEncoderConfig.tiny())
    state = dict(official_state)
    del state["layer3.SE_Connect.linear1.weight"]
    del state["feature_extract.model.encoder.layers.1.fc2.bias"]
    state["pooling.extra.weight"] = torch.zeros(1)
    state["feature_extract.model.quantizer.vars"] = torch.zeros(1)
    state["linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as info:
        load_official_state_dict(model, state)
    msg = str(info.value)
    assert "missing head keys: layer3.SE_Connect.linear1.weight" in msg
    assert "encoder.layers.1.feed_forward.output_dense.bias" in msg  # missing backbone key, in transformers' naming
    assert "unexpected keys: feature_extract.model.quantizer.vars, pooling.extra.weight" in msg
    assert "linear.weight (3, 3) != (8, 48)" in msg


def test_every_official_tensor_is_used_except_the_training_head(official_state):
    model = SpeakerEncoder(SpeakerEncoderConfig.tiny())
    load_official_state_dict(model, official_state)  # strict: raises on any leftover
    n_model = len(model.backbone.state_dict()) + len(model.head.state_dict())
    assert n_model == len(official_state) - 1  # only loss_calculator.projection.weight is dropped
    torch.testing.assert_close(model.head.feature_weight, official_state["feature_weight"])
    torch.testing.assert_close(
        model.backbone.encoder.layers[0].attention.gru_rel_pos_const,
        official_state["feature_extract.model.encoder.layers.0.self_attn.grep_a"],
    )


def _official_wavlm_large_keys() -> list[str]:
    """Backbone keys of wavlm_large_finetune.pth in original WavLM naming (7 conv layers, 24 transformer layers)."""
    keys = []
    for i in range(7):
        keys += [f"feature_extractor.conv_layers.{i}.0.weight"]
        keys += [f"feature_extractor.conv_layers.{i}.2.1.{p}" for p in ("weight", "bias")]
    keys += ["layer_norm.weight", "layer_norm.bias", "post_extract_proj.weight", "post_extract_proj.bias", "mask_emb"]
    keys += ["encoder.pos_conv.0.bias", "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v"]
    keys += ["encoder.layer_norm.weight", "encoder.layer_norm.bias"]
    for i in range(24):
        pre = f"encoder.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "out_proj", "grep_linear"):
            keys += [f"{pre}self_attn.{m}.weight", f"{pre}self_attn.{m}.bias"]
        keys += [f"{pre}self_attn.grep_a"]
        if i == 0:
            keys += [f"{pre}self_attn.relative_attention_bias.weight"]
        for m in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"):
            keys += [f"{pre}{m}.weight", f"{pre}{m}.bias"]
    return keys


def test_wavlm_large_key_conversion_is_a_bijection_onto_the_model():
    with torch.device("meta"):
        model = SpeakerEncoder(SpeakerEncoderConfig.wavlm_large())
    official = _official_wavlm_large_keys()
    assert len(official) + len(model.head.state_dict()) + 1 == 711  # + loss_calculator: the released file's count
    converted = [convert_wavlm_key(k) for k in official]
    assert None not in converted
    assert sorted(converted) == sorted(model.backbone.state_dict())
    assert model.head.feature_weight.shape == (25,)
    assert model.head.linear.weight.shape == (256, 3072)


def test_pth_is_read_with_the_safe_loader(official_state, tmp_path: Path):
    pth = tmp_path / "wavlm_large_finetune.pth"
    torch.save({"model": official_state}, pth)
    loaded = load_checkpoint_tensors(pth)
    assert set(loaded) == set(official_state)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(_Exploit.marker),))


def test_pickle_with_code_is_refused_without_running_it(official_state, tmp_path: Path):
    _Exploit.marker = str(tmp_path / "pwned")
    pth = tmp_path / "evil.pth"
    torch.save({"model": official_state, "payload": _Exploit()}, pth)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint_tensors(pth)
    assert not (tmp_path / "pwned").exists()


def test_conversion_to_safetensors_keeps_the_model(official_state, tmp_path: Path, capsys):
    from eval.seedtts.__main__ import main

    pth = tmp_path / "sv.pth"
    torch.save({"model": official_state}, pth)
    out = convert_checkpoint(pth, tmp_path / "sv.safetensors")
    assert main(["convert-sim", str(pth), str(tmp_path / "cli.safetensors")]) == 0
    assert load_file(str(tmp_path / "cli.safetensors")).keys() == load_file(str(out)).keys()
    assert main(["convert-sim", str(tmp_path / "nope.pth"), str(tmp_path / "x.safetensors")]) == USER_ERROR_EXIT_CODE
    assert capsys.readouterr().err.startswith("error: speaker-verification checkpoint not found")
    tensors = load_file(str(out))
    assert "loss_calculator.projection.weight" not in tensors
    sim = SpeakerSimilarity.from_checkpoint(out, config=SpeakerEncoderConfig.tiny())
    torch.testing.assert_close(sim.embed_waveform(GOLDEN["wav_b_16k"], 16000), GOLDEN["emb_b"], rtol=1e-4, atol=1e-5)


def test_config_validation_names_the_field():
    from eval.seedtts.sim import EcapaConfig

    with pytest.raises(ValueError, match="EcapaConfig.scale"):
        EcapaConfig(channels=510)
    with pytest.raises(ValueError, match="num_features"):
        SpeakerEncoderConfig(head=EcapaConfig(num_features=13))


def test_golden_config_matches_the_tiny_preset():
    cfg = json.loads((ASSETS / "sim_golden_config.json").read_text())
    tiny = SpeakerEncoderConfig.tiny()
    assert tiny.backbone["num_hidden_layers"] == cfg["wavlm_cfg"]["encoder_layers"]
    assert tiny.backbone["hidden_size"] == cfg["wavlm_cfg"]["encoder_embed_dim"]
    assert tiny.head.final_channels == cfg["ecapa"]["final_channels"]
