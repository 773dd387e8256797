"""Codec behaviour on a tiny random codec: shapes and lengths, causality, the sliding window applied offline,
prefix property of num_layers, prefix decoding, batch padding invariance, dtype."""

from __future__ import annotations

import pytest
import torch

from cat_tts.codec import CatCodec

F = 1920  # samples per frame


def assert_audio_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 reordering noise (batch shapes change the summation order)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def test_encode_shapes_and_floor_lengths(codec: CatCodec, wav: torch.Tensor) -> None:
    lengths = torch.tensor([10 * F + 1919, 7 * F])
    out = codec.encode(wav[:, : 10 * F + 1919], lengths=lengths)
    assert out.codes.shape == (2, 32, 10) and out.codes.dtype == torch.int64
    assert out.lengths.tolist() == [10, 7]  # the trailing partial frame is dropped
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < 1024
    dec = codec.decode(out.codes, out.lengths)
    assert dec.audio.shape == (2, 10 * F) and dec.audio.dtype == torch.float32
    assert dec.lengths.tolist() == [10 * F, 7 * F]
    assert torch.isfinite(dec.audio).all()


def test_codec_attributes(codec: CatCodec) -> None:
    assert (codec.sample_rate, codec.frame_size, codec.frame_rate, codec.num_layers) == (24000, 1920, 12.5, 32)


def test_encode_is_causal(codec: CatCodec, wav: torch.Tensor) -> None:
    full = codec.encode(wav).codes
    prefix = codec.encode(wav[:, : 11 * F]).codes
    torch.testing.assert_close(prefix, full[:, :, :11], rtol=0, atol=0)


def test_encode_ignores_the_future_by_gradient(codec: CatCodec, wav: torch.Tensor) -> None:
    x = wav[:1, : 12 * F].clone().requires_grad_(True)
    latent = codec._run_encoder(x)  # [1, C, 12]
    latent[:, :, 5].sum().backward()
    assert x.grad[:, 6 * F :].abs().max() == 0  # frame 5 depends on nothing after it
    assert x.grad[:, 5 * F : 6 * F].abs().max() > 0


def test_decode_is_causal(codec: CatCodec, wav: torch.Tensor) -> None:
    codes = codec.encode(wav).codes
    full = codec.decode(codes).audio
    prefix = codec.decode(codes[:, :, :9]).audio
    assert_audio_close(prefix, full[:, : 9 * F])


def test_decode_window_applies_offline(codec: CatCodec, wav: torch.Tensor) -> None:
    """With a 5-frame window per stage the decoder's receptive field is ~23 frames: changing frame 0 leaves
    frames 24+ untouched even in one full-sequence call (the window is not only a streaming artefact)."""
    codes = codec.encode(wav).codes
    changed = codes.clone()
    changed[:, :, 0] = (changed[:, :, 0] + 1) % 1024
    a, b = codec.decode(codes).audio, codec.decode(changed).audio
    assert (a[:, :F] - b[:, :F]).abs().max() > 1e-3
    torch.testing.assert_close(a[:, 24 * F :], b[:, 24 * F :], rtol=0, atol=1e-6)


def test_num_layers_gives_a_prefix_of_the_full_encoding(codec: CatCodec, wav: torch.Tensor) -> None:
    full = codec.encode(wav).codes
    for k in (1, 2, 7, 31):
        torch.testing.assert_close(codec.encode(wav, num_layers=k).codes, full[:, :k], rtol=0, atol=0)


def test_decode_uses_only_the_given_layers(codec: CatCodec, wav: torch.Tensor) -> None:
    codes = codec.encode(wav[:, : 8 * F]).codes
    k = 4
    prefix = codec.decode(codes[:, :k]).audio
    # What the official reduced-depth generation does (pad dropped layers with code 0) is a different signal.
    zero_filled = torch.cat([codes[:, :k], torch.zeros_like(codes[:, k:])], dim=1)
    assert (codec.decode(zero_filled).audio - prefix).abs().max() > 1e-3
    # Prefix decoding is decoding the sum of the first k layers' vectors.
    latent = codec.quantizer.decode(codes[:, :k])
    manual = sum(codec.quantizer.quantizers[i].embed(codes[:, i]) for i in range(k))
    manual = codec.quantizer.output_proj(manual)
    torch.testing.assert_close(latent, manual)


def test_batch_padding_does_not_change_codes_or_audio(codec: CatCodec, wav: torch.Tensor) -> None:
    short = wav[1:, : 13 * F + 700]
    padded = torch.cat([short, torch.zeros(1, wav.shape[1] - short.shape[1])], dim=1)
    batch = torch.cat([wav[:1], padded])
    out = codec.encode(batch, lengths=torch.tensor([wav.shape[1], short.shape[1]]))
    alone = codec.encode(short)
    assert out.lengths.tolist() == [30, 13]
    torch.testing.assert_close(out.codes[1:, :, :13], alone.codes, rtol=0, atol=0)
    torch.testing.assert_close(out.codes[:1], codec.encode(wav[:1]).codes, rtol=0, atol=0)
    audio = codec.decode(out.codes, out.lengths)
    assert_audio_close(audio.audio[1:, : 13 * F], codec.decode(alone.codes).audio)


def test_decode_ignores_padding_codes_past_lengths(codec: CatCodec, wav: torch.Tensor) -> None:
    codes = codec.encode(wav).codes[:, :8]  # [2, 8, 30]
    padded = codes.clone()
    padded[1, :, 12:] = 1024  # a pad code, as batched generation leaves it
    out = codec.decode(padded, lengths=torch.tensor([30, 12]))
    assert out.lengths.tolist() == [30 * F, 12 * F]
    assert_audio_close(out.audio[1, : 12 * F], codec.decode(codes[1:, :, :12]).audio[0])
    assert out.audio[1, 12 * F :].abs().max() == 0
    assert_audio_close(out.audio[0], codec.decode(codes[:1]).audio[0])


def test_bad_inputs_raise_clear_errors(codec: CatCodec, wav: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="too short"):
        codec.encode(wav[:, :1000])
    with pytest.raises(ValueError, match="num_layers"):
        codec.encode(wav, num_layers=33)
    codes = codec.encode(wav[:, : 3 * F]).codes
    with pytest.raises(ValueError, match="0..1023"):
        codec.decode(torch.full_like(codes, 1024))
    with pytest.raises(ValueError, match="layers"):
        codec.decode(torch.cat([codes, codes], dim=1))
    with pytest.raises(ValueError, match=r"\[B, K, T\]"):
        codec.decode(codes[0])


def test_bfloat16_codec_runs_and_stays_close(codec: CatCodec, wav: torch.Tensor) -> None:
    import copy

    half = copy.deepcopy(codec).set_dtype(torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert half.quantizer.quantizers[0].codebook.weight.dtype == torch.float32
    codes = codec.encode(wav[:, : 6 * F]).codes
    ref = codec.decode(codes).audio
    out = half.decode(codes).audio
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert half.encode(wav[:, : 6 * F]).codes.shape == codes.shape
