"""The CatTTS pipeline: text + a reference clip -> speech in that voice at depth K.

Shapes: B batch, K generated layers, N layers of the grid (32), F frames, S samples (24 kHz).

Two prompt modes (the released checkpoint supports both):
* "clone": the reference clip sits in the user message; no transcript needed.
* "continuation": the reference transcript is put before the text and the reference audio becomes the
  start of the assistant's answer, which the model continues (the paper's inference mode). Chosen
  automatically when a transcript is given; can be forced with `mode=`.

Long text is cleaned, split into sentence chunks, generated chunk by chunk with the same voice prompt and
joined with a short cross-fade. The streaming path runs the same generator and the codec's streaming
decoder, so its concatenated chunks equal the one-shot result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cat_tts.audio import DEFAULT_SAMPLE_RATE
from cat_tts.generation.loop import FRAME_RATE, FrameStep, GenerationConfig, iter_frames
from cat_tts.generation.mixin import build_generation_config
from cat_tts.generation.streaming import stream_audio
from cat_tts.text.normalize import clean_text, split_sentences
from cat_tts.text.prompt import PromptBuilder, join_transcript

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "OpenMOSS-Team/MOSS-TTS-Local-Transformer"
DEFAULT_CODEC = "OpenMOSS-Team/MOSS-Audio-Tokenizer"

Mode = Literal["clone", "continuation"]


class InputError(ValueError):
    """A user input (text, reference clip, depth, sampling value, path) is not usable; the message says why."""


class ModelLoadError(InputError):
    """A model or codec could not be loaded (hub unreachable, missing directory...)."""


@dataclass(frozen=True)
class SynthesisConfig:
    """Pipeline settings that are not generation settings."""

    max_chunk_chars: int = 300  # text chunk budget (CJK characters count three), 10..10000
    crossfade_ms: float = 50.0  # cross-fade between text chunks, 0..1000 ms
    max_reference_seconds: float = 30.0  # longer reference clips are rejected, > 0
    min_reference_seconds: float = 0.5  # shorter reference clips are rejected, >= 0.08 (one frame)
    normalize_reference: bool = True  # loudness-normalise the reference to -20 dBFS (+-3 dB), as upstream

    def __post_init__(self) -> None:
        if not 10 <= self.max_chunk_chars <= 10000:
            raise ValueError(f"max_chunk_chars must be in 10..10000, got {self.max_chunk_chars}")
        if not 0 <= self.crossfade_ms <= 1000:
            raise ValueError(f"crossfade_ms must be in 0..1000, got {self.crossfade_ms}")
        if not self.max_reference_seconds > 0:
            raise ValueError(f"max_reference_seconds must be > 0, got {self.max_reference_seconds}")
        if not 0.08 <= self.min_reference_seconds <= self.max_reference_seconds:
            raise ValueError(
                f"min_reference_seconds must be in 0.08..max_reference_seconds, got {self.min_reference_seconds}"
            )


def frame_budget(text: str) -> int:
    """Default `max_new_frames` for one text chunk: about 3x a normal speaking time, plus 3 s.

    Latin-script characters count 0.2 s, CJK characters 0.6 s (normal speech is ~0.07 s and ~0.22 s).
    """
    cjk = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    seconds = 3.0 + 0.2 * (len(text) - cjk) + 0.6 * cjk
    return int(math.ceil(FRAME_RATE * seconds))


class _Crossfader:
    """Joins consecutive audio segments with a linear cross-fade, incrementally.

    Pushing whole segments or pieces of them gives the same samples: the last `n` samples of a segment are
    held back until the next segment (or the end) decides how they are mixed.
    """

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap
        self.tail = np.zeros(0, dtype=np.float32)  # held-back end of the previous segment
        self.head = np.zeros(0, dtype=np.float32)  # start of the current segment, not yet mixed
        self.mixing = False  # the current segment still has to be mixed with `tail`
        self.pending = np.zeros(0, dtype=np.float32)  # current segment samples that may become the tail

    def start_segment(self) -> np.ndarray:
        """Begins a new segment; returns samples ready to emit."""
        out = self._flush_segment()
        self.mixing = self.tail.size > 0
        self.head = np.zeros(0, dtype=np.float32)
        return out

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Adds samples of the current segment; returns samples ready to emit."""
        audio = np.asarray(audio, dtype=np.float32)
        out = []
        if self.mixing:
            self.head = np.concatenate([self.head, audio])
            if self.head.size < self.tail.size:
                return np.zeros(0, dtype=np.float32)
            out.append(self._mix(self.head[: self.tail.size]))
            audio = self.head[self.tail.size :]
            self.mixing = False
            self.tail = np.zeros(0, dtype=np.float32)
        self.pending = np.concatenate([self.pending, audio])
        keep = min(self.overlap, self.pending.size)
        out.append(self.pending[: self.pending.size - keep])
        self.pending = self.pending[self.pending.size - keep :]
        return np.concatenate(out)

    def finish(self) -> np.ndarray:
        """Ends the stream; returns the remaining samples."""
        out = self._flush_segment()
        rest = np.concatenate([out, self.tail])
        self.tail = np.zeros(0, dtype=np.float32)
        return rest

    def _flush_segment(self) -> np.ndarray:
        out = []
        if self.mixing:  # the segment ended shorter than the overlap: mix what there is
            n = self.head.size
            mixed = self._mix(self.head) if n else np.zeros(0, dtype=np.float32)
            out += [mixed, self.tail[n:]]
            self.tail = np.zeros(0, dtype=np.float32)
            self.mixing = False
        self.tail = np.concatenate([self.tail, self.pending])
        self.pending = np.zeros(0, dtype=np.float32)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def _mix(self, head: np.ndarray) -> np.ndarray:
        n = head.size
        tail = self.tail[:n]
        ramp = (np.arange(n, dtype=np.float32) + 0.5) / max(self.tail.size, 1)
        return tail * (1.0 - ramp) + head * ramp


