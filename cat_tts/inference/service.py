"""`CatTTS`: text + a voice -> speech at depth K, on the continuous-batching engine.

Shapes: K generated layers, N layers of the grid (32), L reference frames, S samples (24 kHz).

Two prompt modes (the released checkpoint supports both):
* "clone": the reference clip sits in the user message; no transcript needed.
* "continuation": the reference transcript is put before the text and the reference audio becomes the start of the
  assistant's answer, which the model continues (the paper's inference mode). Chosen automatically when a transcript
  is given; can be forced with `mode=`.

Every call builds one `SpeechRequest` (validated once), plans its segments (`planning`), submits them to the engine
and joins or streams their audio (`output`). The segments of one text, the items of a batch and concurrent callers
are generated together in the engine's batch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from cat_tts.codec import CatCodec
from cat_tts.errors import InputError, ModelLoadError
from cat_tts.generation import Engine, EngineConfig, EngineError, GenerationConfig
from cat_tts.inference.decoding import DecodeBatcher
from cat_tts.inference.live import LiveEvent, LiveSession, SegmenterConfig
from cat_tts.inference.output import (
    Crossfader,
    SpeechStream,
    cancel_unfinished,
    counted,
    decode_frames,
    join,
    stream_pieces,
    warn_unusual,
)
from cat_tts.inference.planning import Segment, SynthesisConfig, item_request, plan_segments
from cat_tts.inference.request import Limits, SpeechRequest
from cat_tts.inference.voice import encode_voice, load_reference
from cat_tts.model import CatTTSModel
from cat_tts.text.prompt import PromptBuilder
from cat_tts.weights import (
    DEFAULT_CODEC,
    DEFAULT_MODEL,
    dtype_name,
    read_config_json,
    recorded_dtype,
    resolve_checkpoint,
    resolve_dtype,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]  # called with the number of frames just generated


class CatTTS:
    """Zero-shot voice cloning at a chosen depth K (bitrate 0.125 kbps x K), on a continuous-batching engine.

    Args:
        model: a loaded `CatTTSModel` (eval mode).
        codec: a loaded `CatCodec`.
        tokenizer: the model's text tokenizer.
        config: pipeline settings.
        engine: an `EngineConfig` (slots, cache rows, compilation), or an existing `Engine` over `model`.

    Concurrent callers share the engine's batch: call `start()` once (a background thread steps the engine), then
    call from any number of threads. Without `start()`, each call drives the engine itself.
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
        self.sample_rate = int(codec.sample_rate)
        self.frame_rate = float(codec.frame_rate)
        self.engine = engine if isinstance(engine, Engine) else Engine(model, engine, frame_rate=self.frame_rate)
        self._decoder: DecodeBatcher | None = None
        self._decoder_lock = threading.Lock()
        self.limits = Limits.of_engine(self.engine.config, self.n_vq, self.frame_rate, model.config.audio_vocab_size)

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
            tokenizer = _load_tokenizer(model_dir)
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
        """Compiles / captures the engine's frame now instead of at the first request."""
        self.engine.warmup()

    def close(self, grace_s: float = 0.0) -> None:
        """Stops admitting; lets in-flight requests finish for up to `grace_s` seconds, then cancels the rest."""
        self.engine.close(grace_s)
        if self._decoder is not None:
            self._decoder.close()

    @property
    def decoder(self) -> DecodeBatcher | None:
        """The batched streaming decoder of this service (one codec call for the pieces of all streams at a
        read-back), created at the first stream; None when the engine promises batch invariance (a batched decode
        rounds a request's audio differently beside different neighbours) or `decode_window_ms` is None."""
        if self.config.decode_window_ms is None or self.engine.config.batch_invariant:
            return None
        with self._decoder_lock:
            if self._decoder is None:
                self._decoder = DecodeBatcher(self.codec, window_s=self.config.decode_window_ms / 1000)
            return self._decoder

    # ------------------------------------------------------------------ requests
    def request(self, text: str, reference_audio: Any = None, config: GenerationConfig | None = None, **fields: Any):
        """A `SpeechRequest` from Python arguments (the request's field names; None = not given), checked against
        this model and engine.

        Raises:
            FieldError: naming the first bad field.
        """
        return SpeechRequest.from_fields(dict(fields, text=text, reference_audio=reference_audio), self.limits, config)

    def synthesize(
        self,
        text: str,
        reference_audio: Any = None,
        reference_text: str | None = None,
        *,
        on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None,
        wait: bool = True,
        **fields: Any,
    ) -> tuple[np.ndarray, int]:
        """Speaks `text` in the voice of `reference_audio` at depth K.

        Args:
            text: text to speak (any length; split into sentence segments generated together).
            reference_audio: a file path, `(samples, sample_rate)` (mono or [channels, S]), or the `[N, L]` codes
                returned by `encode_reference` (a voice encoded once and reused).
            reference_text: transcript of the reference; when given, continuation mode is used.
            on_frame: called with the number of frames generated since the last call (progress bars).
            config: generation settings the keyword fields override.
            wait: when the engine's queue is full, wait for room (False: raise `QueueFull`).
            **fields: any other field of `SpeechRequest`: `mode`, `instructions`, `language`, `duration` (seconds),
                and the generation settings (`depth` or `bitrate_kbps`, `seed`, `temperature`, `top_p`, `top_k`,
                `repetition_penalty`, `do_sample`, `min_new_frames`, `max_new_frames`, `control_*`, ...).

        Returns:
            `(audio float32 [S], sample_rate)`.

        Raises:
            FieldError: empty text, unusable reference, depth or sampling values out of range (names the field).
        """
        request = self.request(text, reference_audio, config, reference_text=reference_text, **fields)
        return self.synthesize_request(request, on_frame=on_frame, wait=wait)

    def stream(
        self,
        text: str,
        reference_audio: Any = None,
        reference_text: str | None = None,
        *,
        first_piece_frames: int = 1,
        piece_frames: int = 4,
        on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None,
        wait: bool = True,
        **fields: Any,
    ) -> SpeechStream:
        """Like `synthesize`, but yields audio while frames are being generated (see `stream_request`)."""
        request = self.request(text, reference_audio, config, reference_text=reference_text, **fields)
        return self.stream_request(request, first_piece_frames, piece_frames, on_frame, wait)

    def synthesize_batch(
        self, items: Iterable[dict | SpeechRequest], *, on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None, **fields: Any,
    ) -> list[tuple[np.ndarray, int]]:  # fmt: skip
        """Synthesises several utterances together (their segments share the engine's batch).

        Args:
            items: `SpeechRequest`s, or dicts of request fields (`text`, `reference_audio`, `reference_text`, ...).
            on_frame, config: as in `synthesize`.
            **fields: fields every dict item takes unless it gives its own. A common `seed` gives item i a seed
                derived from (seed, i) (an item with its own seed gives what `synthesize` gives with that seed).

        Returns:
            One `(audio, sample_rate)` per item, in order.

        Raises:
            FieldError: naming the item ("item 3: ...") whose input is unusable (nothing is generated then).
        """
        requests = [item_request(i, item, self.limits, config, fields) for i, item in enumerate(items)]
        results = []
        for _, result in self.iter_requests(requests, on_frame=on_frame):
            if isinstance(result, Exception):
                raise result
            results.append(result)
        return results

    def synthesize_iter(
        self, items: Iterable[dict | SpeechRequest], *, on_frame: ProgressCallback | None = None,
        config: GenerationConfig | None = None, **fields: Any,
    ) -> Iterator[tuple[int, tuple[np.ndarray, int] | Exception]]:  # fmt: skip
        """Like `synthesize_batch`, but yields `(index, result)` in order as soon as each item is done, and a bad item
        does not stop the others: its result is the exception (a `FieldError` naming the item for unusable input)."""

        def parsed() -> Iterator[SpeechRequest | Exception]:
            for i, item in enumerate(items):
                try:
                    yield item_request(i, item, self.limits, config, fields)
                except InputError as err:
                    yield err

        yield from self.iter_requests(parsed(), on_frame=on_frame)

    def live(
        self, fields: dict[str, Any], emit: Callable[[LiveEvent], None], segmenter: SegmenterConfig | None = None,
        **pieces: int,
    ) -> LiveSession:  # fmt: skip
        """A realtime session: text streamed in, audio streamed out (see `cat_tts.inference.live.LiveSession`).

        Args:
            fields: request fields except the text (voice, depth or "auto", sampling, seed, language, ...).
            emit: receives the session's events in order, from its worker thread.
            segmenter: a `SegmenterConfig` (how text is cut into segments).
            **pieces: `first_piece_frames`, `piece_frames`.
        """
        return LiveSession(self, fields, emit, segmenter, **pieces)

    # ------------------------------------------------------------------ the service
    def synthesize_request(
        self, request: SpeechRequest, on_frame: ProgressCallback | None = None, wait: bool = True
    ) -> tuple[np.ndarray, int]:
        """The audio of one validated request."""
        segments = self.plan(request)
        try:
            self.submit(segments, wait)
            audio = join([self._collect(s, on_frame) for s in segments], self.overlap)
            return audio, self.sample_rate
        finally:
            cancel_unfinished(segments)

    def stream_request(
        self,
        request: SpeechRequest,
        first_piece_frames: int = 1,
        piece_frames: int = 4,
        on_frame: ProgressCallback | None = None,
        wait: bool = True,
    ) -> SpeechStream:
        """The audio of one validated request while it is generated.

        The first audio comes after `first_piece_frames` frames, then every `piece_frames` frames; up to
        `config.lookahead_segments` segments are generated ahead. The concatenated pieces equal
        `synthesize_request(request)[0]` for a seeded request. The stream is lazy: an unusable reference and
        `QueueFull` are raised by the first `next()`; audio cut short by the engine raises (`EngineError`,
        `EngineClosed`). `close()` (from the iterating thread) or `cancel()` (from any thread) stops the generation
        and frees the engine's slots at once, queued or running.
        """
        if first_piece_frames < 1 or piece_frames < 1:
            raise InputError("first_piece_frames and piece_frames must be >= 1")
        stream = SpeechStream()
        stream._gen = self._stream(stream, request, first_piece_frames, piece_frames, on_frame, wait)
        return stream

    def iter_requests(
        self, requests: Iterable[SpeechRequest | Exception], on_frame: ProgressCallback | None = None
    ) -> Iterator[tuple[int, tuple[np.ndarray, int] | Exception]]:
        """Generates requests together and yields `(index, result)` in order as each is done; an unusable request's
        result is its error. The engine holds as many as it admits (slots + queue); the rest are submitted as earlier
        ones finish, so outputs can be written while later ones are still being generated."""
        encoded: dict[str, torch.Tensor] = {}  # a voice file shared by several requests is encoded once
        waiting = iter(enumerate(requests))
        inflight: list[tuple[int, list[Segment] | Exception]] = []
        try:
            while True:
                while not inflight or self.engine.can_admit():
                    nxt = next(waiting, None)
                    if nxt is None:
                        break
                    i, request = nxt
                    try:
                        if isinstance(request, Exception):
                            raise request
                        segments = self.plan(request, encoded)
                        self.submit(segments, wait=True)
                        inflight.append((i, segments))
                    except InputError as err:
                        inflight.append((i, err))
                if not inflight:
                    return
                i, segments = inflight.pop(0)
                if isinstance(segments, Exception):
                    yield i, segments
                    continue
                try:
                    yield i, (join([self._collect(s, on_frame) for s in segments], self.overlap), self.sample_rate)
                except EngineError as err:
                    yield i, err
        finally:
            for _, segments in inflight:
                if isinstance(segments, list):
                    cancel_unfinished(segments)

    def encode_reference(self, reference_audio: str | Path | tuple[np.ndarray, int]) -> torch.Tensor:
        """Loads, normalises and encodes a reference clip into `[N, L]` codes (all layers).

        Raises:
            FieldError: on `reference_audio` (missing, corrupt, silent, too short or too long).
        """
        return encode_voice(self.codec, load_reference(reference_audio, self.sample_rate, self.config), self.n_vq)

    # ------------------------------------------------------------------ internals
    def plan(self, request: SpeechRequest, encoded: dict[str, torch.Tensor] | None = None) -> list[Segment]:
        """The segments of a request (text split into sentences, prompts, seeds, frame estimates); the voice is
        encoded here unless it is stored codes (`encoded`: a cache of encoded clips by path)."""
        codes = self._voice_codes(request.reference_audio, encoded)
        return plan_segments(request, codes, self.prompts, self.frame_rate, self.config)

    def _stream(self, stream: SpeechStream, request: SpeechRequest, first_piece_frames: int, piece_frames: int,
                on_frame: ProgressCallback | None, wait: bool) -> Iterator[np.ndarray]:  # fmt: skip
        segments = self.plan(request)
        stream._segments = segments
        ahead = self.config.lookahead_segments
        fader = Crossfader(self.overlap)
        try:
            self.submit(segments[:ahead], wait)
            for i, segment in enumerate(segments):
                if stream.cancelled:
                    return
                if i + ahead < len(segments):
                    self.submit([segments[i + ahead]], wait=True)
                out = fader.start_segment()
                if out.size:
                    yield out
                prefix = segment.prompt.prefix_codes
                for piece in stream_pieces(self.codec, segment.request, prefix, first_piece_frames, piece_frames,
                                           on_frame, batcher=self.decoder):  # fmt: skip
                    if stream.cancelled:
                        return
                    out = fader.push(piece)
                    if out.size:
                        yield out
                warn_unusual(segment)
            out = fader.finish()
            if out.size:
                yield out
        finally:
            stream.cancel()

    def submit(self, segments: list[Segment], wait: bool = True) -> None:
        """Submits the segments not yet submitted to the engine (`wait`: when its queue is full, wait for room)."""
        for segment in segments:
            if segment.request is None:
                segment.request = self.engine.submit(segment.prompt.grid, segment.config, wait=wait,
                                                     estimate=segment.estimate)  # fmt: skip

    def _collect(self, segment: Segment, on_frame: ProgressCallback | None) -> np.ndarray:
        """Waits for one segment's frames and decodes them (prefix decode at the segment's K)."""
        for _ in counted(segment.request, on_frame):
            pass
        warn_unusual(segment)
        return decode_frames(self.codec, segment.request.frames[:, 1:].t()[None], segment.prompt.prefix_codes)

    def _voice_codes(self, reference: Any, encoded: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """Codes `[N, L]` of a request's voice: stored codes as they are (checked at construction), or encoded."""
        if reference is None or isinstance(reference, torch.Tensor):
            return None if reference is None else reference.long().cpu()
        key = str(reference) if isinstance(reference, (str, Path)) else None
        if encoded is not None and key in encoded:
            return encoded[key]
        codes = self.encode_reference(reference)
        if encoded is not None and key is not None:
            encoded[key] = codes
        return codes

    @property
    def overlap(self) -> int:
        """Samples of the cross-fade between segments."""
        return int(round(self.config.crossfade_ms * self.sample_rate / 1000.0))


def _load_tokenizer(directory: str | Path) -> Any:
    """The checkpoint's own tokenizer (never remote code); quiet about the custom model type in config.json."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(level)
