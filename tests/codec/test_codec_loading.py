"""Checkpoints: official format written and read back, both weight-norm spellings, strict key checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cat_tts.codec import CatCodec, CheckpointError, CodecConfig
from cat_tts.codec.tiny import write_tiny_codec
from cat_tts.errors import ModelLoadError


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_codec(tmp_path_factory.mktemp("codec") / "tiny", seed=3)


def _copy_with(src: Path, dst: Path, tensors: dict[str, torch.Tensor]) -> Path:
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_tiny_codec_is_in_the_official_format(tiny_dir: Path) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["sampling_rate"] == 24000 and config["downsample_rate"] == 1920
    assert config["quantizer_kwargs"]["num_quantizers"] == 32 and config["quantizer_kwargs"]["codebook_size"] == 1024
    keys = load_file(str(tiny_dir / "model.safetensors")).keys()
    assert "quantizer.quantizers.31.in_proj.parametrizations.weight.original1" in keys
    assert "encoder.1.transformer.layers.0.self_attn.in_projs.0.weight" in keys
    assert "decoder.0.transformer.layers.1.layer_scale_2.scale" in keys
    assert not any("weight_g" in k or ".attn." in k for k in keys)


def test_from_pretrained_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    codec = CatCodec.from_pretrained(tiny_dir)
    assert codec.config == CodecConfig.tiny()
    codec.save_pretrained(tmp_path / "again")
    a, b = load_file(str(tiny_dir / "model.safetensors")), load_file(str(tmp_path / "again" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_legacy_weight_norm_spelling_loads_the_same_weights(tiny_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_dir / "model.safetensors"))
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in tensors.items()
    }
    assert any(k.endswith("weight_g") for k in legacy)
    codec_a = CatCodec.from_pretrained(tiny_dir)
    codec_b = CatCodec.from_pretrained(_copy_with(tiny_dir, tmp_path / "legacy", legacy))
    sa, sb = codec_a.state_dict(), codec_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_strict_loading_names_missing_and_unexpected_keys(tiny_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_dir / "model.safetensors"))
    missing = "decoder.2.transformer.layers.0.linear1.weight"
    del tensors[missing]
    tensors["decoder.2.transformer.layers.0.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as err:
        CatCodec.from_pretrained(_copy_with(tiny_dir, tmp_path / "bad", tensors))
    message = str(err.value)
    assert f"1 missing keys: {missing}" in message
    assert "1 unexpected keys: decoder.2.transformer.layers.0.extra.weight" in message


def test_strict_loading_reports_shape_mismatch_and_double_spelling(tiny_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_dir / "model.safetensors"))
    key = "quantizer.quantizers.0.codebook.weight"
    tensors[key] = torch.zeros(512, 8)
    tensors["quantizer.input_proj.weight_g"] = tensors["quantizer.input_proj.parametrizations.weight.original0"].clone()
    with pytest.raises(CheckpointError) as err:
        CatCodec.from_pretrained(_copy_with(tiny_dir, tmp_path / "bad", tensors))
    assert f"{key}: stored (512, 8), expected (1024, 8)" in str(err.value)
    assert "two spellings" in str(err.value)


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="codec directory .*nowhere' does not exist$") as err:
        CatCodec.from_pretrained(tmp_path / "nowhere")
    assert isinstance(err.value, FileNotFoundError)  # what this raised before the one CheckpointError base
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        CatCodec.from_pretrained(tmp_path / "empty")


def test_codec_errors_share_the_one_checkpoint_error_base() -> None:
    from cat_tts import errors
    from cat_tts.codec import checkpoint

    assert CheckpointError is errors.CheckpointError and checkpoint.CheckpointError is errors.CheckpointError


def test_streamed_load_in_bfloat16_equals_cast_of_the_mapped_load(tiny_dir: Path) -> None:
    mapped = CatCodec.from_pretrained(tiny_dir)  # float32 on the CPU: memory-mapped parameters
    streamed = CatCodec.from_pretrained(tiny_dir, dtype="bf16")  # created in bf16, filled tensor by tensor
    assert streamed.dtype == torch.bfloat16 and streamed.quantizer.quantizers[0].codebook.weight.dtype == torch.float32
    expected = mapped.set_dtype(torch.bfloat16).state_dict()
    got = streamed.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]), k


def test_sharded_codec_checkpoint_with_index_loads(tiny_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_dir / "model.safetensors"))
    keys = sorted(tensors)
    dst = tmp_path / "sharded"
    dst.mkdir()
    (dst / "config.json").write_text((tiny_dir / "config.json").read_text())
    weight_map = {}
    for i, part in enumerate((keys[::2], keys[1::2])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(dst / name))
        weight_map.update(dict.fromkeys(part, name))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    for dtype in (None, torch.bfloat16):  # the mapped and the streamed paths
        a = CatCodec.from_pretrained(tiny_dir, dtype=dtype).state_dict()
        b = CatCodec.from_pretrained(dst, dtype=dtype).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_keys_stored_in_two_shards_are_refused(tiny_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_dir / "model.safetensors"))
    dst = _copy_with(tiny_dir, tmp_path / "twice", tensors)
    key = "quantizer.quantizers.0.codebook.weight"
    save_file({key: tensors[key]}, str(dst / "extra.safetensors"))
    (dst / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {key: "extra.safetensors", "quantizer.input_proj.bias": "model.safetensors"}})
    )
    with pytest.raises(CheckpointError, match=f"more than one shard: {key}"):
        CatCodec.from_pretrained(dst)


def test_truncated_weights_name_the_file(tiny_dir: Path, tmp_path: Path) -> None:
    dst = _copy_with(tiny_dir, tmp_path / "cut", load_file(str(tiny_dir / "model.safetensors")))
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) - 100])
    for dtype in (None, "bf16"):
        with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable safetensors file.*truncated"):
            CatCodec.from_pretrained(dst, dtype=dtype)


def test_model_directory_given_as_codec_says_what_it_is(tmp_path: Path) -> None:
    from cat_tts.model.tiny import write_tiny_model

    model_dir = write_tiny_model(tmp_path / "model")
    with pytest.raises(ModelLoadError, match="holds a CAT-TTS model .* not a CAT codec .*--model DIR"):
        CatCodec.from_pretrained(model_dir)


def test_tiny_codec_loads_from_the_package_root_and_round_trips_audio(tiny_dir: Path) -> None:
    from cat_tts import CatCodec as PublicCatCodec

    codec = PublicCatCodec.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    assert codec.dtype == torch.bfloat16
    wav = 0.1 * torch.randn(1, 5 * 1920 + 17, generator=torch.Generator().manual_seed(0))
    out = codec.encode(wav)
    assert out.codes.shape == (1, 32, 5) and out.lengths.tolist() == [5]
    audio = codec.decode(out.codes[:, :3]).audio
    assert audio.shape == (1, 5 * 1920) and audio.dtype == torch.float32 and torch.isfinite(audio).all()
