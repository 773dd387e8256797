"""`train.py --resume` with a damaged newest checkpoint (real DeepSpeed checkpoints, ZeRO-2, one CPU process).

Each kind of damage (truncated model, optimizer or RNG file; corrupt or missing trainer state) must be reported by
path, the run must continue from the newest intact checkpoint and reproduce the uninterrupted losses from there,
and no intact checkpoint may be deleted.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import pytest
from memory_dataset import make_utterances, write_prepared

ROOT = Path(__file__).resolve().parents[2]
MODEL_STATE = "deepspeed/state/mp_rank_00_model_states.pt"
OPTIM_STATE = "deepspeed/state/zero_pp_rank_0_mp_rank_00_optim_states.pt"
RNG_STATE = "rng/rank00000.safetensors"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


DAMAGE = {
    "model": (lambda c: _truncate(c / MODEL_STATE), MODEL_STATE),
    "optimizer": (lambda c: _truncate(c / OPTIM_STATE), OPTIM_STATE),
    "rng": (lambda c: _truncate(c / RNG_STATE), RNG_STATE),
    "corrupt_trainer_state": (lambda c: (c / "trainer_state.json").write_text('{"step": 8, "data":'), "trainer_state"),
    "missing_trainer_state": (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
}


def _train_cli():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(data: Path, out: Path, *extra: str) -> int:
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--data", str(data), "--out", str(out), "--no-progress"]
    settings = ["data.tokens_per_batch=64", "optim.decay_steps=8", "run.tensorboard=false", "run.keep_last=3"]
    return _train_cli().main([*argv, *[a for s in settings for a in ("--set", s)], *extra])


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 8-step run, and a run with checkpoints at steps 4, 6 and 8."""
    root = tmp_path_factory.mktemp("damaged")
    data = write_prepared(root / "data", make_utterances(12, seed=2, min_frames=3, max_frames=8))
    assert _run(data, root / "full", "--max-steps", "8", "--save-every", "100") == 0
    assert _run(data, root / "saved", "--max-steps", "8", "--save-every", "2") == 0
    steps = [p.name for p in sorted((root / "saved" / "checkpoints").iterdir())]
    assert steps == ["step-00000004", "step-00000006", "step-00000008"]  # keep_last = 3
    return root


@pytest.mark.parametrize(
    "damage",  # one kind in the default suite, the others (a few seconds each) with -m slow
    [d if d == "optimizer" else pytest.param(d, marks=pytest.mark.slow) for d in sorted(DAMAGE)],
)
def test_resume_skips_a_damaged_newest_checkpoint_and_reproduces_the_losses(runs, tmp_path, damage, caplog):
    run = tmp_path / "run"
    shutil.copytree(runs / "saved", run)
    ckpts = run / "checkpoints"
    damage_fn, named = DAMAGE[damage]
    damage_fn(ckpts / "step-00000008")
    with caplog.at_level(logging.INFO):
        assert _run(runs / "data", run, "--max-steps", "8", "--save-every", "2", "--resume") == 0
    # the damaged checkpoint is named (path and file), and the run continued from step 6
    warning = next(r.getMessage() for r in caplog.records if "is damaged" in r.getMessage())
    assert str(ckpts / "step-00000008") in warning and named in warning, warning
    assert f"resumed from {ckpts / 'step-00000006'} at step 6" in caplog.text
    # the resumed steps reproduce the uninterrupted run exactly (CPU, fp32)
    full = _losses(runs / "full")
    assert [_losses(run)[s] for s in range(1, 9)] == [full[s] for s in range(1, 9)]
    # nothing intact was deleted; the damaged checkpoint is kept aside; a new step 8 was written
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "step-00000004",
        "step-00000006",
        "step-00000008",
        "step-00000008.damaged",
    ]
    from cat_tts.training.checkpoint import verify_checkpoint

    assert all(verify_checkpoint(ckpts / f"step-0000000{s}") is None for s in (4, 6, 8))
