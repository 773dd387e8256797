"""TrainConfig: YAML maps 1:1 (unknown keys are errors), overrides, validation, generated DeepSpeed JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cat_tts.errors import UserError
from cat_tts.training.config import TrainConfig
from cat_tts.training.deepspeed_config import build_deepspeed_config, deepspeed_config_json, resolve_precision
from cat_tts.training.schedule import lr_factor

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"tiny": "cpu", "cat_tts_1_7b": "cuda", "finetune_1_7b": "cuda"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_load_and_cover_every_field(name):
    raw = (ROOT / "configs" / f"{name}.yaml").read_text()
    cfg = TrainConfig.from_yaml(ROOT / "configs" / f"{name}.yaml")
    # 1:1 mapping: every field of every section is spelled out in the shipped file.
    import yaml

    data = yaml.safe_load(raw)
    assert {k: sorted(v) for k, v in data.items()} == {k: sorted(v) for k, v in cfg.to_dict().items()}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_committed_deepspeed_json_is_generated_from_the_config(name):
    cfg = TrainConfig.from_yaml(ROOT / "configs" / f"{name}.yaml")
    committed = (ROOT / "configs" / "deepspeed" / f"{name}.json").read_text()
    assert committed == deepspeed_config_json(cfg, SHIPPED[name])


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key.*'lrr'.*optim"):
        TrainConfig.from_dict({"optim": {"lrr": 1e-3}})
    with pytest.raises(ValueError, match="unknown key.*'optimizer'"):
        TrainConfig.from_dict({"optimizer": {"lr": 1e-3}})
    path = tmp_path / "bad.yaml"
    path.write_text("run:\n  max_step: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*max_step"):
        TrainConfig.from_yaml(path)


def test_wrong_types_and_ranges_name_the_field():
    with pytest.raises(ValueError, match=r"run\.max_steps = 'ten'"):
        TrainConfig.from_dict({"run": {"max_steps": "ten"}})
    with pytest.raises(ValueError, match=r"psd\.p = 1\.5.*0\.0 \.\. 1\.0"):
        TrainConfig.from_dict({"psd": {"p": 1.5}})
    with pytest.raises(UserError, match=r"data\.prompt_layout = 'packed' is invalid; allowed: chat \| plain"):
        TrainConfig.from_dict({"data": {"prompt_layout": "packed"}})
    with pytest.raises(UserError, match=r"psd\.depth_range = '0\.\.N' is invalid; allowed: 1\.\.N-1 \| 1\.\.N"):
        TrainConfig.from_dict({"psd": {"depth_range": "0..N"}})
    with pytest.raises(ValueError, match=r"deepspeed\.zero_stage"):
        TrainConfig.from_dict({"deepspeed": {"zero_stage": 4}})


def test_yaml_scientific_notation_and_ints_become_floats():
    cfg = TrainConfig.from_dict({"optim": {"lr": "1e-4", "weight_decay": 0}})
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.weight_decay, float)


def test_overrides_set_fields_and_reject_unknown_names():
    cfg = TrainConfig().with_overrides(["optim.lr=5e-5", "data.path=/tmp/x", "model.init=null", "psd.p=0"])
    assert cfg.optim.lr == 5e-5 and cfg.data.path == "/tmp/x" and cfg.model.init is None and cfg.psd.p == 0.0
    with pytest.raises(ValueError, match="unknown field optim.learning_rate"):
        TrainConfig().with_overrides(["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="section.field=value"):
        TrainConfig().with_overrides(["lr=1"])


def test_round_trip_through_yaml():
    cfg = TrainConfig().with_overrides(["run.max_steps=7", "deepspeed.grad_accum=3"])
    import yaml

    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_deepspeed_config_has_one_source_for_batch_clip_precision():
    cfg = TrainConfig().with_overrides(["deepspeed.grad_accum=6", "optim.grad_clip=0.5", "deepspeed.zero_stage=3"])
    ds = build_deepspeed_config(cfg, "cuda")
    assert ds["gradient_accumulation_steps"] == 6
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is True
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert build_deepspeed_config(cfg, "cpu")["bf16"]["enabled"] is False
    assert resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(ValueError, match="bf16.*CUDA"):
        resolve_precision("bf16", "cpu")


def test_schedule_warms_up_then_follows_a_cosine_to_the_floor():
    f = [lr_factor(s, warmup_steps=4, decay_steps=20, min_lr_ratio=0.1) for s in range(25)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0
    assert all(a >= b for a, b in zip(f[4:], f[5:], strict=False))  # non-increasing after warmup
    assert f[12] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f[20] == pytest.approx(0.1) and f[24] == pytest.approx(0.1)


def test_cli_prints_deepspeed_json_and_rejects_bad_config_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/tiny.yaml", "--print-deepspeed", "--device-type", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout)["zero_optimization"]["stage"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("psd:\n  q: 1\n")
    res = subprocess.run([sys.executable, "train.py", "--config", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "unknown key" in res.stderr and "Traceback" not in res.stderr


def test_old_data_format_names_are_read_as_the_plain_or_chat_layout(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  format: continuation\n")
    assert TrainConfig.from_yaml(old).data.prompt_layout == "plain"
    assert "data.format is the old name of data.prompt_layout" in caplog.text
    assert "'continuation' is the old name of the 'plain' prompt layout" in caplog.text
    assert TrainConfig().with_overrides(["data.format=chat"]).data.prompt_layout == "chat"
    with pytest.raises(UserError, match="give only prompt_layout"):
        TrainConfig.from_dict({"data": {"format": "chat", "prompt_layout": "plain"}})


def test_shipped_recipes_train_every_layer():
    """At p = 1 the paper's range 1..N-1 never keeps layer N: every recipe must draw depths that reach N."""
    import torch

    from cat_tts.model.psd import sample_depths

    for name in SHIPPED:
        cfg = TrainConfig.from_yaml(ROOT / "configs" / f"{name}.yaml")
        depths = sample_depths(4096, 32, cfg.psd.p, torch.Generator().manual_seed(0), depth_range=cfg.psd.depth_range)
        assert int(depths.max()) == 32, name  # some samples keep all 32 layers: layer 32 gets a loss
    paper = sample_depths(4096, 32, 1.0, torch.Generator().manual_seed(0), depth_range=TrainConfig().psd.depth_range)
    assert int(paper.max()) == 31  # the default (the paper's range) would not: why the recipes change it


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"optim:\n  lr: 1e-4\n  betas: [0.9, 0.95\nrun:\n  out: x\n", r"bad\.yaml:4:\d+: not valid YAML \("),
        (b"run:\n  out: runs/caf\xe9\n", r"bad\.yaml:2: not UTF-8 text \(byte 0xe9\); save the config as UTF-8"),
        (b"run:\n\tout: x\n", r"bad\.yaml:2:\d+: not valid YAML \(found character '\\t'"),
    ],
    ids=["syntax", "latin1", "tab"],
)
def test_a_config_that_is_not_yaml_is_one_line_naming_file_and_line(tmp_path, capsys, content, expected):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    assert cli.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(r"^train\.py: error: .*" + expected, err), err


