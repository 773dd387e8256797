"""cat_tts.weights: checkpoint references answer every mistake with what was wrong and how to fix it; one dtype rule;
one safetensors reader that names damaged files. Never downloads (the hub is replaced by stand-ins)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import cat_tts.weights as weights
import cat_tts.weights.dtype
from cat_tts.errors import CheckpointError, InputError, ModelLoadError
from cat_tts.weights import (
    CheckpointNotFoundError,
    DamagedCheckpointError,
    HubUnavailableError,
    SafetensorsCheckpoint,
    WrongCheckpointKindError,
    read_safetensors,
    resolve_checkpoint,
    resolve_dtype,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cat_tts.tools.make_tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The hub as an unreachable network: records every call."""
    import huggingface_hub

    calls: list[dict] = []

    def unreachable(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    return calls


# ---------------------------------------------------------------------------------------------- resolve_checkpoint
def test_local_directories_of_the_right_kind_are_used_as_they_are(tiny):
    assert resolve_checkpoint(tiny["model"], "model") == tiny["model"]
    assert resolve_checkpoint(str(tiny["codec"]), "codec") == tiny["codec"]


@pytest.mark.parametrize("ref", ["nowhere", "./nowhere", "a/b/c", "~/no/such/dir"])
def test_a_missing_local_path_is_not_answered_with_hub_advice(ref, tmp_path, monkeypatch, no_hub):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint(ref, "model")
    assert str(err.value) == f"model directory {ref!r} does not exist"
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ModelLoadError)
    assert no_hub == []  # never asked the hub


def test_a_missing_path_given_as_a_path_object_is_local(tmp_path, no_hub):
    with pytest.raises(CheckpointNotFoundError, match="codec directory .* does not exist"):
        resolve_checkpoint(Path("owner") / "name", "codec")  # a Path is never a hub id
    assert no_hub == []


def test_a_file_where_a_directory_is_expected_says_so(tiny):
    with pytest.raises(ModelLoadError, match=r"model.safetensors is a file, not a directory.*\(here: .*model\)"):
        resolve_checkpoint(tiny["model"] / "model.safetensors", "model")
    with pytest.raises(ModelLoadError, match="is a file, not a directory: pass the CAT codec"):
        resolve_checkpoint(tiny["codec"] / "config.json", "codec")


def test_the_other_kind_of_directory_is_named(tiny):
    with pytest.raises(WrongCheckpointKindError) as err:
        resolve_checkpoint(tiny["model"], "codec")
    assert "holds a CAT-TTS model (MOSS-TTS-Local-Transformer)" in str(err.value)
    assert "not a CAT codec" in str(err.value) and "--model DIR" in str(err.value)
    with pytest.raises(WrongCheckpointKindError) as err:
        resolve_checkpoint(tiny["codec"], "model")
    assert "holds a CAT codec (MOSS-Audio-Tokenizer)" in str(err.value) and "--codec DIR" in str(err.value)


def test_a_qwen3_directory_given_as_the_model_points_to_from_qwen3(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    with pytest.raises(WrongCheckpointKindError, match="Qwen3 language model.*from_qwen3"):
        resolve_checkpoint(tmp_path, "model")


def test_a_directory_without_config_or_with_a_broken_one(tmp_path, tiny):
    with pytest.raises(CheckpointNotFoundError, match="has no config.json: expected a CAT codec .* checkpoint"):
        resolve_checkpoint(tmp_path, "codec")
    shutil.copytree(tiny["model"], tmp_path / "step-10" / "model")  # a training checkpoint holds its export
    with pytest.raises(CheckpointNotFoundError, match=r"step-10/model has one .*: pass that directory"):
        resolve_checkpoint(tmp_path / "step-10", "model")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DamagedCheckpointError, match="config.json is not valid JSON"):
        resolve_checkpoint(tmp_path, "codec")