@dataclass
class _Voice:
    """An encoded reference: codes of all N layers, optional transcript, prompt mode."""

    codes: torch.Tensor  # [N, L]
    text: str | None
    mode: Mode


class CatTTS:
    """Zero-shot voice cloning at a chosen depth K (bitrate 0.125 kbps x K).

    Args:
        model: a loaded `CatTTSModel` (eval mode).
        codec: a loaded `CatCodec`.
        tokenizer: the model's text tokenizer.
        config: pipeline settings.
    """

    def __init__(self, model: Any, codec: Any, tokenizer: Any, config: SynthesisConfig | None = None) -> None:
        self.model = model
        self.codec = codec
        self.config = config or SynthesisConfig()
        self.n_vq = int(model.config.n_vq)
        self.prompts = PromptBuilder(tokenizer, model.config.token_ids, self.n_vq)
        self.sample_rate = int(getattr(codec, "sample_rate", DEFAULT_SAMPLE_RATE))
        self.frame_size = int(getattr(codec, "frame_size", 1920))

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = DEFAULT_MODEL,
        codec: str | Path = DEFAULT_CODEC,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        config: SynthesisConfig | None = None,
    ) -> CatTTS:
        """Loads the TTS model, its tokenizer and the codec from hub ids or local directories.

        Args:
            model: MOSS-TTS-Local-Transformer directory or hub id (with its tokenizer files).
            codec: MOSS-Audio-Tokenizer directory or hub id.
            device: "cpu", "cuda", ... (default: cuda when available).
            dtype: torch dtype or its name ("float32", "bfloat16", "float16"); default float32 on CPU,
                bfloat16 on CUDA. The codec always runs in float32.
            config: pipeline settings.

        Raises:
            ModelLoadError: a directory is missing or the hub is unreachable (the message says how to pass
                local directories instead).
        """
        from transformers import AutoTokenizer

        from cat_tts.codec import CatCodec
        from cat_tts.model import CatTTSModel
        from cat_tts.model.checkpoint import resolve_directory

        try:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as err:
            raise InputError(f"invalid device {device!r}: {err}") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available here; use --device cpu")
        dtype = _resolve_dtype(dtype, device)
        for what, ref in (("model", model), ("codec", codec)):
            if _looks_local(ref) and not Path(ref).is_dir():
                raise ModelLoadError(f"{what} directory {str(ref)!r} does not exist")
        try:
            tts_dir = resolve_directory(model)
            tts = CatTTSModel.from_pretrained(tts_dir, dtype=dtype, device=device)
            # the tokenizer from the original reference: a hub snapshot of the weights lacks chat_template.jinja
            tokenizer = _load_tokenizer(AutoTokenizer, model if Path(str(model)).expanduser().is_dir() else str(model))
            cat = CatCodec.from_pretrained(str(codec), device=device)
        except (OSError, ValueError) as err:  # missing files, hub errors, CheckpointError
            raise ModelLoadError(
                f"could not load {model!r} / {codec!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
                "If the Hugging Face hub is unreachable, pass local directories: --model DIR --codec DIR "
                "(CatTTS.from_pretrained(model=DIR, codec=DIR)); `python -m cat_tts.tools.make_tiny OUT` writes "
                "tiny random ones (OUT/model, OUT/codec) for offline checks"
            ) from err
        return cls(tts.eval(), cat.eval(), tokenizer, config)

    # ------------------------------------------------------------------ public API

    def synthesize(
        self,
        text: str,
        reference_audio: str | Path | tuple[np.ndarray, int],
        reference_text: str | None = None,
        depth: int = 32,
        seed: int | None = None,
        mode: Mode | None = None,
        max_new_frames: int | None = None,
        on_frame: Callable[[FrameStep], None] | None = None,
        **sampling: Any,
    ) -> tuple[np.ndarray, int]:
        """Speaks `text` in the voice of `reference_audio` at depth K.

        Args:
            text: text to speak (any length; split into sentence chunks).
            reference_audio: a file path, `(samples, sample_rate)` (mono or [channels, S]), or the `[N, L]` codes
                returned by `encode_reference` (a voice encoded once and reused).
            reference_text: transcript of the reference; when given, continuation mode is used.
            depth: K in 1..32 (bitrate 0.125 kbps x K).
            seed: seed for reproducible sampling (chunk i uses seed + i).
            mode: force "clone" or "continuation" (continuation needs `reference_text`).
            max_new_frames: frame budget per chunk (default: from the chunk's length).
            on_frame: called after every generated frame (progress bars).
            **sampling: `do_sample`, `temperature`, `top_p`, `top_k`, `repetition_penalty`, `control_temperature`,
                `control_top_p`, `control_top_k`, `control_tokens`, `min_new_frames`.

        Returns:
            `(audio float32 [S], sample_rate)`.

        Raises:
            InputError: empty text, unusable reference, depth or sampling values out of range.
        """
        chunks, voice, configs = self._prepare(text, reference_audio, reference_text, depth, seed, mode, sampling)
        audios = [
            self._generate_chunk(chunk, voice, cfg, max_new_frames, on_frame)
            for chunk, cfg in zip(chunks, configs, strict=True)
        ]
        return self._join(audios), self.sample_rate

    def stream(
        self,
        text: str,
        reference_audio: str | Path | tuple[np.ndarray, int],
        reference_text: str | None = None,
        depth: int = 32,
        seed: int | None = None,
        mode: Mode | None = None,
        max_new_frames: int | None = None,
        frames_per_chunk: int = 4,
        first_chunk_frames: int = 1,
        on_frame: Callable[[FrameStep], None] | None = None,
        **sampling: Any,
    ) -> Iterator[np.ndarray]:
        """Like `synthesize`, but yields audio while frames are being generated.

        The first audio comes after `first_chunk_frames` frames, then every `frames_per_chunk` frames.
        The concatenation of the yielded arrays equals `synthesize(...)[0]` for the same arguments and seed.

        Yields:
            float32 `[s]` pieces at `self.sample_rate`.
        """
        if frames_per_chunk < 1 or first_chunk_frames < 1:
            raise InputError("frames_per_chunk and first_chunk_frames must be >= 1")
        chunks, voice, configs = self._prepare(text, reference_audio, reference_text, depth, seed, mode, sampling)
        fader = _Crossfader(self._overlap())
        for chunk, cfg in zip(chunks, configs, strict=True):
            out = fader.start_segment()
            if out.size:
                yield out
            for piece in self._stream_chunk(
                chunk, voice, cfg, max_new_frames, frames_per_chunk, first_chunk_frames, on_frame
            ):
                out = fader.push(piece)
                if out.size:
                    yield out
        out = fader.finish()
        if out.size:
            yield out

    def synthesize_batch(
        self,
        items: Sequence[dict],
        depth: int = 32,
        seed: int | None = None,
        batch_size: int = 8,
        max_new_frames: int | None = None,
        on_frame: Callable[[FrameStep], None] | None = None,
        **sampling: Any,
    ) -> list[tuple[np.ndarray, int]]:
        """Synthesises several utterances, generating up to `batch_size` text chunks at once (left padding).

        Args:
            items: dicts with `text`, `reference_audio` and optional `reference_text`, `mode`.
            depth, seed, max_new_frames, sampling: as in `synthesize` (seed + batch index per batch).
            batch_size: text chunks generated together.

        Returns:
            One `(audio, sample_rate)` per item, in order.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        jobs = []  # (item index, chunk text, voice)
        encoded: dict[str, torch.Tensor] = {}  # reference path -> codes, so a shared voice is encoded once
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "text" not in item or "reference_audio" not in item:
                raise InputError(f"item {i} must be a dict with 'text' and 'reference_audio'")
            ref = item["reference_audio"]
            try:
                chunks, voice, _ = self._prepare(
                    item["text"], ref, item.get("reference_text"), depth, None, item.get("mode"), sampling,
                    codes=encoded.get(str(ref)) if isinstance(ref, (str, Path)) else None,
                )  # fmt: skip
            except InputError as err:
                raise InputError(f"item {i}: {err}") from err
            if isinstance(ref, (str, Path)):
                encoded[str(ref)] = voice.codes
            jobs += [(i, chunk, voice) for chunk in chunks]
        results: list[list[np.ndarray]] = [[] for _ in items]
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            cfg = self._config(depth, None if seed is None else seed + start // batch_size, sampling)
            grids = [self._grid(chunk, voice) for _, chunk, voice in batch]
            input_ids, mask = self.prompts.pad_left(grids)
            budget = max_new_frames or max(frame_budget(chunk) for _, chunk, _ in batch)
            cfg = _replace(cfg, max_new_frames=budget)
            out = self.model.generate(
                input_ids.to(self._device()),
                mask.to(self._device()),
                on_frame=on_frame,
                **_config_kwargs(cfg),
            )
            for b, (i, chunk, voice) in enumerate(batch):
                _warn_unusual(out.lengths[b], out.finished[b], budget, chunk)
                codes = out.frames[b : b + 1, : int(out.lengths[b]), 1:].transpose(1, 2)  # [1, K, F]
                results[i].append(self._decode(codes, voice))
        return [(self._join(parts), self.sample_rate) for parts in results]

    def _voice_codes(self, reference_audio) -> torch.Tensor:
        """Codes `[N, L]` of a reference: encoded from audio, or checked if already codes (a saved voice)."""
        if not isinstance(reference_audio, torch.Tensor):
            return self.encode_reference(reference_audio)
        codes = reference_audio
        vocab = int(self.model.config.audio_vocab_size)
        if codes.dim() != 2 or codes.shape[0] != self.n_vq or codes.shape[1] < 1 or codes.dtype.is_floating_point:
            raise InputError(
                f"reference codes must be an integer tensor [{self.n_vq}, L] (from encode_reference), "
                f"got {codes.dtype} {tuple(codes.shape)}"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= vocab:
            raise InputError(f"reference codes must be in 0..{vocab - 1}")
        return codes.long().cpu()

    def encode_reference(self, reference_audio: str | Path | tuple[np.ndarray, int]) -> torch.Tensor:
        """Loads, normalises and encodes a reference clip into `[N, L]` codes (all layers)."""
        wav = self._load_reference(reference_audio)
        x = torch.from_numpy(wav)[None].to(self._device())  # [1, S]
        with torch.inference_mode():
            enc = self.codec.encode(x, num_layers=self.n_vq)
        length = int(enc.lengths[0]) if getattr(enc, "lengths", None) is not None else enc.codes.shape[-1]
        return enc.codes[0, :, :length].cpu()  # [N, L]

    # ------------------------------------------------------------------ internals

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _overlap(self) -> int:
        return int(round(self.config.crossfade_ms * self.sample_rate / 1000.0))

    def _join(self, audios: list[np.ndarray]) -> np.ndarray:
        fader = _Crossfader(self._overlap())
        out = []
        for audio in audios:
            out += [fader.start_segment(), fader.push(audio)]
        out.append(fader.finish())
        return np.concatenate(out).astype(np.float32)

    def _config(self, depth: int, seed: int | None, sampling: dict) -> GenerationConfig:
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= self.n_vq:
            raise InputError(f"depth must be an integer in 1..{self.n_vq}, got {depth!r}")
        unknown = set(sampling) - _SAMPLING_KEYS
        if unknown:
            raise InputError(f"unknown sampling options {sorted(unknown)}; allowed: {sorted(_SAMPLING_KEYS)}")
        try:
            return build_generation_config(depth=depth, seed=seed, **sampling)
        except (TypeError, ValueError) as err:
            raise InputError(f"invalid sampling setting: {err}") from err

    def _prepare(self, text, reference_audio, reference_text, depth, seed, mode, sampling, codes=None):
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        cleaned = clean_text(text)
        if not cleaned:
            raise InputError("text is empty (after removing whitespace and control characters)")
        if mode not in (None, "clone", "continuation"):
            raise InputError(f"mode must be 'clone' or 'continuation', got {mode!r}")
        if reference_text is not None:
            reference_text = clean_text(reference_text).replace("\n\n", " ") or None
        if mode == "continuation" and reference_text is None:
            raise InputError("continuation mode needs the reference transcript (reference_text)")
        mode = mode or ("continuation" if reference_text else "clone")
        self._config(depth, seed, sampling)  # fail fast, before touching the reference audio
        chunks = split_sentences(cleaned, self.config.max_chunk_chars)
        configs = [self._config(depth, None if seed is None else seed + i, sampling) for i in range(len(chunks))]
        if codes is None:
            codes = self._voice_codes(reference_audio)
        voice = _Voice(codes, reference_text, mode)
        return chunks, voice, configs

    def _load_reference(self, reference_audio) -> np.ndarray:
        from cat_tts.audio import AudioError, load_audio, loudness_normalize

        cfg = self.config
        try:
            if isinstance(reference_audio, (str, Path)):
                wav = load_audio(reference_audio, sample_rate=self.sample_rate, max_seconds=cfg.max_reference_seconds)
            elif isinstance(reference_audio, tuple) and len(reference_audio) == 2:
                wav = _array_reference(reference_audio, self.sample_rate, cfg.max_reference_seconds)
            else:
                raise InputError(
                    "reference_audio must be a file path, a (samples, sample_rate) tuple or codes from encode_reference"
                )
        except AudioError as err:
            raise InputError(f"reference audio: {err}") from err
        if wav.size < cfg.min_reference_seconds * self.sample_rate:
            raise InputError(
                f"reference audio is too short ({wav.size / self.sample_rate:.2f} s); "
                f"give at least {cfg.min_reference_seconds:g} s of speech (3-10 s works best)"
            )
        if cfg.normalize_reference:
            wav = loudness_normalize(wav, target_db=-20.0, max_gain_db=3.0)
        return np.ascontiguousarray(wav, dtype=np.float32)

    def _grid(self, chunk: str, voice: _Voice) -> torch.Tensor:
        if voice.mode == "continuation":
            return self.prompts.continuation(join_transcript(voice.text or "", chunk), voice.codes)
        return self.prompts.voice_clone(chunk, voice.codes)

    def _generate_chunk(self, chunk, voice, cfg, max_new_frames, on_frame) -> np.ndarray:
        grid = self._grid(chunk, voice)[None].to(self._device())  # [1, T, 1+N]
        cfg = _replace(cfg, max_new_frames=max_new_frames or frame_budget(chunk))
        out = self.model.generate(grid, None, on_frame=on_frame, **_config_kwargs(cfg))
        _warn_unusual(out.lengths[0], out.finished[0], cfg.max_new_frames, chunk)
        codes = out.frames[:, : int(out.lengths[0]), 1:].transpose(1, 2)  # [1, K, F]
        return self._decode(codes, voice)

    def _decode(self, codes: torch.Tensor, voice: _Voice) -> np.ndarray:
        """Prefix-decodes `[1, K, F]` codes; continuation decodes after the prefix audio for codec context."""
        k = codes.shape[1]
        if codes.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        skip = 0
        if voice.mode == "continuation":
            prefix = voice.codes[:k].to(codes.device)[None]  # [1, K, L]
            codes = torch.cat([prefix, codes], dim=-1)
            skip = prefix.shape[-1] * self.frame_size
        with torch.inference_mode():
            audio = self.codec.decode(codes.to(self._codec_device())).audio[0]  # [S]
        return audio[skip:].float().cpu().numpy()

    def _codec_device(self) -> torch.device:
        try:
            return next(self.codec.parameters()).device
        except (AttributeError, StopIteration):
            return torch.device("cpu")

    def _stream_chunk(self, chunk, voice, cfg, max_new_frames, frames_per_chunk, first_chunk_frames, on_frame):
        """Generates one text chunk and yields decoded audio as frames arrive (codec streaming decode)."""
        grid = self._grid(chunk, voice)[None].to(self._device())
        cfg = _replace(cfg, max_new_frames=max_new_frames or frame_budget(chunk))
        prefix = voice.codes[: cfg.depth][None] if voice.mode == "continuation" else None  # [1, K, L]

        def steps():
            for step in iter_frames(self.model, grid, None, cfg):
                if on_frame is not None:
                    on_frame(step)
                yield step

        for audio in stream_audio(steps(), self.codec, first_chunk_frames, frames_per_chunk, prefix):
            yield audio.numpy()


_SAMPLING_KEYS = {
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "control_temperature",
    "control_top_p",
    "control_top_k",
    "control_tokens",
    "min_new_frames",
}


def _warn_unusual(length: torch.Tensor, finished: torch.Tensor, budget: int | None, chunk: str) -> None:
    """Logs generations that produced no audio or ran into the frame budget (a runaway)."""
    if int(length) == 0:
        logger.warning("the model ended without audio for %r (random tiny weights do this: try min_new_frames)", chunk)
    elif not bool(finished):
        logger.warning("generation hit the %s-frame budget for %r; the audio may be cut or rambling", budget, chunk)


def _replace(cfg: GenerationConfig, **changes) -> GenerationConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


def _config_kwargs(cfg: GenerationConfig) -> dict:
    """Flat keyword arguments of `CatTTSModel.generate` for a config."""
    return dict(
        depth=cfg.depth,
        max_new_frames=cfg.max_new_frames,
        min_new_frames=cfg.min_new_frames,
        do_sample=cfg.do_sample,
        temperature=cfg.audio.temperature,
        top_p=cfg.audio.top_p,
        top_k=cfg.audio.top_k,
        repetition_penalty=cfg.audio.repetition_penalty,
        control_temperature=cfg.control.temperature,
        control_top_p=cfg.control.top_p,
        control_top_k=cfg.control.top_k,
        control_tokens=cfg.control_tokens,
        seed=cfg.seed,
    )


def _load_tokenizer(auto_tokenizer: Any, directory: str | Path) -> Any:
    """The checkpoint's own tokenizer (never remote code); quiet about the custom model type in config.json."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return auto_tokenizer.from_pretrained(str(directory), trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(level)


