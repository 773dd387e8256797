"""train.py under real DeepSpeed (ZeRO-2, one CPU process, gloo): learning, exact resume, export, NaN stop."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cat_tts.errors import USER_ERROR_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
SR = 24000


def _train_cli():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny prepared dataset: six tones through the tiny codec, via `prepare` itself."""
    import soundfile as sf

    from cat_tts.codec.tiny import write_tiny_codec
    from cat_tts.data.prepare import PrepareConfig, prepare

    root = tmp_path_factory.mktemp("prepared")
    codec = write_tiny_codec(root / "codec", seed=0)
    texts = ["the quick brown fox", "hello world", "she sells sea shells", "one two three", "a b c", "seven"]
    rows = []
    for i, text in enumerate(texts):
        t = np.arange(int((0.4 + 0.1 * i) * SR)) / SR
        sf.write(str(root / f"{i}.wav"), (0.3 * np.sin(2 * np.pi * (200 + 60 * i) * t)).astype(np.float32), SR)
        rows.append({"audio": f"{i}.wav", "text": text, "speaker": f"s{i % 2}", "id": f"utt{i}"})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = prepare(
        PrepareConfig(
            manifest=str(root / "m.jsonl"), codec=str(codec), out=str(root / "data"), num_workers=0, device="cpu"
        ),
        progress=False,
    )
    assert summary.kept == len(texts)
    return root / "data"


def _run(cli, data, out, *extra):
    argv = [
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "optim.decay_steps=8",
        "--set",
        "data.tokens_per_batch=64",
        "--set",
        "run.tensorboard=true",
        *extra,
    ]
    return cli.main(argv)


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in map(json.loads, (Path(run_dir) / "metrics.jsonl").read_text().splitlines())}


