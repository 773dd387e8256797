"""Train -> use: a tiny model trained in a shipped recipe's prompt layout, exported, then driven through `CatTTS`
and `infer.py` like a user would: greedy generation reproduces the training utterance.

* plain (configs/tiny.yaml and configs/cat_tts_1_7b.yaml: text, then the utterance's frames): each training
  utterance is a reference clip followed by more speech, with the joined transcript. Given the clip and its
  transcript, the model continues the clip with the rest of the utterance.
* chat (configs/finetune_1_7b.yaml): two utterances of one speaker, each trained with the other as its reference
  clip (the only other utterance of the speaker). Given one as the voice to clone, the model says the other.

The codes are those the pipeline itself computes for the clips (`CatTTS.encode_reference`), so the prompts built
at inference are exactly the starts of the training grids. PSD is off (p = 0) to overfit in a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from memory_dataset import write_prepared

from cat_tts.data.dataset import Utterance
from cat_tts.text.prompt import join_transcript

ROOT = Path(__file__).resolve().parents[2]
SR = 24000
FRAME = 1920  # samples per codec frame
REF_FRAMES = 7  # 0.56 s: the pipeline refuses reference clips under 0.5 s
PCM16 = 2.0 / 32768  # infer.py writes 16-bit PCM


def _tone(path: Path, frames: int, freq: float) -> Path:
    import soundfile as sf

    t = np.arange(frames * FRAME) / SR
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(7 * t))).astype(np.float32), SR)
    return path


@pytest.fixture(scope="module")
def codec_and_pipeline_codes(tmp_path_factory):
    """The tiny codec, and a function giving the codes the pipeline computes for a clip."""
    from cat_tts.codec.tiny import write_tiny_codec
    from cat_tts.inference import CatTTS
    from cat_tts.model import CatTTSConfig, CatTTSModel
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("codec")
    codec_dir = write_tiny_codec(root / "codec", seed=0)
    tts = CatTTS.from_pretrained(model=_random_model_dir(root, CatTTSConfig, CatTTSModel, build_tiny_tokenizer),
                                 codec=codec_dir, device="cpu")  # fmt: skip
    return codec_dir, tts.encode_reference


def _random_model_dir(root, config_cls, model_cls, tokenizer_fn) -> Path:
    torch.manual_seed(0)
    model_cls(config_cls.tiny()).save_pretrained(root / "random")
    tokenizer_fn().save_pretrained(root / "random")
    return root / "random"


def _train(tmp_path: Path, utterances: list[Utterance], layout: str | None, steps: int) -> Path:
    """Trains on `utterances` in configs/tiny.yaml (its own prompt layout unless `layout`); returns the export."""
    from cat_tts.training.config import TrainConfig
    from cat_tts.training.loop import train

    cfg = TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml")
    overrides = [
        f"data.path={write_prepared(tmp_path / 'data', utterances)}",
        f"run.out={tmp_path / 'run'}",
        f"run.max_steps={steps}",
        f"run.save_every={steps}",
        "run.log_every=10",
        "run.tensorboard=false",
        "psd.p=0",  # every layer on every step: the fastest way to overfit
        "optim.lr=1e-2",
        "optim.warmup_steps=10",
        "optim.min_lr_ratio=0.05",
        "data.tokens_per_batch=512",  # both utterances in every batch
    ]
    if layout is not None:
        overrides.append(f"data.prompt_layout={layout}")
    result = train(cfg.with_overrides(overrides), progress=False)
    assert result.losses[steps] < 0.05, result.losses
    return result.model_dir


def _decode(codec_dir: Path, codes: torch.Tensor) -> np.ndarray:
    from cat_tts.codec import CatCodec

    with torch.inference_mode():
        return CatCodec.from_pretrained(codec_dir).decode(codes[None]).audio[0].numpy()


def _infer(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("infer_cli", ROOT / "infer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([*argv, "--greedy", "--repetition-penalty", "1.0", "--quiet", "--device", "cpu"])


def _read(path: Path) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    return audio


@pytest.mark.slow  # ~30-60 s on 2 CPU cores (training, then generation through the pipeline and the CLI)
def test_plain_layout_model_continues_its_reference_clip_into_the_training_utterance(
    codec_and_pipeline_codes, tmp_path, capsys
):
    from cat_tts.inference import CatTTS
    from cat_tts.training.config import TrainConfig

    # the layout of the default recipe (and of the paper's recipe)
    assert TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml").data.prompt_layout == "plain"
    assert TrainConfig.from_yaml(ROOT / "configs" / "cat_tts_1_7b.yaml").data.prompt_layout == "plain"
    codec_dir, encode = codec_and_pipeline_codes
    cases = []  # (reference clip, its transcript, the text to speak, the full utterance's codes)
    for i, (ref_text, text, frames) in enumerate([("one two three", "hello world", 3), ("she sells", "sea shells", 4)]):
        ref = _tone(tmp_path / f"ref{i}.wav", REF_FRAMES, 180 + 90 * i)
        rest = encode(_tone(tmp_path / f"rest{i}.wav", REF_FRAMES, 520 - 70 * i))[:, :frames]  # [32, frames]
        cases.append((ref, ref_text, text, torch.cat([encode(ref), rest], dim=1)))  # [32, 7 + frames]
    utterances = [
        Utterance(id=f"u{i}", text=join_transcript(ref_text, text), codes=codes, speaker=f"s{i}")
        for i, (_, ref_text, text, codes) in enumerate(cases)
    ]
    model_dir = _train(tmp_path, utterances, None, steps=150)
    assert json.loads((model_dir / "config.json").read_text())["prompt_layout"] == "plain"

    tts = CatTTS.from_pretrained(model=model_dir, codec=codec_dir, device="cpu")
    for i, (ref, ref_text, text, codes) in enumerate(cases):
        # the pipeline decodes the reference frames first (codec context) and returns only the continuation
        expected = _decode(codec_dir, codes)[REF_FRAMES * FRAME :]
        audio, sr = tts.synthesize(text, ref, reference_text=ref_text, do_sample=False, repetition_penalty=1.0)
        assert sr == SR and audio.shape == expected.shape, (audio.shape, expected.shape)
        np.testing.assert_allclose(audio, expected, rtol=0, atol=1e-4)

        out = tmp_path / f"out{i}.wav"
        argv = ["--text", text, "--prompt-audio", str(ref), "--prompt-text", ref_text, "-o", str(out)]
        assert _infer([*argv, "--model", str(model_dir), "--codec", str(codec_dir)]) == 0, capsys.readouterr().err
        wav = _read(out)
        assert wav.shape == expected.shape
        np.testing.assert_allclose(wav, np.clip(expected, -1, 1), rtol=0, atol=PCM16)

    # a plain-layout model continues the clip, so it needs the clip's transcript: one clear line, exit 2
    from cat_tts.errors import USER_ERROR_EXIT_CODE

    argv = ["--text", "hello world", "--prompt-audio", str(cases[0][0]), "-o", str(tmp_path / "x.wav")]
    capsys.readouterr()
    assert _infer([*argv, "--model", str(model_dir), "--codec", str(codec_dir)]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "transcript" in err and "Traceback" not in err


@pytest.mark.slow  # ~1-2 min on 2 CPU cores
def test_chat_layout_model_says_its_training_utterance_in_the_voice_of_the_other(
    codec_and_pipeline_codes, tmp_path, capsys
):
    from cat_tts.inference import CatTTS
    from cat_tts.training.config import TrainConfig

    assert TrainConfig.from_yaml(ROOT / "configs" / "finetune_1_7b.yaml").data.prompt_layout == "chat"
    codec_dir, encode = codec_and_pipeline_codes
    clips = [_tone(tmp_path / f"{i}.wav", REF_FRAMES, 200 + 110 * i) for i in range(2)]
    texts = ["hello world", "one two three"]
    codes = [encode(c) for c in clips]  # [32, 7] each
    utterances = [Utterance(id=f"u{i}", text=texts[i], codes=codes[i], speaker="spk") for i in range(2)]
    # 300 steps: at 150 the loss is ~0.035 and the first frame of one utterance or its audio_end can still be off
    model_dir = _train(tmp_path, utterances, "chat", steps=300)
    assert json.loads((model_dir / "config.json").read_text())["prompt_layout"] == "chat"

    tts = CatTTS.from_pretrained(model=model_dir, codec=codec_dir, device="cpu")
    for i in range(2):
        other = clips[1 - i]  # the reference clip utterance i was trained with
        expected = _decode(codec_dir, codes[i])
        audio, _ = tts.synthesize(texts[i], other, do_sample=False, repetition_penalty=1.0)
        assert audio.shape == expected.shape, (audio.shape, expected.shape)
        np.testing.assert_allclose(audio, expected, rtol=0, atol=1e-4)

        out = tmp_path / f"out{i}.wav"
        argv = ["--text", texts[i], "--prompt-audio", str(other), "-o", str(out)]
        assert _infer([*argv, "--model", str(model_dir), "--codec", str(codec_dir)]) == 0, capsys.readouterr().err
        wav = _read(out)
        assert wav.shape == expected.shape
        np.testing.assert_allclose(wav, np.clip(expected, -1, 1), rtol=0, atol=PCM16)
