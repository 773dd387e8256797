"""The voice: a reference clip read, checked and loudness-normalised, then encoded into codes of all N layers.

Shapes: S samples (24 kHz), N layers, L reference frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cat_tts.audio import AudioError, audio_from_array, load_audio, loudness_normalize
from cat_tts.errors import FieldError
from cat_tts.inference.output import codec_device

if TYPE_CHECKING:  # pragma: no cover
    from cat_tts.inference.planning import SynthesisConfig


def load_reference(reference_audio: Any, sample_rate: int, cfg: SynthesisConfig) -> np.ndarray:
    """A reference clip (a file path or `(samples, rate)`) as mono float32 at `sample_rate`, checked and normalised.

    Raises:
        FieldError: on `reference_audio` (missing, corrupt, silent, too short or too long, not a clip).
    """
    try:
        if isinstance(reference_audio, (str, Path)):
            wav = load_audio(reference_audio, sample_rate=sample_rate, max_seconds=cfg.max_reference_seconds)
        elif isinstance(reference_audio, tuple) and len(reference_audio) == 2:
            samples, rate = reference_audio
            wav = audio_from_array(samples, rate, sample_rate, cfg.max_reference_seconds)
        else:
            raise FieldError(
                "reference_audio",
                "reference_audio must be a file path, a (samples, sample_rate) tuple or codes from encode_reference",
            )
    except AudioError as err:
        raise FieldError("reference_audio", f"reference_audio: {err}") from err
    if wav.size < cfg.min_reference_seconds * sample_rate:
        raise FieldError(
            "reference_audio",
            f"reference_audio is too short ({wav.size / sample_rate:.2f} s); "
            f"give at least {cfg.min_reference_seconds:g} s of speech (3-10 s works best)",
        )
    if cfg.normalize_reference:
        wav = loudness_normalize(wav, target_db=-20.0, max_gain_db=3.0)
    return np.ascontiguousarray(wav, dtype=np.float32)


def encode_voice(codec: Any, wav: np.ndarray, n_vq: int) -> torch.Tensor:
    """Codes `[N, L]` (all layers) of a loaded clip `wav [S]`."""
    x = torch.from_numpy(wav)[None].to(codec_device(codec))  # [1, S]
    with torch.inference_mode():
        enc = codec.encode(x, num_layers=n_vq)
    length = int(enc.lengths[0]) if getattr(enc, "lengths", None) is not None else enc.codes.shape[-1]
    return enc.codes[0, :, :length].cpu()  # [N, L]