def test_zero2_run_learns_resumes_exactly_and_exports(prepared, tmp_path):
    from cat_tts.model import CatTTSModel

    cli = _train_cli()
    full = tmp_path / "full"
    assert _run(cli, prepared, full, "--max-steps", "8", "--save-every", "4") == 0
    losses = _losses(full)
    assert sorted(losses) == list(range(1, 9))
    assert np.mean([losses[7], losses[8]]) < np.mean([losses[1], losses[2]]) - 0.05  # it learns
    # real ZeRO-2 state: partitioned optimizer state files, fp32 on CPU
    ckpts = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert ckpts == ["step-00000004", "step-00000008"]
    ds_files = {p.name for p in (full / "checkpoints" / "step-00000008" / "deepspeed" / "state").iterdir()}
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" in ds_files
    record = json.loads((full / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("lr", "grad_norm", "tokens_per_s", "frames_per_s", "peak_memory_gb", "loss_control", "loss_layer01"):
        assert np.isfinite(record[key]), key
    assert list((full / "tensorboard").glob("events.out.tfevents.*"))

    # stopped after step 4, resumed: the resumed steps reproduce the uninterrupted losses exactly
    part = tmp_path / "part"
    assert _run(cli, prepared, part, "--max-steps", "4", "--save-every", "100") == 0
    assert _run(cli, prepared, part, "--max-steps", "8", "--save-every", "100", "--resume") == 0
    resumed = _losses(part)
    assert [resumed[s] for s in range(1, 9)] == [losses[s] for s in range(1, 9)]

    # killed mid-run (after step 6; last checkpoint at step 4), resumed: steps 5..8 are redone identically
    from cat_tts.training.config import TrainConfig
    from cat_tts.training.loop import train

    crash = tmp_path / "crash"
    cfg = TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml").with_overrides(
        [
            f"data.path={prepared}",
            f"run.out={crash}",
            "optim.decay_steps=8",
            "data.tokens_per_batch=64",
            "run.max_steps=8",
            "run.save_every=4",
            "run.tensorboard=false",
        ]
    )

    def die_after_6(step, loss):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False, on_step=die_after_6)
    assert sorted(_losses(crash)) == list(range(1, 7))
    train(cfg, resume=True, progress=False)
    records = [json.loads(x)["step"] for x in (crash / "metrics.jsonl").read_text().splitlines()]
    assert records == list(range(1, 9))  # the redone steps replace the crashed run's records
    assert [_losses(crash)[s] for s in range(1, 9)] == [losses[s] for s in range(1, 9)]

    # without --resume an existing run directory is refused (nothing is overwritten)
    assert _run(cli, prepared, part, "--max-steps", "8") == USER_ERROR_EXIT_CODE

    # a training checkpoint directory is a valid --init (its model/ export is loaded)
    from cat_tts.training.build import build_model
    from cat_tts.training.config import TrainConfig

    init = TrainConfig.from_dict({"model": {"init": str(full / "checkpoints" / "step-00000008")}})
    started = build_model(init, torch.device("cpu"))

    # the export loads with from_pretrained and equals the final checkpoint's export
    model = CatTTSModel.from_pretrained(full / "model")
    again = CatTTSModel.from_pretrained(full / "checkpoints" / "step-00000008" / "model")
    for (name, a), (_, b), (_, c) in zip(
        model.state_dict().items(), again.state_dict().items(), started.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(a, c), name
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(full / "model").encode("hello", add_special_tokens=False)
    # and it is the trained model: its loss on the training data is the last logged loss's neighbourhood
    fresh = CatTTSModel(model.config)
    from cat_tts.data.collate import BatchStream, Collator
    from cat_tts.data.dataset import PreparedDataset
    from cat_tts.data.samples import SampleBuilder

    tok = AutoTokenizer.from_pretrained(full / "model")
    ids = model.config.token_ids
    stream = BatchStream(
        PreparedDataset(prepared),
        SampleBuilder(tok, ids, 32),
        Collator(ids.pad, ids.audio_pad_code, 32, 0.0),
        budget=64,
        max_frames=200,
    )
    batch = next(iter(stream))
    with torch.no_grad():
        trained_loss = model(batch.input_ids, batch.attention_mask, batch.labels).loss
        fresh_loss = fresh(batch.input_ids, batch.attention_mask, batch.labels).loss
    assert trained_loss < fresh_loss - 0.1


def test_non_finite_loss_stops_naming_step_and_samples_and_saves_nothing(prepared, tmp_path, capsys):
    from cat_tts.model import CatTTSConfig, CatTTSModel
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

    torch.manual_seed(0)
    broken = CatTTSModel(CatTTSConfig.tiny())
    with torch.no_grad():
        broken.heads[0].weight[3, 0] = float("nan")
    broken.save_pretrained(tmp_path / "broken")
    build_tiny_tokenizer().save_pretrained(tmp_path / "broken")
    out = tmp_path / "nan"
    assert _run(_train_cli(), prepared, out, "--max-steps", "3", "--init", str(tmp_path / "broken")) == 3
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "at step 1" in err and "utt" in err
    ckpts = out / "checkpoints"
    assert not ckpts.exists() or not any(ckpts.iterdir())  # no checkpoint, not even a temporary one
    assert not (out / "model").exists()


def test_chat_layout_run_and_the_export_drives_infer_py(prepared, tmp_path, capsys):
    """Fine-tuning layout (the official chat layout with same-speaker references), then infer.py on the export."""
    cli = _train_cli()
    out = tmp_path / "chat"
    extra = ("--set", "data.prompt_layout=chat", "--set", "data.tokens_per_batch=200")
    assert _run(cli, prepared, out, "--max-steps", "2", *extra) == 0
    losses = _losses(out)
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())

    spec = importlib.util.spec_from_file_location("infer_cli", ROOT / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    wav = tmp_path / "out.wav"
    rc = infer.main(
        [
            "--text",
            "hello",
            "--prompt-audio",
            str(prepared.parent / "5.wav"),  # 0.9 s
            "--model",
            str(out / "model"),
            "--codec",
            str(prepared.parent / "codec"),
            "--greedy",
            "--max-new-frames",
            "3",
            "--depth",
            "8",
            "-o",
            str(wav),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    import soundfile as sf

    audio, sr = sf.read(str(wav))
    assert sr == SR and 0 < len(audio) <= 3 * 1920


def test_init_from_a_qwen3_lm_copies_its_temporal_weights(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from cat_tts.model import CatTTSConfig
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer
    from cat_tts.training.build import build_model, load_tokenizer
    from cat_tts.training.config import TrainConfig

    lc = CatTTSConfig.tiny().language_config
    fields = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "rope_theta",
        "rms_norm_eps",
    )
    qcfg = Qwen3Config(**{f: getattr(lc, f) for f in fields if hasattr(lc, f)}, tie_word_embeddings=False)
    torch.manual_seed(3)
    Qwen3ForCausalLM(qcfg).save_pretrained(tmp_path / "qwen3")
    build_tiny_tokenizer().save_pretrained(tmp_path / "qwen3")
    qwen = Qwen3ForCausalLM.from_pretrained(tmp_path / "qwen3")
    cfg = TrainConfig.from_dict({"model": {"preset": "tiny", "init": f"qwen3:{tmp_path / 'qwen3'}"}})
    model = build_model(cfg, torch.device("cpu"))
    assert torch.equal(model.temporal.layers[0].self_attn.q_proj.weight, qwen.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(model.embeddings[0].weight, qwen.model.embed_tokens.weight)
    assert load_tokenizer(cfg).encode("hello", add_special_tokens=False)


def test_resume_is_exact_with_accumulation_and_loader_workers(prepared, tmp_path):
    cli = _train_cli()
    extra = ("--set", "deepspeed.grad_accum=2", "--set", "data.num_workers=1", "--set", "psd.p=0.5")
    full, part = tmp_path / "full", tmp_path / "part"
    assert _run(cli, prepared, full, "--max-steps", "4", "--save-every", "100", *extra) == 0
    assert _run(cli, prepared, part, "--max-steps", "2", "--save-every", "100", *extra) == 0
    assert _run(cli, prepared, part, "--max-steps", "4", "--save-every", "100", "--resume", *extra) == 0
    assert [_losses(part)[s] for s in range(1, 5)] == [_losses(full)[s] for s in range(1, 5)]


def test_missing_or_unprepared_data_is_a_one_line_error(tmp_path, capsys):
    cli = _train_cli()
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress"]
    assert cli.main(argv) == USER_ERROR_EXIT_CODE
    assert "no training data: pass --data" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main([*argv, "--data", str(tmp_path / "empty")]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no prepared shards" in err and "cat_tts.data.prepare" in err
