"""The CatTTS pipeline: text + a reference clip -> speech in that voice at depth K, on the inference engine.

Shapes: B batch, K generated layers, N layers of the grid (32), F frames, L reference frames, S samples (24 kHz).

Two prompt modes (the released checkpoint supports both):
* "clone": the reference clip sits in the user message; no transcript needed.
* "continuation": the reference transcript is put before the text and the reference audio becomes the
  start of the assistant's answer, which the model continues (the paper's inference mode). Chosen
  automatically when a transcript is given; can be forced with `mode=`.

Long text is cleaned and split into sentence chunks; every chunk is one engine request with the same voice prompt, so
the chunks of one text (and the texts of a batch, and concurrent callers) are generated together in the engine's
batch; the audio is joined with a short cross-fade. Streaming decodes each request's frames as they arrive (one codec
stream per request); its concatenated pieces equal the one-shot result.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cat_tts.audio import DEFAULT_SAMPLE_RATE
from cat_tts.errors import InputError, ModelLoadError
from cat_tts.generation import Engine, EngineConfig, EngineError, GenerationConfig, Request, stream_audio
from cat_tts.weights import DEFAULT_CODEC, DEFAULT_MODEL
from cat_tts.text.normalize import clean_text, split_sentences
from cat_tts.text.prompt import Prompt, PromptBuilder

logger = logging.getLogger(__name__)

Mode = Literal["clone", "continuation"]
ProgressCallback = Callable[[int], None]  # called with the number of frames just generated

__all__ = [
    "DEFAULT_CODEC",
    "DEFAULT_MODEL",
    "CatTTS",
    "InputError",
    "ModelLoadError",
    "SynthesisConfig",
    "frame_budget",
]


@dataclass(frozen=True)
class SynthesisConfig:
    """Pipeline settings that are not generation settings."""

    max_chunk_chars: int = 300  # text chunk budget (CJK characters count three), 10..10000
    crossfade_ms: float = 50.0  # cross-fade between text chunks, 0..1000 ms
    max_reference_seconds: float = 30.0  # longer reference clips are rejected, > 0
    min_reference_seconds: float = 0.5  # shorter reference clips are rejected, >= 0.08 (one frame)
    normalize_reference: bool = True  # loudness-normalise the reference to -20 dBFS (+-3 dB), as upstream
    lookahead_chunks: int = 2  # text chunks of one stream generated ahead of the one being played, >= 1

    def __post_init__(self) -> None:
        if not 10 <= self.max_chunk_chars <= 10000:
            raise InputError(f"max_chunk_chars must be in 10..10000, got {self.max_chunk_chars}")
        if not 0 <= self.crossfade_ms <= 1000:
            raise InputError(f"crossfade_ms must be in 0..1000, got {self.crossfade_ms}")
        if not self.max_reference_seconds > 0:
            raise InputError(f"max_reference_seconds must be > 0, got {self.max_reference_seconds}")
        if not 0.08 <= self.min_reference_seconds <= self.max_reference_seconds:
            raise InputError(
                f"min_reference_seconds must be in 0.08..max_reference_seconds, got {self.min_reference_seconds}"
            )
        if self.lookahead_chunks < 1:
            raise InputError(f"lookahead_chunks must be >= 1, got {self.lookahead_chunks}")


def frame_budget(text: str, frame_rate: float) -> int:
    """Default `max_new_frames` for one text chunk: about 3x a normal speaking time, plus 3 s.

    Latin-script characters count 0.2 s, CJK characters 0.6 s (normal speech is ~0.07 s and ~0.22 s).

    Args:
        text: the chunk.
        frame_rate: codec frames per second (`CatCodec.frame_rate`, 12.5 for CAT).
    """
    cjk = sum(1 for ch in text if "\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff")
    seconds = 3.0 + 0.2 * (len(text) - cjk) + 0.6 * cjk
    return int(math.ceil(frame_rate * seconds))


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
class _Job:
    """One text chunk to generate: its prompt and settings; `request` once submitted to the engine."""

    text: str
    prompt: Prompt  # grid [T, 1+N] in the model's layout, and the prefix frames it ends with (or None)
    config: GenerationConfig
    reference_codes: torch.Tensor  # [N, L] the voice (all layers)
    request: Request | None = None


class SpeechStream:
    """The audio of one `CatTTS.stream` call: an iterator of float32 pieces that can be cancelled from any thread.

    `cancel()` is thread-safe and immediate: the engine requests of every text chunk (queued or running) are
    cancelled and their slots freed; the iterator then ends. `close()` (the generator protocol, from the iterating
    thread) does the same and finishes the iterator.
    """

    def __init__(self) -> None:
        self._gen: Iterator[np.ndarray] | None = None
        self._jobs: list[_Job] = []
        self._cancelled = threading.Event()

    def __iter__(self) -> SpeechStream:
        return self

    def __next__(self) -> np.ndarray:
        if self._cancelled.is_set():
            self.close()
            raise StopIteration
        return next(self._gen)

    @property
    def cancelled(self) -> bool:
        """True once `cancel()` or `close()` ran."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stops the generation from any thread; the engine frees the slots at once."""
        self._cancelled.set()
        _cancel_unfinished(list(self._jobs))

    def close(self) -> None:
        """Cancels and finishes the iterator (call from the thread that iterates, or after it stopped)."""
        self.cancel()
        try:
            self._gen.close()
        except ValueError:  # "generator already executing": another thread is inside next(); cancel() suffices
            pass


