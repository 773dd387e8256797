"""`CatTTSModel.generate`: a thin method over `cat_tts.generation.loop` (kept apart from the model code)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cat_tts.generation.loop import ControlTokens, FrameStep, GenerationConfig, GenerationOutput, generate
from cat_tts.generation.sampling import AUDIO_DEFAULTS, CONTROL_DEFAULTS, SamplingParams


def build_generation_config(
    depth: int = 32,
    max_new_frames: int | None = None,
    min_new_frames: int = 0,
    do_sample: bool = True,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    control_temperature: float | None = None,
    control_top_p: float | None = None,
    control_top_k: int | None = None,
    control_tokens: ControlTokens = "audio",
    seed: int | None = None,
) -> GenerationConfig:
    """Builds a `GenerationConfig` from flat keyword arguments (None = the released default)."""

    def pick(value, default):
        return default if value is None else value

    audio = SamplingParams(
        temperature=float(pick(temperature, AUDIO_DEFAULTS.temperature)),
        top_p=float(pick(top_p, AUDIO_DEFAULTS.top_p)),
        top_k=int(pick(top_k, AUDIO_DEFAULTS.top_k)),
        repetition_penalty=float(pick(repetition_penalty, AUDIO_DEFAULTS.repetition_penalty)),
    )
    control = SamplingParams(
        temperature=float(pick(control_temperature, CONTROL_DEFAULTS.temperature)),
        top_p=float(pick(control_top_p, CONTROL_DEFAULTS.top_p)),
        top_k=int(pick(control_top_k, CONTROL_DEFAULTS.top_k)),
        repetition_penalty=CONTROL_DEFAULTS.repetition_penalty,
    )
    return GenerationConfig(
        depth=depth,
        max_new_frames=max_new_frames,
        min_new_frames=min_new_frames,
        do_sample=do_sample,
        audio=audio,
        control=control,
        control_tokens=control_tokens,
        seed=seed,
    )


class CatTTSGenerationMixin:
    """Adds `generate` to `CatTTSModel`."""

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        depth: int = 32,
        max_new_frames: int | None = None,
        min_new_frames: int = 0,
        do_sample: bool = True,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        control_temperature: float | None = None,
        control_top_p: float | None = None,
        control_top_k: int | None = None,
        control_tokens: ControlTokens = "audio",
        seed: int | None = None,
        on_frame: Callable[[FrameStep], None] | None = None,
    ) -> GenerationOutput:
        """Generates speech frames at depth K (KV-cached temporal and depth transformers).

        Args:
            input_ids: `[B, T, 1+N]` prompt grids, left-padded (`cat_tts.text.PromptBuilder`).
            attention_mask: `[B, T]` (1 = real row) or None.
            depth: K, the number of RVQ layers generated per frame (1..N).
            max_new_frames: frame budget; None derives one from the prompt length.
            min_new_frames: frames before `audio_end` may be chosen.
            do_sample: False = greedy for every channel.
            temperature, top_p, top_k, repetition_penalty: audio-layer sampling (None = 1.0 / 0.95 / 50 / 1.1);
                temperature <= 0 makes the audio layers greedy.
            control_temperature, control_top_p, control_top_k: channel-0 sampling (None = 1.5 / 1.0 / 50).
            control_tokens: "audio" (channel 0 chooses gen slot vs audio_end only) or "full" (whole vocabulary,
                like the released code).
            seed: seed for reproducible sampling.
            on_frame: called after each frame step.

        Returns:
            `GenerationOutput` (`.frames [B, F, 1+K]`, `.lengths [B]`, `.finished [B]`, timings).
        """
        config = build_generation_config(
            depth=depth,
            max_new_frames=max_new_frames,
            min_new_frames=min_new_frames,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            control_temperature=control_temperature,
            control_top_p=control_top_p,
            control_top_k=control_top_k,
            control_tokens=control_tokens,
            seed=seed,
        )
        return generate(self, input_ids, attention_mask, config, on_frame=on_frame)
