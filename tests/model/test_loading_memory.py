"""Loading reads tensor by tensor into the model's own parameters: the host peak is ~1x the model, whatever the
shard size, and the staged (dtype-converting) path gives exactly the same weights as a direct read."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import cat_tts.weights.safetensors as hub
from cat_tts.model import CatTTSConfig, CatTTSModel
from cat_tts.model.tiny import build_tiny_model

# One subprocess: a model whose weights are mostly one large text table (so the shard is much bigger than any
# staging buffer), written as a single shard, loaded in bfloat16 (stored dtype: read straight into the
# parameters) and then in float32 (converted through the staging buffer). The peak is the kernel's high-water
# mark of the resident set (VmHWM, reset through /proc/self/clear_refs just before each load, after everything
# was imported), not ru_maxrss: that one also counts the parent's resident set at fork (here pytest's).
_MEASURE = textwrap.dedent(
    """
    import json, sys
    import torch
    from cat_tts.model import CatTTSConfig, CatTTSModel

    def status(field):  # bytes
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

    def reset_peak():  # the kernel's peak resident set (VmHWM, ru_maxrss) restarts from the current one
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    directory = sys.argv[1]
    config = CatTTSConfig.tiny().to_dict()
    config.pop("model_type")
    config.pop("vocab_size")
    config["language_config"]["vocab_size"] = 262144
    with torch.device("meta"):
        CatTTSModel(CatTTSConfig(**config))  # imports and builds everything once before measuring
    result, keep = {}, []
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        reset_peak()
        before = status("VmRSS")
        model = CatTTSModel.from_pretrained(directory, dtype=dtype)
        peak = status("VmHWM")
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        result[name] = {"growth": peak - before, "params": params}
        keep.append(model)
    print(json.dumps(result))
    """
)


def _big_text_table_model() -> CatTTSModel:
    fields = CatTTSConfig.tiny().to_dict()
    fields.pop("model_type")
    fields.pop("vocab_size")
    fields["language_config"]["vocab_size"] = 262144  # 2 x 16.8 M parameters: text table and text head
    with torch.device("meta"):
        model = CatTTSModel(CatTTSConfig(**fields), attn_implementation="sdpa")
    model = model.to(torch.bfloat16)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and ru_maxrss in KiB (Linux)")
def test_peak_host_memory_stays_near_the_model_size_not_model_plus_shard(tmp_path):
    model = _big_text_table_model()
    model.save_pretrained(tmp_path)  # one 135 MB shard (the unused Qwen copy of the text table included)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path)], capture_output=True, text=True, check=True, timeout=300
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bf16"]["params"] == params and result["fp32"]["params"] == 2 * params
    # A loader that keeps the shard's bytes resident (a memory-mapped shard read to the end, or the whole file
    # read first) peaks at ~2x in bf16 and ~1.5x in fp32; reading tensor by tensor into the parameters stays
    # at ~1x plus the staging buffer (`hub.STAGING_BYTES`, at most one tensor's worth).
    for name, r in result.items():
        assert r["growth"] <= 1.3 * r["params"], (name, r["growth"] / r["params"])


def test_staged_conversion_in_small_pieces_gives_the_same_weights(tmp_path, monkeypatch):
    model = build_tiny_model(seed=3).to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size=300_000)  # several shards
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    direct = CatTTSModel.from_pretrained(tmp_path, dtype=torch.bfloat16)  # bytes read straight into parameters
    monkeypatch.setattr(hub, "STAGING_BYTES", 1000)  # odd-sized pieces: every large tensor takes many steps
    staged = CatTTSModel.from_pretrained(tmp_path, dtype=torch.float32)
    for (name, a), (_, b) in zip(direct.named_parameters(), staged.named_parameters(), strict=True):
        assert b.dtype == torch.float32 and torch.equal(a.float(), b), name
    assert staged.temporal.embed_tokens is staged.embeddings[0]  # the shared text table stays shared


def test_only_the_parameters_are_written_and_each_once(tmp_path, monkeypatch):
    """Every read goes into a parameter of the model (no intermediate copy of a tensor), once per tensor."""
    model = build_tiny_model(seed=4)
    model.save_pretrained(tmp_path)
    reads: list[tuple[str, int]] = []
    original = hub.SafetensorsFile.read

    def spy(self, key, out=None):
        reads.append((key, 0 if out is None else out.data_ptr()))
        return original(self, key, out)

    monkeypatch.setattr(hub.SafetensorsFile, "read", spy)
    loaded = CatTTSModel.from_pretrained(tmp_path)
    pointers = {p.data_ptr() for p in loaded.parameters()}
    keys = [key for key, _ in reads]
    assert len(keys) == len(set(keys)) == len(list(loaded.parameters()))  # the unused Qwen table is not read
    assert all(ptr in pointers for _, ptr in reads)