def test_an_unreachable_hub_says_how_to_pass_local_directories(no_hub):
    with pytest.raises(HubUnavailableError) as err:
        resolve_checkpoint(weights.DEFAULT_MODEL, "model")
    message = str(err.value)
    assert "could not be fetched from the Hugging Face hub (ConnectionError: Failed to resolve" in message
    assert "--model DIR --codec DIR" in message and "python -m cat_tts.tools.make_tiny OUT" in message
    assert no_hub and no_hub[0]["repo_id"] == weights.DEFAULT_MODEL


def test_an_unknown_hub_repository_is_named(monkeypatch):
    import huggingface_hub

    not_found = type("RepositoryNotFoundError", (Exception,), {})

    def missing(**kwargs):
        raise not_found("404 Client Error")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(HubUnavailableError, match="has no accessible repository of that name.*--model DIR"):
        resolve_checkpoint("someone/typo", "codec")


def test_a_hub_snapshot_is_checked_like_a_local_directory(tiny, monkeypatch):
    import huggingface_hub

    calls: list[dict] = []

    def snapshot(**kwargs):
        calls.append(kwargs)
        return str(tiny["codec"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert resolve_checkpoint(weights.DEFAULT_CODEC, "codec") == tiny["codec"]
    patterns = calls[0]["allow_patterns"]
    assert "*.safetensors" in patterns and not any(p.endswith((".bin", ".pt", ".pth", ".py")) for p in patterns)
    with pytest.raises(WrongCheckpointKindError, match="holds a CAT codec"):
        resolve_checkpoint(weights.DEFAULT_MODEL, "model")  # the stand-in hub returns a codec


def test_all_checkpoint_errors_share_one_base():
    from cat_tts.codec import CheckpointError as codec_error
    from cat_tts.model import CheckpointError as model_error
    from eval.seedtts.sim import CheckpointError as sim_error

    assert codec_error is model_error is sim_error is CheckpointError
    for cls in (CheckpointNotFoundError, WrongCheckpointKindError, HubUnavailableError):
        assert issubclass(cls, ModelLoadError) and issubclass(cls, CheckpointError)
    assert issubclass(DamagedCheckpointError, CheckpointError)


def test_loaders_use_the_same_answers(tiny, tmp_path):
    from cat_tts.codec import CatCodec
    from cat_tts.model import CatTTSModel

    with pytest.raises(WrongCheckpointKindError, match="holds a CAT codec"):
        CatTTSModel.from_pretrained(tiny["codec"])
    with pytest.raises(CheckpointNotFoundError, match="model directory .* does not exist"):
        CatTTSModel.from_pretrained(tmp_path / "missing")
    with pytest.raises(WrongCheckpointKindError, match="holds a CAT-TTS model"):
        CatCodec.from_pretrained(tiny["model"])


# --------------------------------------------------------------------------------------------------- resolve_dtype
@pytest.mark.parametrize(
    ("requested", "device", "recorded", "kind", "expected"),
    [
        (None, "cpu", None, "model", torch.float32),
        ("auto", "cpu", "bfloat16", "model", torch.float32),  # CPUs run float32 unless asked
        ("auto", "cuda", None, "model", torch.bfloat16),
        ("auto", "cuda", "float32", "model", torch.bfloat16),
        ("auto", "cuda", "bfloat16", "model", torch.bfloat16),
        ("auto", "cuda:1", "float16", "model", torch.float16),  # a half type the checkpoint was stored in
        ("auto", "cuda", "torch.float16", "model", torch.float16),
        ("auto", "cuda", "complex64", "model", torch.bfloat16),  # an exotic record is ignored
        (None, "cuda", "bfloat16", "codec", torch.float32),  # the codec stays float32 unless asked
        ("bf16", "cpu", None, "model", torch.bfloat16),
        ("BFloat16", "cpu", None, "codec", torch.bfloat16),
        ("fp16", "cuda", "bfloat16", "model", torch.float16),
        ("float32", "cuda", "bfloat16", "model", torch.float32),
        (torch.float16, "cpu", None, "model", torch.float16),
    ],
)
def test_resolve_dtype(requested, device, recorded, kind, expected, monkeypatch):
    monkeypatch.setattr(cat_tts.weights.dtype, "_cuda_supports_bf16", lambda: True)
    assert resolve_dtype(requested, device, recorded=recorded, kind=kind) == expected


def test_auto_falls_back_to_float32_on_gpus_without_bfloat16(monkeypatch):
    monkeypatch.setattr(cat_tts.weights.dtype, "_cuda_supports_bf16", lambda: False)
    assert resolve_dtype("auto", "cuda", recorded="bfloat16") == torch.float32
    assert resolve_dtype("auto", "cuda", recorded="float16") == torch.float16


@pytest.mark.parametrize("bad", ["half", "int8", "", torch.int8, torch.float64])
def test_bad_dtypes_name_the_allowed_values(bad):
    with pytest.raises(InputError, match="float32|bfloat16"):
        resolve_dtype(bad, "cpu")


def test_from_pretrained_accepts_dtype_names(tiny):
    from cat_tts.model import CatTTSModel

    assert CatTTSModel.from_pretrained(tiny["model"], dtype="auto").dtype == torch.float32
    assert CatTTSModel.from_pretrained(tiny["model"], dtype="bf16").dtype == torch.bfloat16
    with pytest.raises(InputError, match="auto, float32, fp32, bfloat16"):
        CatTTSModel.from_pretrained(tiny["model"], dtype="half")


# ------------------------------------------------------------------------------------------------------ safetensors
def test_reader_round_trips_every_dtype_and_converts_on_request(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "bf16": torch.randn(7).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(9).reshape(3, 3),
        "flag": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    for mmap in (False, True):
        got = read_safetensors(tmp_path / "x.safetensors", mmap=mmap)
        assert got.keys() == tensors.keys()
        assert all(got[k].dtype == v.dtype and torch.equal(got[k], v) for k, v in tensors.items())
    with SafetensorsCheckpoint([tmp_path / "x.safetensors"]) as checkpoint:
        assert checkpoint.info("bf16").shape == (7,) and checkpoint.info("bf16").dtype == torch.bfloat16
        out = torch.empty(5, 3).t()  # float32, not contiguous: converted through the staging buffer
        assert checkpoint.read("bf16", torch.empty(7)).equal(tensors["bf16"].float())
        assert checkpoint.read("f32", out).equal(tensors["f32"])
        with pytest.raises(ValueError, match=r"stored with shape \[3, 5\], not \[5, 3\]"):
            checkpoint.read("f32", torch.empty(5, 3))


def test_damaged_files_are_named(tmp_path):
    save_file({"w": torch.randn(1000)}, str(tmp_path / "ok.safetensors"))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 4)
    (tmp_path / "header.safetensors").write_bytes(len(b"{oops").to_bytes(8, "little") + b"{oops")
    for name, reason in (("cut", "truncated"), ("junk", "only 4 bytes"), ("header", "corrupt header")):
        with pytest.raises(DamagedCheckpointError, match=rf"{name}.safetensors is not a readable .*{reason}"):
            read_safetensors(tmp_path / f"{name}.safetensors")
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        read_safetensors(tmp_path / "absent.safetensors")


def test_a_truncated_model_shard_is_named_before_anything_is_read(tmp_path):
    from cat_tts.model import CatTTSModel
    from cat_tts.model.tiny import write_tiny_model

    write_tiny_model(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable .*\(truncated\).*fetch"):
        CatTTSModel.from_pretrained(tmp_path)


def test_mapped_tensors_are_private_views_of_the_file(tmp_path):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)}, str(path))
    before = path.read_bytes()
    got = read_safetensors(path, mmap=True)
    assert torch.equal(got["a"], torch.arange(6.0).reshape(2, 3)) and got["a"].shape == (2, 3)
    got["a"].mul_(-1)  # copy-on-write: the process's pages change, the file does not
    assert path.read_bytes() == before
    assert torch.equal(read_safetensors(path)["a"], torch.arange(6.0).reshape(2, 3))


def test_the_defaults_need_no_torch():
    import subprocess
    import sys

    code = "import sys, cat_tts.cli, cat_tts.weights; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
