"""Speech recognisers of the Seed-TTS-Eval protocol.

* English: Whisper-large-v3 through transformers, fp32 by default, one utterance per call, greedy
  decoding with the checkpoint's generation settings, language forced to English and task
  "transcribe" (the modern equivalent of the official `forced_decoder_ids`), no timestamps. Audio is
  read as float64 and FFT-resampled to 16 kHz (`audio.resample_fft`), as the official scorer does.
* Chinese: Paraformer-zh through FunASR (extra `eval-zh`), given the file path so FunASR reads and
  resamples the audio itself, as the official scorer does. The transcript is converted to simplified
  characters by the metric (`metrics.utterance_wer`).

Both expose `transcribe(path) -> str`; any object with that method can be passed to the scorer.

Without the hub (`HF_HUB_OFFLINE=1`, or no network) a model that is neither a local directory nor in the local
cache fails at once with a message naming the options that take local models (`--asr-model DIR`, `--sim-model
FILE`): the hub is asked once, with a short timeout, instead of transformers' minutes of retries per file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from huggingface_hub import HfApi, constants, snapshot_download

from cat_tts.errors import ModelLoadError
from cat_tts.weights import is_hub_id
from eval.seedtts.audio import SCORING_RATE, read_audio, resample_fft

logger = logging.getLogger(__name__)

WHISPER_MODEL = "openai/whisper-large-v3"
PARAFORMER_MODEL = "paraformer-zh"
# Files of a Whisper repository the scorer needs: configs, processor files and safetensors weights (no pickles).
WHISPER_FILES = ["*.json", "*.txt", "*.safetensors"]
HUB_TIMEOUT_S = 10.0  # the one question asked of the hub before a download
LOCAL_MODELS_HINT = (
    "To score without the hub, pass local models: --asr-model DIR (a Whisper directory, e.g. a saved "
    "openai/whisper-large-v3; for zh a FunASR Paraformer directory) and --sim-model FILE (wavlm_large_finetune.pth "
    "or its .safetensors conversion; without it SIM is skipped)"
)


class AsrModelUnavailableError(ModelLoadError):
    """The ASR model is neither a local directory nor cached, and the hub cannot be reached (or is turned off)."""


def _offline() -> bool:
    """True when the user turned the hub off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def locate_whisper(model_id: str) -> str:
    """A local directory for a Whisper model: the directory itself, the cached snapshot of a hub id, or a fresh
    download (configs, processor files and safetensors only).

    The local cache is looked at first; the hub is asked only when the model is not there, once, with a
    `HUB_TIMEOUT_S` timeout, and not at all when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set.

    Raises:
        AsrModelUnavailableError: neither a directory nor cached, and the hub is off or unreachable (the message
            names the options that take local models).
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or not is_hub_id(model_id):
        raise AsrModelUnavailableError(f"--asr-model {model_id} is not a directory. {LOCAL_MODELS_HINT}")
    try:
        return snapshot_download(model_id, allow_patterns=WHISPER_FILES, local_files_only=True)
    except Exception:  # not in the cache (or only part of it): the hub decides
        pass
    if _offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            HfApi().model_info(model_id, timeout=HUB_TIMEOUT_S)
            return snapshot_download(model_id, allow_patterns=WHISPER_FILES)
        except Exception as err:  # no network, a proxy, an unknown repository: one answer for all
            reason = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    raise AsrModelUnavailableError(
        f"--asr-model {model_id} is not in the local cache and could not be fetched from the Hugging Face hub "
        f"({reason}). {LOCAL_MODELS_HINT}"
    )


class Transcriber(Protocol):
    """What the scorer needs from an ASR model."""

    name: str

    def transcribe(self, path: str | Path) -> str:
        """Transcript of one audio file."""
        ...


class WhisperAsr:
    """Whisper through transformers with the language forced.

    Args:
        model: a `WhisperForConditionalGeneration` (any size; tests use a tiny random one).
        processor: a `WhisperProcessor` (or any object with `feature_extractor` and `tokenizer`).
        language: Whisper language code forced in the decoder prompt.
        device: where the model runs.
        name: label recorded in the results.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        language: str = "en",
        device: str | torch.device = "cpu",
        name: str = "whisper",
    ) -> None:
        self.model = model.to(device).eval()
        self.processor = processor
        self.language = language
        self.device = torch.device(device)
        self.name = name

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = WHISPER_MODEL,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        language: str = "en",
    ) -> WhisperAsr:
        """Load Whisper (default `openai/whisper-large-v3`) from a local directory, the cache or the hub.

        Raises:
            AsrModelUnavailableError: see `locate_whisper`.
        """
        directory = locate_whisper(str(model_id))  # before importing transformers: a missing model fails at once
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        processor = WhisperProcessor.from_pretrained(directory)
        model = WhisperForConditionalGeneration.from_pretrained(directory, dtype=dtype)
        return cls(model, processor, language=language, device=device, name=str(model_id))

    @torch.no_grad()
    def generate_ids(self, wav16k: np.ndarray) -> torch.Tensor:
        """Token ids decoded for a 16 kHz waveform [S] (at most 30 s are seen, as in the protocol).  Returns [1, N]."""
        features = self.processor.feature_extractor(wav16k, sampling_rate=SCORING_RATE, return_tensors="pt")
        x = features.input_features.to(self.device, dtype=self.model.dtype)  # [1, mels, 3000]
        return self.model.generate(x, language=self.language, task="transcribe")

    def transcribe_waveform(self, wav: np.ndarray, sample_rate: int) -> str:
        """Transcript of a mono waveform [S] at any rate (FFT-resampled to 16 kHz)."""
        ids = self.generate_ids(resample_fft(wav, sample_rate, SCORING_RATE))
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)[0]

    def transcribe(self, path: str | Path) -> str:
        """Transcript of an audio file (first channel, read as float64).

        Raises:
            AudioReadError: missing, unreadable or empty file.
        """
        wav, sr = read_audio(path, dtype="float64")
        return self.transcribe_waveform(wav, sr)


