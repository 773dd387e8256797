"""Parity with the official MOSS-Audio-Tokenizer on a tiny random checkpoint it built and saved itself.

See tests/assets/codec/README.md for how the files were produced. The window is 0.32 s (4 frames at 12.5 Hz)
and the clips are 11 frames, so every stage runs past its attention window.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cat_tts.codec import CatCodec

GOLDEN = Path(__file__).parent.parent / "assets" / "codec" / "golden"


@pytest.fixture(scope="module")
def official() -> tuple[CatCodec, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    codec = CatCodec.from_pretrained(GOLDEN / "checkpoint")
    return codec, load_file(str(GOLDEN / "inputs.safetensors")), load_file(str(GOLDEN / "expected.safetensors"))


def test_golden_checkpoint_runs_past_its_window(official) -> None:
    codec, inputs, _ = official
    enc_ctx, dec_ctx = codec.config.contexts()
    assert enc_ctx == {1: 32, 3: 16, 5: 8, 7: 4} and dec_ctx == {0: 4, 2: 8, 4: 16, 6: 32}
    assert inputs["wav"].shape[1] // codec.frame_size > 2 * dec_ctx[0]


def test_codes_are_identical_to_the_official_encode(official) -> None:
    codec, inputs, expected = official
    out = codec.encode(inputs["wav"].float(), lengths=inputs["lengths"])
    official_codes = expected["codes"].permute(1, 0, 2)  # official [K, B, T] -> ours [B, K, T]
    assert out.lengths.tolist() == expected["code_lengths"].tolist() == [11, 9]
    torch.testing.assert_close(out.codes, official_codes, rtol=0, atol=0)
    for k in (1, 4, 17):
        torch.testing.assert_close(
            codec.encode(inputs["wav"].float(), inputs["lengths"], k).codes, official_codes[:, :k]
        )


@pytest.mark.parametrize("k", [1, 4, 32])
def test_decode_matches_the_official_full_sequence_decode(official, k: int) -> None:
    codec, _, expected = official
    codes = expected["codes"].permute(1, 0, 2)[:, :k]
    reference = expected[f"audio_k{k}"]  # [B, S]
    audio = codec.decode(codes).audio
    assert audio.shape == reference.shape
    torch.testing.assert_close(audio, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))


@pytest.mark.parametrize("chunk_frames", [1, 3])
def test_streaming_decode_matches_the_official_full_sequence_decode(official, chunk_frames: int) -> None:
    """Where the official chunked decode drifts past the window, ours stays on the full-sequence function."""
    codec, _, expected = official
    codes = expected["codes"].permute(1, 0, 2)
    reference = expected["audio_k32"]
    chunks = [codes[:, :, i : i + chunk_frames] for i in range(0, codes.shape[2], chunk_frames)]
    audio = torch.cat(list(codec.decode_stream(chunks)), dim=1)
    torch.testing.assert_close(audio, reference, rtol=1e-4, atol=1e-5 * float(reference.abs().max()))