def _looks_local(ref: str | Path) -> bool:
    s = str(ref)
    return isinstance(ref, Path) or s.startswith((".", "/", "~")) or s.count("/") != 1 or Path(s).exists()


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise InputError(f"dtype must be one of {sorted(names)}, got {dtype!r}")
    return names[dtype]


def _array_reference(ref: tuple, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Validates an in-memory `(samples, rate)` reference and brings it to mono float32 at `sample_rate`."""
    from cat_tts.audio import AudioError

    samples, rate = ref
    wav = np.asarray(samples, dtype=np.float32)
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {rate!r}")
    if wav.ndim == 2:
        wav = wav.mean(axis=0) if wav.shape[0] < wav.shape[1] else wav.mean(axis=1)
    if wav.ndim != 1 or wav.size == 0:
        raise AudioError(f"expected mono samples [S] or [channels, S], got shape {np.shape(samples)}")
    if not np.isfinite(wav).all():
        raise AudioError("reference samples contain NaN or infinity")
    if wav.size / rate > max_seconds:
        raise AudioError(f"reference is {wav.size / rate:.1f} s long; the limit is {max_seconds:g} s (trim it)")
    if float(np.abs(wav).max()) < 1e-4:
        raise AudioError("reference audio is silent")
    if rate != sample_rate:
        import soxr

        wav = soxr.resample(wav, rate, sample_rate).astype(np.float32)
    return wav
