"""Parity with the official implementation on a tiny random checkpoint it wrote (see tests/assets/model/README.md).

The golden logits were computed once, in float32, by the official code. A float32 forward pass depends on the
order in which its kernels accumulate sums (SIMD width, blocking, threads: AVX2, AVX-512, AMX CPUs all differ), so
the comparison allows what float32 accumulation can change and nothing more, derived below, and is repeated under
several `ATEN_CPU_CAPABILITY` kernels.

Tolerance of a logit (the derivation). Logit v of channel c is z_v = sum_i W_vi x_i over the head's input
dimension D (x = the head's RMSNorm output). Summed in float32 in any order, the computed value differs from the
exact one by at most gamma_D * S_v, gamma_D = D u / (1 - D u) ~= D u with u = 2^-24 (Higham, "Accuracy and
Stability of Numerical Algorithms", eq. 3.5), where S_v = sum_i |W_vi| |x_i|. We bound S_v without running the
model: x = g * h / rms(h) has ||h / rms(h)||_2 = sqrt(D) exactly, so S_v <= ||W_v||_2 ||x||_2 <= ||W_v||_2 *
max|g| * sqrt(D) (Cauchy-Schwarz). The rounding of the layers before the head reaches it through the RMSNorm,
which removes its scale; measured on this checkpoint, ours and the official computation each stay within 20 u S_v
of the float64 values (the head's worst case allows D u S_v = 32 u S_v), so `D * u * S_v` bounds one float32
computation, and two (ours and the official one) differ by at most twice that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cat_tts.model import CatTTSModel

ASSETS = Path(__file__).parent.parent / "assets" / "model"
ROOT = Path(__file__).resolve().parents[2]
UNIT_ROUNDOFF = 2.0**-24  # float32
CHANNELS = (0, 1, 32)  # the channels whose full logits the golden holds


@pytest.fixture(scope="module")
def golden():
    return load_file(str(ASSETS / "golden.safetensors"))


def float32_rounding_bound(model: CatTTSModel, channel: int) -> torch.Tensor:
    """`[V]` float64: D * u * ||W_v||_2 * max|g| * sqrt(D), the float32 accumulation bound of each logit of `channel`
    (see the module docstring)."""
    weight = model.heads[channel].weight.detach().double()  # [V, D]
    norm = model.head_norms[channel].weight.detach().double().abs().max()
    d = weight.shape[1]
    return d * UNIT_ROUNDOFF * weight.norm(dim=1) * norm * d**0.5


def _forward(golden: dict[str, torch.Tensor], attn: str, dtype: torch.dtype):
    model = CatTTSModel.from_pretrained(ASSETS / "official_tiny", attn_implementation=attn).to(dtype)
    with torch.no_grad():
        return model, model(golden["input_ids"], golden["attention_mask"], golden["labels"])


def _check_logits(model, out, golden, computations: int) -> None:
    for channel in CHANNELS:
        expected = golden[f"logits_{channel}"].double()  # [B, T, V] on every row
        dense = out.dense_logits(channel).double()
        rows = ~torch.isnan(dense[..., 0])
        assert rows.sum() == out.channel_counts[channel] > 0
        bound = computations * float32_rounding_bound(model, channel)  # [V]
        error = (dense[rows] - expected[rows]).abs()  # [R, V]
        worst = (error / bound).max()
        assert worst <= 1.0, f"channel {channel}: a logit is off by {worst:.2f}x its float32 accumulation bound"


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_official_tiny_checkpoint_gives_the_official_losses(golden, attn):
    model, out = _forward(golden, attn, torch.float32)
    torch.testing.assert_close(out.channel_losses, golden["channel_losses"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss.reshape(1), golden["loss"], atol=1e-5, rtol=1e-5)
    _check_logits(model, out, golden, computations=2)  # ours and the official one, both float32


def test_official_tiny_checkpoint_in_float64_is_within_the_goldens_own_rounding(golden):
    """In float64 our result is the exact function (to ~1e-15, on any CPU): what remains is the golden's own float32
    rounding, one computation's bound."""
    model, out = _forward(golden, "sdpa", torch.float64)
    torch.testing.assert_close(out.channel_losses.double(), golden["channel_losses"].double(), atol=1e-5, rtol=1e-5)
    _check_logits(model, out, golden, computations=1)


def test_official_tiny_checkpoint_round_trips(tmp_path):
    model = CatTTSModel.from_pretrained(ASSETS / "official_tiny")
    model.save_pretrained(tmp_path)
    official = load_file(str(ASSETS / "official_tiny" / "model.safetensors"))
    ours = load_file(str(tmp_path / "model.safetensors"))
    assert ours.keys() == official.keys()
    for key, tensor in official.items():
        if key == "model.language_model.embed_tokens.weight":  # unused by the model; we write the text table
            continue
        assert torch.equal(ours[key], tensor), key


@pytest.mark.skipif(os.environ.get("CAT_TTS_GOLDEN_CHILD") == "1", reason="already running under one capability")
def test_the_golden_holds_under_other_cpu_kernel_sets():
    """The float32 tests again with ATen's kernels for other instruction sets (other accumulation orders), in two
    processes at once: "default" (portable, not vectorised) and "avx2". A CPU without the asked set runs the best
    it has."""
    test = f"{Path(__file__).relative_to(ROOT)}::test_official_tiny_checkpoint_gives_the_official_losses"
    runs = {
        capability: subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            cwd=ROOT,
            env={**os.environ, "ATEN_CPU_CAPABILITY": capability, "CAT_TTS_GOLDEN_CHILD": "1", "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for capability in ("default", "avx2")
    }
    for capability, run in runs.items():
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}:\n{output[-3000:]}"
