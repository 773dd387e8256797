"""CatCodec: the CAT / MOSS-Audio-Tokenizer codec — encode, decode at any depth, exact streaming.

Shapes: B batch, S samples (24 kHz mono), T frames (12.5 Hz, 1920 samples each), K quantizer layers
(1..32), C channels.

    waveform [B, S] -> encoder stages (patch 240, transformer, patch 2, ...) -> latent [B, C, T]
        -> residual LFQ -> codes [B, K, T]
    codes [B, k, T] -> sum of the first k layers' vectors -> decoder stages -> waveform [B, T * 1920]

Frame counts use floor division: a trailing partial frame gets no code. Every transformer is causal with a
sliding window of `context_duration` seconds at its own rate, offline and streaming alike, so streaming
(`decode_step`, `encode_step`) with per-stage KV caches of `window - 1` steps reproduces the one-shot
functions for any chunk sizes.

The rows of a streaming state are independent streams: one `decode_step` may advance any subset of them (`rows`),
each from its own position, by its own number of frames (`lengths`) and at its own depth (`depths`), which is how
many requests' audio is decoded in one call (`cat_tts.inference.decoding`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cat_tts.codec.checkpoint import load_weights, to_official_state_dict
from cat_tts.codec.config import CodecConfig, PatchConfig
from cat_tts.codec.patch import Patch
from cat_tts.codec.quantizer import ResidualLFQ
from cat_tts.codec.stream import CodecStreamState, check_per_row, check_rows, zero_padding
from cat_tts.codec.transformer import CodecTransformer, StageState
from cat_tts.weights import resolve_checkpoint, resolve_dtype

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"

# One-shot calls on more frames than this run the stages piece by piece through a streaming state. The function
# is the same (the sliding window bounds what any step sees), but attention memory grows linearly with the
# length instead of quadratically (a 60 s clip would otherwise need [6000 x 6000] scores per head at 100 Hz).
DEFAULT_MAX_PIECE_FRAMES = 375  # 30 s at 12.5 Hz


@dataclass
class CodecOutput:
    """Result of `CatCodec.encode` (codes) or `CatCodec.decode` (audio)."""

    lengths: torch.Tensor  # [B] int64: valid frames (encode) or valid samples (decode) per item
    codes: torch.Tensor | None = None  # [B, K, T] int64 (encode)
    audio: torch.Tensor | None = None  # [B, S] float32 at the codec's sample rate (decode)


class CatCodec(nn.Module):
    """The CAT codec (MOSS-Audio-Tokenizer), built from a `CodecConfig`.

    Args:
        config: architecture (use `CatCodec.from_pretrained` to build it from a checkpoint's config.json).

    Attributes:
        sample_rate: waveform rate in Hz (24000).
        frame_size: samples per codec frame (1920).
        frame_rate: frames per second (12.5).
        num_layers: RVQ layers (32).
        codebook_size: codes per layer (1024).
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        enc_ctx, dec_ctx = config.contexts()
        self.encoder = nn.ModuleList(
            Patch(s, fold=True) if isinstance(s, PatchConfig) else CodecTransformer(s, enc_ctx[i])
            for i, s in enumerate(config.encoder)
        )
        self.quantizer = ResidualLFQ(config.quantizer)
        self.decoder = nn.ModuleList(
            Patch(s, fold=False) if isinstance(s, PatchConfig) else CodecTransformer(s, dec_ctx[i])
            for i, s in enumerate(config.decoder)
        )
        self.max_piece_frames = DEFAULT_MAX_PIECE_FRAMES  # see DEFAULT_MAX_PIECE_FRAMES; tests lower it

    # ---- basic facts ----
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_size(self) -> int:
        return self.config.downsample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def num_layers(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def device(self) -> torch.device:
        return self.quantizer.quantizers[0].codebook.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the transformer stages (the quantizer always runs in float32)."""
        for stage in self.decoder:
            if isinstance(stage, CodecTransformer):
                return stage.layers[0].linear1.weight.dtype
        return torch.float32

    def set_dtype(self, dtype: torch.dtype) -> CatCodec:
        """Cast the transformer stages to `dtype` (e.g. torch.bfloat16); the quantizer stays float32."""
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        self.encoder.to(dtype)
        self.decoder.to(dtype)
        self.quantizer.float()
        return self

    # ---- internals ----
    def _encode_latent(self, wav: torch.Tensor) -> torch.Tensor:
        """One-shot encoder over [B, T * frame_size], in pieces of at most `max_piece_frames` -> [B, C, T]."""
        piece = self.max_piece_frames * self.frame_size
        if wav.shape[1] <= piece:
            return self._run_encoder(wav)
        states = self.new_stream_state(wav.shape[0]).encoder
        return torch.cat([self._run_encoder(wav[:, i : i + piece], states) for i in range(0, wav.shape[1], piece)], 2)

    def _decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """One-shot decoder over [B, C, T], in pieces of at most `max_piece_frames` -> [B, T * frame_size]."""
        piece = self.max_piece_frames
        if latent.shape[2] <= piece:
            return self._run_decoder(latent)
        states = self.new_stream_state(latent.shape[0]).decoder
        return torch.cat(
            [self._run_decoder(latent[:, :, i : i + piece], states) for i in range(0, latent.shape[2], piece)], 1
        )

    def _run_encoder(self, wav: torch.Tensor, states: list[StageState | None] | None = None) -> torch.Tensor:
        """[B, T * frame_size] -> latent [B, C, T]."""
        x = wav.unsqueeze(1)  # [B, 1, S]
        for i, stage in enumerate(self.encoder):
            x = stage(x) if isinstance(stage, Patch) else stage(x, None if states is None else states[i])
        return x

    def _run_decoder(
        self,
        latent: torch.Tensor,
        states: list[StageState | None] | None = None,
        rows: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Latent [R, C, T] -> waveform [R, T * frame_size] float32 (streaming: `rows`/`lengths` as in decode_step)."""
        x = latent
        for i, stage in enumerate(self.decoder):
            if isinstance(stage, Patch):
                x = stage(x)
            elif states is None:
                x = stage(x)
            else:
                steps = None if lengths is None else lengths * (x.shape[2] // latent.shape[2])  # [R] at this rate
                x = stage(x, states[i], rows, steps)
        assert x.shape[1] == 1, f"decoder produced {tuple(x.shape)}, expected one channel"
        return x[:, 0].float()

    def _check_num_layers(self, num_layers: int | None) -> int:
        if num_layers is None:
            return self.num_layers
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers must be in 1..{self.num_layers}, got {num_layers}")
        return int(num_layers)

    def _as_wave_batch(self, wav: torch.Tensor) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor):
            wav = torch.as_tensor(wav)
        if wav.dim() == 3 and wav.shape[1] == 1:
            wav = wav[:, 0]
        elif wav.dim() == 1:
            wav = wav.unsqueeze(0)
        if wav.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, S] (mono), got shape {tuple(wav.shape)}")
        if not wav.dtype.is_floating_point:
            raise ValueError(f"expected a float waveform, got dtype {wav.dtype}")
        return wav.to(device=self.device, dtype=self.dtype)

    @staticmethod
    def _check_code_shape(codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"expected codes [B, K, T], got {shape}")

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_code_shape(codes)
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.num_layers:
            raise ValueError(f"codes have {codes.shape[1]} layers (axis 1 of [B, K, T]); allowed 1..{self.num_layers}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"codes must lie in 0..{self.codebook_size - 1}, got values in {int(codes.min())}..{int(codes.max())}"
                " (strip pad codes and the control channel before decoding)"
            )
        return codes.to(device=self.device, dtype=torch.long)

    # ---- one-shot API ----
    @torch.no_grad()
    def encode(
        self, wav: torch.Tensor, lengths: torch.Tensor | None = None, num_layers: int | None = None
    ) -> CodecOutput:
        """Encode 24 kHz mono waveforms to codes.

        Args:
            wav: [B, S] float (a [S] or [B, 1, S] tensor is accepted too), at `sample_rate`.
            lengths: [B] valid samples per item (right padding); None = all S valid.
            num_layers: how many RVQ layers to compute (1..32, default all); equals the first
                `num_layers` layers of the full encoding.

        Returns:
            CodecOutput with `.codes` [B, K, T] int64, T = max(lengths) // frame_size, and `.lengths` [B] =
            lengths // frame_size (a trailing partial frame is dropped). Codes past an item's length are
            meaningless; over its valid frames they equal the item's unpadded encoding.

        Raises:
            ValueError: bad shapes, `num_layers` out of range, or no item reaching one full frame.
        """
        k = self._check_num_layers(num_layers)
        wav = self._as_wave_batch(wav)
        b, s = wav.shape
        if lengths is None:
            lengths = torch.full((b,), s, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).to(self.device)
        if lengths.shape != (b,) or int(lengths.min()) < 0 or int(lengths.max()) > s:
            raise ValueError(f"lengths must be [B]={b} values in 0..{s}, got {lengths.tolist()}")
        frame_lengths = lengths // self.frame_size
        t = int(frame_lengths.max())
        if t == 0:
            raise ValueError(
                f"audio too short: at least {self.frame_size} samples ({self.frame_size / self.sample_rate:.2f} s) "
                f"are needed for one codec frame, got {int(lengths.max())}"
            )
        latent = self._encode_latent(wav[:, : t * self.frame_size])  # [B, C, T]
        codes = self.quantizer.encode(latent, frame_lengths, k)  # [B, K, T]
        return CodecOutput(codes=codes, lengths=frame_lengths)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> CodecOutput:
        """Decode codes of the first k layers (prefix decoding; absent layers contribute nothing).

        Args:
            codes: [B, k, T] integer codes in 0..codebook_size-1, 1 <= k <= 32 (past `lengths`, any value,
                e.g. a pad code, is accepted and ignored).
            lengths: [B] valid frames per item; None = all T.

        Returns:
            CodecOutput with `.audio` [B, T * frame_size] float32 (zero past each item's length) and
            `.lengths` [B] = lengths * frame_size.
        """
        if lengths is not None and isinstance(codes, torch.Tensor) and codes.dim() == 3:
            # Frames past an item's length are padding (e.g. the pad code 1024): never looked at.
            t = codes.shape[2]
            lengths = torch.as_tensor(lengths, dtype=torch.long).to(codes.device)
            if lengths.shape != (codes.shape[0],) or (
                lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > t)
            ):
                raise ValueError(f"lengths must be [B]={codes.shape[0]} values in 0..{t}, got {lengths.tolist()}")
            valid = torch.arange(t, device=codes.device).view(1, 1, t) < lengths.view(-1, 1, 1)
            codes = torch.where(valid, codes, torch.zeros_like(codes))
        codes = self._check_codes(codes)
        b, _, t = codes.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        lengths = lengths.to(self.device)
        latent = self.quantizer.decode(codes)  # [B, C, T] float32
        audio = self._decode_latent(latent)  # [B, T * frame_size]
        sample_lengths = lengths * self.frame_size
        # Zero the samples past each item's length (causality keeps the valid part unaffected by the padding).
        valid = torch.arange(audio.shape[1], device=audio.device).view(1, -1) < sample_lengths.view(-1, 1)
        return CodecOutput(audio=audio * valid, lengths=sample_lengths)

    # ---- streaming API ----
    def new_stream_state(self, batch_size: int = 1) -> CodecStreamState:
        """A fresh state for `encode_step` / `decode_step` over `batch_size` streams advancing together."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return CodecStreamState(
            batch_size=batch_size,
            encoder=[None if isinstance(s, Patch) else s.new_state(batch_size) for s in self.encoder],
            decoder=[None if isinstance(s, Patch) else s.new_state(batch_size) for s in self.decoder],
            pending=torch.zeros(batch_size, 0, dtype=self.dtype, device=self.device),
            decoded=torch.zeros(batch_size, dtype=torch.long),
        )

    @torch.no_grad()
    def decode_step(
        self,
        codes: torch.Tensor,
        state: CodecStreamState,
        rows: list[int] | torch.Tensor | None = None,
        lengths: list[int] | torch.Tensor | None = None,
        depths: list[int] | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode the next frames of some or all streams of a state, each from its own position.

        Args:
            codes: [R, k, t] the next t >= 0 frames of R streams (k may be any 1..32; it applies to these frames).
            state: the streams' state (updated in place).
            rows: [R] distinct rows of `state` that the codes continue; None = every row in order (R = B).
            lengths: [R] frames of each row in `codes` (0..t; the frames after them are padding: ignored, any
                value accepted, and the row advances by its own length); None = t for every row.
            depths: [R] layers of each row (1..k; the layers after them are padding: ignored, any value
                accepted, i.e. prefix decoding at each row's own depth); None = k for every row.

        Returns:
            [R, t * frame_size] float32 audio, zero past each row's length; concatenated over calls, a row's audio
            equals `decode` of all its frames (at its depth), whatever the other rows in the calls were.

        Raises:
            ValueError: bad shapes or values (the message names the argument).
        """
        self._check_code_shape(codes)
        r, k, t = codes.shape
        index = check_rows(rows, r, state.batch_size)  # [R] CPU, or None for all rows
        steps = check_per_row(lengths, r, 0, t, "lengths")
        layers = check_per_row(depths, r, 1, k, "depths")
        codes = self._check_codes(zero_padding(codes, steps, layers))
        if t == 0 or r == 0:
            return torch.zeros(r, t * self.frame_size, device=self.device)
        device_rows = None if index is None else index.to(self.device)
        device_steps = None if steps is None else steps.to(self.device)
        latent = self.quantizer.decode(codes, None if layers is None else layers.to(self.device))  # [R, C, t]
        audio = self._run_decoder(latent, state.decoder, device_rows, device_steps)  # [R, t * frame_size]
        advance = torch.full((r,), t, dtype=torch.long) if steps is None else steps
        # Out of place, like the offsets: a state made in inference mode stays usable outside it.
        state.decoded = state.decoded + advance if index is None else state.decoded.index_add(0, index, advance)
        if steps is not None:  # zero the padding's samples, as `decode` does past an item's length
            samples = device_steps.view(r, 1) * self.frame_size
            audio = audio * (torch.arange(audio.shape[1], device=audio.device).view(1, -1) < samples)
        return audio

    @torch.no_grad()
    def encode_step(self, wav: torch.Tensor, state: CodecStreamState, num_layers: int | None = None) -> torch.Tensor:
        """Encode the next samples of a live stream; frames are emitted as soon as they are complete.

        Args:
            wav: [B, s] the next s >= 0 samples (any s; an incomplete frame waits in the state).
            state: the stream's state (updated in place).
            num_layers: RVQ layers to compute (default all).

        Returns:
            [B, K, t] int64 codes of the frames completed by this call (t may be 0); concatenated over calls
            they equal `encode` of all samples received.
        """
        k = self._check_num_layers(num_layers)
        wav = self._as_wave_batch(wav)
        if wav.shape[0] != state.batch_size:
            raise ValueError(f"state is for batch {state.batch_size}, got audio for batch {wav.shape[0]}")
        samples = torch.cat([state.pending.to(wav), wav], dim=1)  # [B, pending + s]
        t = samples.shape[1] // self.frame_size
        state.pending = samples[:, t * self.frame_size :]
        if t == 0:
            return torch.zeros(state.batch_size, k, 0, dtype=torch.long, device=self.device)
        latent = self._run_encoder(samples[:, : t * self.frame_size], state.encoder)  # [B, C, t]
        state.frames_encoded += t
        return self.quantizer.encode(latent, None, k)

    def decode_stream(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Decode an iterable of code chunks [B, k, t] (any sizes) into audio chunks [B, t * frame_size]."""
        state = None
        for chunk in chunks:
            if state is None:
                state = self.new_stream_state(chunk.shape[0])
            yield self.decode_step(chunk, state)

    def encode_stream(self, chunks: Iterable[torch.Tensor], num_layers: int | None = None) -> Iterator[torch.Tensor]:
        """Encode an iterable of waveform chunks [B, s] (any sizes) into code chunks [B, K, t] (t may be 0)."""
        state = None
        for chunk in chunks:
            if state is None:
                state = self.new_stream_state(chunk.shape[0] if chunk.dim() > 1 else 1)
            yield self.encode_step(chunk, state, num_layers)

    # ---- checkpoints ----
    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> CatCodec:
        """Load a MOSS-Audio-Tokenizer checkpoint (config.json + model.safetensors [+ index]).

        The module stack is built from the checkpoint's own config.json; weights load strictly (both the
        `parametrizations.weight.original0/1` and `weight_g`/`weight_v` weight-norm spellings are accepted),
        and names and shapes are checked before any weight is read.

        Memory: in float32 on the CPU the parameters are memory-mapped views of the file (nothing is copied;
        pages are read when first used). Anywhere else (a GPU, or another dtype) the codec is created on
        `device` in its final dtypes and filled tensor by tensor, so no full host copy is ever held.

        Args:
            path_or_hub_id: a local directory, or a Hugging Face hub id (e.g. "OpenMOSS-Team/MOSS-Audio-Tokenizer").
            dtype: compute dtype of the transformer stages: None / "auto" = float32 (see
                `cat_tts.weights.resolve_dtype`), or a name / torch dtype (bfloat16 allowed). The quantizer always
                runs in float32.
            device: where to put the model (default CPU).

        Raises:
            ModelLoadError: no such directory, not a codec directory, hub unreachable (see `resolve_checkpoint`).
            CheckpointError: the weights do not match the config (lists missing/unexpected keys), or a damaged file.
            InputError: an unknown dtype name.
        """
        directory = resolve_checkpoint(path_or_hub_id, "codec")
        config = CodecConfig.from_json(directory / CONFIG_NAME)
        device = torch.device(device if device is not None else "cpu")
        dtype = resolve_dtype(dtype, device, kind="codec")
        with torch.device("meta"):
            model = cls(config)
        return load_weights(model, directory, device, dtype).eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors in the official format (readable by `from_pretrained` and upstream)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save_json(directory / CONFIG_NAME)
        state = to_official_state_dict({k: v.detach().cpu() for k, v in self.state_dict().items()})
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory
