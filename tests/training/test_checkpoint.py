"""Checkpoint manifests: what counts as intact, which checkpoint `--resume` picks, what rotation may delete.

Fast tests on hand-made checkpoint directories (no DeepSpeed); the end-to-end damage test with real
DeepSpeed checkpoints is tests/training/test_resume_damaged.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from cat_tts.errors import USER_ERROR_EXIT_CODE, CheckpointError
from cat_tts.training.checkpoint import (
    checkpoint_dir,
    find_resume_checkpoint,
    list_checkpoints,
    rotate_checkpoints,
    verify_checkpoint,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[2]


def _fake_checkpoint(run_dir: Path, step: int, manifest: bool = True) -> Path:
    """A checkpoint directory shaped like the real ones (contents are stand-ins)."""
    ckpt = checkpoint_dir(run_dir, step)
    (ckpt / "deepspeed" / "state").mkdir(parents=True)
    (ckpt / "deepspeed" / "state" / "mp_rank_00_model_states.pt").write_bytes(bytes(range(256)) * 40)
    (ckpt / "deepspeed" / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"\1" * 5000)
    (ckpt / "rng").mkdir()
    (ckpt / "rng" / "rank00000.json").write_text('{"python": []}')
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "data": {"epoch": 0, "position": step}}))
    (ckpt / "config.yaml").write_text("run: {}\n")
    if manifest:
        write_manifest(ckpt, step)
    return ckpt


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated model state": lambda c: _truncate(c / "deepspeed" / "state" / "mp_rank_00_model_states.pt"),
    "truncated optimizer state": lambda c: _truncate(
        c / "deepspeed" / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    ),
    "truncated RNG state": lambda c: _truncate(c / "rng" / "rank00000.json"),
    "corrupt trainer state": lambda c: (c / "trainer_state.json").write_text("{" + " " * 50),
    "missing trainer state": lambda c: (c / "trainer_state.json").unlink(),
    "edited file, same size": lambda c: (c / "config.yaml").write_text("run: []\n"),
    "missing manifest": lambda c: (c / "manifest.json").unlink(),
    "corrupt manifest": lambda c: (c / "manifest.json").write_text('{"files": '),
}
EXPECTED = {
    "truncated model state": "mp_rank_00_model_states.pt has 5120 bytes, the manifest says 10240",
    "truncated optimizer state": "optim_states.pt has 2500 bytes, the manifest says 5000",
    "truncated RNG state": "rng/rank00000.json has 7 bytes",
    "corrupt trainer state": "trainer_state.json has 51 bytes",
    "missing trainer state": "trainer_state.json is missing",
    "edited file, same size": "config.yaml does not match its checksum",
    "missing manifest": "incomplete: no manifest.json",
    "corrupt manifest": "manifest.json is damaged",
}


def test_an_intact_checkpoint_verifies(tmp_path):
    assert verify_checkpoint(_fake_checkpoint(tmp_path, 4)) is None


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_kind_of_damage_is_named(tmp_path, damage):
    ckpt = _fake_checkpoint(tmp_path, 4)
    DAMAGE[damage](ckpt)
    assert EXPECTED[damage] in verify_checkpoint(ckpt)


def test_a_checkpoint_without_trainer_state_is_incomplete_even_without_a_manifest(tmp_path):
    ckpt = _fake_checkpoint(tmp_path, 4, manifest=False)
    (ckpt / "trainer_state.json").unlink()
    assert verify_checkpoint(ckpt) == "incomplete: no manifest.json and no trainer_state.json"


def test_resume_takes_the_newest_intact_checkpoint_and_sets_damaged_newer_ones_aside(tmp_path, caplog):
    for step in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path, step)
    DAMAGE["truncated optimizer state"](checkpoint_dir(tmp_path, 8))
    DAMAGE["missing trainer state"](checkpoint_dir(tmp_path, 6))
    with caplog.at_level(logging.WARNING):
        assert find_resume_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 4)
    optim = "deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt"
    for step, problem in ((8, f"{optim} has 2500 bytes"), (6, "trainer_state.json is missing")):
        assert f"checkpoint {checkpoint_dir(tmp_path, step)} is damaged: {problem}" in caplog.text
        assert (tmp_path / "checkpoints" / f"step-{step:08d}.damaged").is_dir()  # kept for inspection
    assert list_checkpoints(tmp_path) == [checkpoint_dir(tmp_path, 2), checkpoint_dir(tmp_path, 4)]
    # the next damaged step-8 goes next to the first one
    _fake_checkpoint(tmp_path, 8)
    DAMAGE["corrupt manifest"](checkpoint_dir(tmp_path, 8))
    assert find_resume_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 4)
    assert (tmp_path / "checkpoints" / "step-00000008.damaged-2").is_dir()


def test_no_intact_checkpoint_is_one_error_naming_each_and_moves_nothing(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None  # no checkpoint at all: start from the beginning
    for step in (2, 4):
        _fake_checkpoint(tmp_path, step)
    DAMAGE["missing manifest"](checkpoint_dir(tmp_path, 2))
    DAMAGE["truncated model state"](checkpoint_dir(tmp_path, 4))
    with pytest.raises(CheckpointError) as err:
        find_resume_checkpoint(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "no intact checkpoint" in message
    assert str(checkpoint_dir(tmp_path, 2)) in message and str(checkpoint_dir(tmp_path, 4)) in message
    assert list_checkpoints(tmp_path) == [checkpoint_dir(tmp_path, 2), checkpoint_dir(tmp_path, 4)]


def test_rotation_deletes_only_checkpoints_older_than_the_new_one(tmp_path):
    for step in (2, 4, 6, 10):
        _fake_checkpoint(tmp_path, step)
    newest = _fake_checkpoint(tmp_path, 8)  # a resumed run re-saving below an existing newer step
    deleted = rotate_checkpoints(tmp_path, newest, keep_last=2)
    assert deleted == [checkpoint_dir(tmp_path, 2), checkpoint_dir(tmp_path, 4)]
    assert list_checkpoints(tmp_path) == [checkpoint_dir(tmp_path, s) for s in (6, 8, 10)]
    assert rotate_checkpoints(tmp_path, newest, keep_last=1) == [checkpoint_dir(tmp_path, 6)]
    assert newest.is_dir()


def _train_cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_py_resume_without_an_intact_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from memory_dataset import make_utterances, write_prepared

    write_prepared(tmp_path / "data", make_utterances(4, seed=1, min_frames=3, max_frames=5))
    capsys.readouterr()
    run = tmp_path / "run"
    _fake_checkpoint(run, 4)
    DAMAGE["missing trainer state"](checkpoint_dir(run, 4))
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(tmp_path / "data"), "--out", str(run)]
    assert _train_cli().main([*argv, "--no-progress", "--resume"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{checkpoint_dir(run, 4)} (trainer_state.json is missing)" in err
    assert checkpoint_dir(run, 4).is_dir()  # nothing deleted or moved


def test_train_py_checks_the_run_directory_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cli = _train_cli()
    config = str(ROOT / "configs" / "tiny.yaml")
    for out, reason in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "run", "--out: cannot write to")):
        # no data either: the output directory is the first thing checked
        assert cli.main(["--config", config, "--out", str(out), "--no-progress"]) == USER_ERROR_EXIT_CODE
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and reason in err and str(out) in err