def test_a_config_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (ROOT / "configs" / "tiny.yaml").read_bytes())
    assert TrainConfig.from_yaml(path) == TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml")


def test_resume_changes_are_named_and_split_into_training_and_free_ones():
    import yaml

    from cat_tts.training.config import config_changes

    saved = yaml.safe_load(TrainConfig().to_yaml())
    changed = TrainConfig().with_overrides(["optim.lr=1e-4", "data.tokens_per_batch=8192", "run.log_every=1"])
    training, free = config_changes(saved, changed)
    assert training == ["data.tokens_per_batch: 4096 -> 8192", "optim.lr: 0.0002 -> 0.0001"]
    assert free == ["run.log_every: 10 -> 1"]
    # a longer run with decay_steps null stretches the cosine: a training change, said as such
    training, free = config_changes(saved, TrainConfig().with_overrides(["run.max_steps=2000"]))
    assert training == ["optim.decay_steps: null (= run.max_steps 1000) -> null (= run.max_steps 2000)"]
    assert free == ["run.max_steps: 1000 -> 2000"]
    pinned = TrainConfig().with_overrides(["optim.decay_steps=1000"])
    assert config_changes(yaml.safe_load(pinned.to_yaml()), pinned.with_overrides(["run.max_steps=2000"]))[0] == []
    assert config_changes(saved, TrainConfig()) == ([], [])