class CatTTS:
    """Zero-shot voice cloning at a chosen depth K (bitrate 0.125 kbps x K), on a continuous-batching engine.

    Args:
        model: a loaded `CatTTSModel` (eval mode).
        codec: a loaded `CatCodec`.
        tokenizer: the model's text tokenizer.
        config: pipeline settings.
        engine: an `EngineConfig` (slots, cache rows, compilation), or an existing `Engine` over `model`.

    Concurrent callers share the engine's batch: call `start()` once (a background thread steps the engine), then
    `synthesize`/`stream` from any number of threads. Without `start()`, each call drives the engine itself.
    """

    def __init__(
        self,
        model: Any,
        codec: Any,
        tokenizer: Any,
        config: SynthesisConfig | None = None,
        engine: EngineConfig | Engine | None = None,
    ) -> None:
        self.model = model
        self.codec = codec
        self.config = config or SynthesisConfig()
        self.n_vq = int(model.config.n_vq)
        self.prompts = PromptBuilder.for_model(tokenizer, model.config)  # the layout the model was trained with
        self.sample_rate = int(getattr(codec, "sample_rate", DEFAULT_SAMPLE_RATE))
        self.frame_size = int(codec.frame_size)
        self.frame_rate = float(codec.frame_rate)
        self.engine = engine if isinstance(engine, Engine) else Engine(model, engine)

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = DEFAULT_MODEL,
        codec: str | Path = DEFAULT_CODEC,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        config: SynthesisConfig | None = None,
        engine: EngineConfig | None = None,
    ) -> CatTTS:
        """Loads the TTS model, its tokenizer and the codec from hub ids or local directories.

        Args:
            model: MOSS-TTS-Local-Transformer directory or hub id (with its tokenizer files).
            codec: MOSS-Audio-Tokenizer directory or hub id.
            device: "cpu", "cuda", ... (default: cuda when available).
            dtype: torch dtype or its name ("float32", "bfloat16", "float16", "auto"); default: bfloat16 on CUDA,
                float32 on the CPU. The codec runs in float32.
            config: pipeline settings.
            engine: engine settings (slots, cache rows, compilation).

        Raises:
            ModelLoadError: a directory is missing or the hub is unreachable (the message says how to pass
                local directories instead).
        """
        from transformers import AutoTokenizer

        from cat_tts.codec import CatCodec
        from cat_tts.weights import dtype_name, read_config_json, recorded_dtype, resolve_checkpoint, resolve_dtype
        from cat_tts.model import CatTTSModel

        try:
            device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as err:
            raise InputError(f"invalid device {device!r}: {err}") from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {str(device)!r} requested but CUDA is not available here; use --device cpu")
        model_dir = resolve_checkpoint(model, "model")  # ModelLoadError: missing, wrong kind, hub unreachable
        codec_dir = resolve_checkpoint(codec, "codec")
        dtype = resolve_dtype(dtype, device, recorded_dtype(read_config_json(model_dir)), kind="model")
        tts = CatTTSModel.from_pretrained(model_dir, dtype=dtype, device=device)
        cat = CatCodec.from_pretrained(codec_dir, device=device)
        try:
            tokenizer = _load_tokenizer(AutoTokenizer, model_dir)
        except (OSError, ValueError) as err:
            raise ModelLoadError(
                f"{model_dir} holds no usable tokenizer ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                "a model directory needs the tokenizer files next to config.json (tokenizer.json, "
                "tokenizer_config.json, chat_template.jinja)"
            ) from err
        logger.info("model %s in %s on %s; codec %s", model_dir, dtype_name(dtype), device, codec_dir)
        return cls(tts.eval(), cat.eval(), tokenizer, config, engine)

    # ------------------------------------------------------------------ engine lifecycle

    def start(self) -> None:
        """Starts the engine's background thread so that concurrent callers share one batch (idempotent)."""
        self.engine.start()

    def warmup(self) -> None:
        """Compiles / captures the engine's frame step now instead of at the first request."""
        self.engine.warmup()

    def close(self, grace_s: float = 0.0) -> None:
        """Stops admitting; lets in-flight requests finish for up to `grace_s` seconds, then cancels the rest."""
        self.engine.close(grace_s)

    # ------------------------------------------------------------------ public API

    def synthesize(
        self,
        text: str,
        reference_audio: str | Path | tuple[np.ndarray, int] | torch.Tensor,
        reference_text: str | None = None,
        depth: int | None = None,
        seed: int | None = None,
        mode: Mode | None = None,
        max_new_frames: int | None = None,
        instructions: str | None = None,
        on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None,
        wait: bool = True,
        **settings: Any,
    ) -> tuple[np.ndarray, int]:
        """Speaks `text` in the voice of `reference_audio` at depth K.

        Args:
            text: text to speak (any length; split into sentence chunks generated together).
            reference_audio: a file path, `(samples, sample_rate)` (mono or [channels, S]), or the `[N, L]` codes
                returned by `encode_reference` (a voice encoded once and reused).
            reference_text: transcript of the reference; when given, continuation mode is used.
            depth: K in 1..N (bitrate 0.125 kbps x K); None = all N layers.
            seed: seed for reproducible sampling (chunk i uses seed + i).
            mode: force "clone" or "continuation" (continuation needs `reference_text`).
            max_new_frames: frame budget per chunk (default: from the chunk's length).
            instructions: a style instruction for the prompt's instruction field (chat layout).
            on_frame: called with the number of frames generated since the last call (progress bars).
            config: generation settings; `depth`, `seed`, `max_new_frames` and keyword `settings` (`do_sample`,
                `temperature`, `top_p`, `top_k`, `repetition_penalty`, `control_*`, `min_new_frames`) replace its
                fields.
            wait: when the engine's queue is full, wait for room (False: raise `QueueFull`).

        Returns:
            `(audio float32 [S], sample_rate)`.

        Raises:
            InputError: empty text, unusable reference, depth or sampling values out of range.
        """
        jobs = self._jobs(text, reference_audio, reference_text, depth, seed, mode, max_new_frames, instructions,
                          config, settings)  # fmt: skip
        try:
            self._submit(jobs, wait)
            return self._join([self._collect(job, on_frame) for job in jobs]), self.sample_rate
        finally:
            _cancel_unfinished(jobs)

    def stream(
        self,
        text: str,
        reference_audio: str | Path | tuple[np.ndarray, int] | torch.Tensor,
        reference_text: str | None = None,
        depth: int | None = None,
        seed: int | None = None,
        mode: Mode | None = None,
        max_new_frames: int | None = None,
        instructions: str | None = None,
        frames_per_chunk: int = 4,
        first_chunk_frames: int = 1,
        on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None,
        wait: bool = True,
        **settings: Any,
    ) -> SpeechStream:
        """Like `synthesize`, but yields audio while frames are being generated.

        The first audio comes after `first_chunk_frames` frames, then every `frames_per_chunk` frames; up to
        `config.lookahead_chunks` text chunks are generated ahead. The concatenation of the yielded arrays equals
        `synthesize(...)[0]` for the same arguments and seed. The stream is lazy: input errors and `QueueFull`
        are raised by the first `next()`. `close()` (from the iterating thread) or `cancel()` (from any thread)
        stops the generation and frees the engine's slots at once, queued or running.

        Returns:
            A `SpeechStream`: an iterator of float32 `[s]` pieces at `self.sample_rate`.
        """
        if frames_per_chunk < 1 or first_chunk_frames < 1:
            raise InputError("frames_per_chunk and first_chunk_frames must be >= 1")
        stream = SpeechStream()
        stream._gen = self._stream(
            stream, text, reference_audio, reference_text, depth, seed, mode, max_new_frames, instructions,
            frames_per_chunk, first_chunk_frames, on_frame, config, wait, settings,
        )  # fmt: skip
        return stream

    def _stream(
        self, stream, text, reference_audio, reference_text, depth, seed, mode, max_new_frames, instructions,
        frames_per_chunk, first_chunk_frames, on_frame, config, wait, settings,
    ) -> Iterator[np.ndarray]:  # fmt: skip
        jobs = self._jobs(text, reference_audio, reference_text, depth, seed, mode, max_new_frames, instructions,
                          config, settings)  # fmt: skip
        stream._jobs = jobs
        ahead = self.config.lookahead_chunks
        fader = _Crossfader(self._overlap())
        try:
            self._submit(jobs[:ahead], wait)
            for i, job in enumerate(jobs):
                if stream.cancelled:
                    return
                if i + ahead < len(jobs):
                    self._submit([jobs[i + ahead]], wait=True)
                out = fader.start_segment()
                if out.size:
                    yield out
                for piece in self._stream_job(job, frames_per_chunk, first_chunk_frames, on_frame):
                    if stream.cancelled:
                        return
                    out = fader.push(piece)
                    if out.size:
                        yield out
            out = fader.finish()
            if out.size:
                yield out
        finally:
            stream.cancel()

    def synthesize_batch(
        self,
        items: Sequence[dict],
        depth: int | None = None,
        seed: int | None = None,
        max_new_frames: int | None = None,
        on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None,
        **settings: Any,
    ) -> list[tuple[np.ndarray, int]]:
        """Synthesises several utterances together (their text chunks share the engine's batch).

        Args:
            items: dicts with `text`, `reference_audio` and optional `reference_text`, `mode`, `seed`,
                `instructions`.
            depth, max_new_frames, config, settings: as in `synthesize`.
            seed: item i uses `item["seed"]` if given, else seed + i (so an item gives the same audio as
                `synthesize(..., seed=...)` with that seed, alone or in a batch).

        Returns:
            One `(audio, sample_rate)` per item, in order.

        Raises:
            InputError: naming the item ("item 3: ...") whose input is unusable (nothing is generated then).
        """
        items = list(items)
        for i, item in enumerate(items):  # every item is checked before anything is generated
            self._check_item(i, item)
        results = []
        for i, result in self.synthesize_iter(items, depth, seed, max_new_frames, on_frame, config, **settings):
            if isinstance(result, Exception):
                if isinstance(result, InputError):
                    raise InputError(f"item {i}: {result}") from result
                raise result
            results.append(result)
        return results

    def synthesize_iter(
        self,
        items: Sequence[dict],
        depth: int | None = None,
        seed: int | None = None,
        max_new_frames: int | None = None,
        on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None,
        **settings: Any,
    ) -> Iterator[tuple[int, tuple[np.ndarray, int] | Exception]]:
        """Like `synthesize_batch`, but yields `(index, result)` in order as soon as each item is done, and a bad
        item does not stop the others: its result is the exception (an `InputError` for unusable input).

        The engine holds as many items as it admits (slots + queue); the rest are submitted as earlier ones finish,
        so outputs can be written while later items are still being generated.
        """
        encoded: dict[str, torch.Tensor] = {}  # reference path -> codes: a shared voice is encoded once
        queue = list(enumerate(items))
        inflight: list[tuple[int, list[_Job] | Exception]] = []
        try:
            while queue or inflight:
                while queue and (not inflight or self.engine.can_admit()):
                    i, item = queue.pop(0)
                    try:
                        jobs = self._item_jobs(i, item, encoded, depth, seed, max_new_frames, config, settings)
                        self._submit(jobs, wait=True)
                        inflight.append((i, jobs))
                    except InputError as err:
                        inflight.append((i, err))
                i, jobs = inflight.pop(0)
                if isinstance(jobs, Exception):
                    yield i, jobs
                    continue
                try:
                    audio = self._join([self._collect(job, on_frame) for job in jobs])
                    yield i, (audio, self.sample_rate)
                except EngineError as err:
                    yield i, err
        finally:
            for _, jobs in inflight:
                if isinstance(jobs, list):
                    _cancel_unfinished(jobs)

    def _check_item(self, i: int, item: Any) -> None:
        if not isinstance(item, dict) or "text" not in item or "reference_audio" not in item:
            raise InputError(f"item {i} must be a dict with 'text' and 'reference_audio'")

    def _item_jobs(self, i, item, encoded, depth, seed, max_new_frames, config, settings) -> list[_Job]:
        self._check_item(i, item)
        ref = item["reference_audio"]
        item_seed = item.get("seed", None if seed is None else seed + i)
        codes = encoded.get(str(ref)) if isinstance(ref, (str, Path)) else None
        jobs = self._jobs(item["text"], codes if codes is not None else ref, item.get("reference_text"), depth,
                          item_seed, item.get("mode"), max_new_frames, item.get("instructions"), config,
                          settings)  # fmt: skip
        if isinstance(ref, (str, Path)):
            encoded[str(ref)] = jobs[0].reference_codes
        return jobs

    def encode_reference(self, reference_audio: str | Path | tuple[np.ndarray, int]) -> torch.Tensor:
        """Loads, normalises and encodes a reference clip into `[N, L]` codes (all layers)."""
        wav = self._load_reference(reference_audio)
        x = torch.from_numpy(wav)[None].to(self._codec_device())  # [1, S]
        with torch.inference_mode():
            enc = self.codec.encode(x, num_layers=self.n_vq)
        length = int(enc.lengths[0]) if getattr(enc, "lengths", None) is not None else enc.codes.shape[-1]
        return enc.codes[0, :, :length].cpu()  # [N, L]

    def generation_config(
        self, depth: int | None = None, seed: int | None = None, config: GenerationConfig | None = None, **settings
    ) -> GenerationConfig:
        """The validated `GenerationConfig` for these arguments (InputError names a bad field)."""
        try:
            cfg = (config or GenerationConfig()).with_overrides(depth=depth, seed=seed, **settings)
            cfg.check_model(self.n_vq)
        except (TypeError, ValueError) as err:
            raise InputError(str(err)) from err
        return cfg

    # ------------------------------------------------------------------ internals

    def _jobs(self, text, reference_audio, reference_text, depth, seed, mode, max_new_frames, instructions, config,
              settings) -> list[_Job]:  # fmt: skip
        if not isinstance(text, str):
            raise InputError(f"text must be a string, got {type(text).__name__}")
        cleaned = clean_text(text)
        if not cleaned:
            raise InputError("text is empty (after removing whitespace and control characters)")
        if mode not in (None, "clone", "continuation"):
            raise InputError(f"mode must be 'clone' or 'continuation', got {mode!r}")
        if reference_text is not None:
            if not isinstance(reference_text, str):
                raise InputError(f"reference_text must be a string, got {type(reference_text).__name__}")
            reference_text = clean_text(reference_text).replace("\n\n", " ") or None
        if instructions is not None and not isinstance(instructions, str):
            raise InputError(f"instructions must be a string, got {type(instructions).__name__}")
        if mode == "continuation" and reference_text is None:
            raise InputError("continuation mode needs the reference transcript (reference_text)")
        base = self.generation_config(depth, None, config, max_new_frames=max_new_frames, **settings)
        if seed is None:
            seed = base.seed
        fields = {} if not instructions else {"instruction": instructions}
        codes = self._voice_codes(reference_audio)  # after the cheap checks
        jobs = []
        for i, chunk in enumerate(split_sentences(cleaned, self.config.max_chunk_chars)):
            prompt = self.prompts.generation_prompt(chunk, codes, reference_text, mode, **fields)
            cfg = base.with_overrides(seed=None if seed is None else seed + i)
            jobs.append(_Job(chunk, prompt, cfg, codes))
        return jobs

    def _submit(self, jobs: list[_Job], wait: bool) -> None:
        for job in jobs:
            if job.request is not None:
                continue
            grid = job.prompt.grid
            budget = job.config.max_new_frames
            if budget is None:  # from the text, within what a slot holds
                room = self.engine.config.max_rows - self.engine.config.sync_every - grid.shape[0]
                budget = max(1, min(frame_budget(job.text, self.frame_rate), room))
            job.request = self.engine.submit(grid, job.config, max_new_frames=budget, wait=wait)

    def _collect(self, job: _Job, on_frame: ProgressCallback | None) -> np.ndarray:
        """Waits for one job's frames and decodes them (prefix decode at the job's K)."""
        for _ in _frame_chunks(job.request, on_frame):
            pass
        _warn_unusual(job.request, job.text)
        return self._decode(job.request.frames[:, 1:].t()[None], job.prompt.prefix_codes)  # [1, K, F]

    def _stream_job(self, job: _Job, frames_per_chunk: int, first_chunk_frames: int, on_frame) -> Iterator[np.ndarray]:
        request = job.request
        prefix = None if job.prompt.prefix_codes is None else job.prompt.prefix_codes[: request.depth]  # [K, L]
        chunks = _frame_chunks(request, on_frame)
        for audio in stream_audio(chunks, self.codec, first_chunk_frames, frames_per_chunk, prefix):
            yield audio.numpy()
        _warn_unusual(request, job.text)

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

    def _overlap(self) -> int:
        return int(round(self.config.crossfade_ms * self.sample_rate / 1000.0))

    def _join(self, audios: list[np.ndarray]) -> np.ndarray:
        fader = _Crossfader(self._overlap())
        out = []
        for audio in audios:
            out += [fader.start_segment(), fader.push(audio)]
        out.append(fader.finish())
        return np.concatenate(out).astype(np.float32)

    def _load_reference(self, reference_audio) -> np.ndarray:
        from cat_tts.audio import AudioError, audio_from_array, load_audio, loudness_normalize

        cfg = self.config
        try:
            if isinstance(reference_audio, (str, Path)):
                wav = load_audio(reference_audio, sample_rate=self.sample_rate, max_seconds=cfg.max_reference_seconds)
            elif isinstance(reference_audio, tuple) and len(reference_audio) == 2:
                samples, rate = reference_audio
                wav = audio_from_array(samples, rate, self.sample_rate, cfg.max_reference_seconds)
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

    def _decode(self, codes: torch.Tensor, prefix_codes: torch.Tensor | None) -> np.ndarray:
        """Prefix-decodes `[1, K, F]` codes; a prompt that ends with audio (`prefix_codes [N, L]`) is decoded first
        for codec context and its samples dropped."""
        k = codes.shape[1]
        if codes.shape[-1] == 0:
            return np.zeros(0, dtype=np.float32)
        skip = 0
        if prefix_codes is not None:
            prefix = prefix_codes[:k][None]  # [1, K, L]
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


def _cancel_unfinished(jobs: list[_Job]) -> None:
    """Cancels the engine requests of `jobs` that are still queued or running (their slots are freed)."""
    for job in jobs:
        if job.request is not None and not job.request.done:
            job.request.cancel()


def _frame_chunks(request: Request, on_frame: ProgressCallback | None) -> Iterator[torch.Tensor]:
    """The request's frame chunks as they arrive, reporting each chunk's frame count to `on_frame`."""
    for chunk in request.chunks():
        if on_frame is not None:
            on_frame(chunk.shape[0])
        yield chunk


def _warn_unusual(request: Request, chunk: str) -> None:
    """Logs generations that produced no audio or ran into the frame budget (a runaway)."""
    if request.finish_reason not in ("audio_end", "budget"):
        return
    if request.num_frames == 0:
        logger.warning("the model ended without audio for %r (random tiny weights do this: try min_new_frames)", chunk)
    elif request.finish_reason == "budget":
        logger.warning(
            "generation hit the %s-frame budget for %r; the audio may be cut or rambling", request.budget, chunk
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