class ParaformerAsr:
    """Paraformer-zh through FunASR; FunASR reads the file and resamples it to 16 kHz itself.

    Args:
        model: a `funasr.AutoModel` (or any object with the same `generate(input=path, batch_size_s=...)`).
        name: label recorded in the results.
    """

    def __init__(self, model: Any, name: str = PARAFORMER_MODEL) -> None:
        self.model = model
        self.name = name

    @classmethod
    def from_pretrained(cls, model_id: str = PARAFORMER_MODEL, device: str = "cpu") -> ParaformerAsr:
        """Load Paraformer-zh (`paraformer-zh` resolves to SeACo-Paraformer large on ModelScope).

        Raises:
            ImportError: when FunASR is missing (extra `eval-zh`).
            AsrModelUnavailableError: a model name (not a directory) while HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE
                is set (FunASR would try to download it).
        """
        if not Path(model_id).expanduser().is_dir() and _offline():
            raise AsrModelUnavailableError(
                f"--asr-model {model_id} is a model name, which FunASR downloads, but HF_HUB_OFFLINE is set. "
                + LOCAL_MODELS_HINT
            )
        try:
            from funasr import AutoModel
        except ImportError as err:
            raise ImportError("Chinese ASR needs FunASR: pip install 'cat-tts[eval-zh]'") from err
        return cls(AutoModel(model=model_id, device=device, disable_update=True), name=model_id)

    def transcribe(self, path: str | Path) -> str:
        """Transcript of an audio file (traditional characters are converted later, by the metric)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        result = self.model.generate(input=str(path), batch_size_s=300)
        return result[0]["text"] if result else ""


def load_asr(lang: str, model_id: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The protocol's recogniser for a language ("en": Whisper-large-v3, "zh": Paraformer-zh).

    Raises:
        ValueError: for an unknown language.
        ImportError: when the needed extra is missing.
    """
    if lang == "en":
        return WhisperAsr.from_pretrained(model_id or WHISPER_MODEL, device=device, dtype=dtype)
    if lang == "zh":
        return ParaformerAsr.from_pretrained(model_id or PARAFORMER_MODEL, device=device)
    raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
