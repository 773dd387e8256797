"""One writer per run: a second train.py on the same --out exits 2 naming the first; a lock left by a killed run is
reported and taken over; only the process that owns the run directory locks it; --resume refuses a changed config
unless allowed, naming each change."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from memory_dataset import make_utterances, write_prepared

from cat_tts.errors import USER_ERROR_EXIT_CODE
from cat_tts.training.lock import LOCK_FILE, RunDirectoryBusyError, RunLock, owns_run_dir

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_a_second_train_py_on_the_same_out_exits_2_naming_the_running_one(tmp_path, caplog):
    write_prepared(tmp_path / "data", make_utterances(8, seed=1, min_frames=3, max_frames=8))
    out = tmp_path / "run"
    argv = [sys.executable, "train.py", "--config", "configs/tiny.yaml", "--data", str(tmp_path / "data")]
    argv += ["--out", str(out), "--no-progress", "--set", "run.tensorboard=false", "--set", "data.tokens_per_batch=64"]
    first = subprocess.Popen(
        [*argv, "--max-steps", "100000"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while (_holder(out / LOCK_FILE) or {}).get("pid") != first.pid:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        second = subprocess.run(
            [*argv, "--max-steps", "2"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert second.returncode == USER_ERROR_EXIT_CODE, second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"--out {out} is in use by another training run: pid {first.pid} on host" in second.stderr
        assert first.poll() is None  # the first run goes on
        assert not (out / "metrics.jsonl").exists() or "step" in (out / "metrics.jsonl").read_text()
    finally:
        first.send_signal(signal.SIGKILL)  # killed: its lock record stays behind, its lock does not
        first.wait(timeout=60)
        first.stderr.close()
    with caplog.at_level(logging.WARNING, logger="cat_tts.training.lock"):
        lock = RunLock(out).acquire()
    try:
        assert lock.stale is not None and lock.stale.pid == first.pid  # reported, then taken over
        assert f"taking over the lock of an earlier run that ended without releasing it (pid {first.pid}" in (
            caplog.text
        )
        assert _holder(out / LOCK_FILE)["pid"] == os.getpid()
    finally:
        lock.release()
    assert (out / LOCK_FILE).read_text() == ""  # released cleanly: nothing for the next run to report


def test_a_held_lock_is_refused_without_waiting_and_free_again_once_released(tmp_path):
    with RunLock(tmp_path, option="--out") as lock:
        assert lock.stale is None  # a fresh directory: nothing to report
        started = time.monotonic()
        with pytest.raises(
            RunDirectoryBusyError, match=rf"pid {os.getpid()} on host .*, started .*choose another --out"
        ):
            RunLock(tmp_path).acquire()  # another descriptor, as another process would hold it
        assert time.monotonic() - started < 1.0
    RunLock(tmp_path).acquire().release()


def test_only_the_process_that_owns_the_run_directory_locks_it(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert owns_run_dir()  # not launched: the only process
    monkeypatch.setenv("RANK", "0")
    assert owns_run_dir()
    monkeypatch.setenv("RANK", "1")
    assert not owns_run_dir()  # other ranks of a launched job never touch the lock


# ---------------------------------------------------------------------------------------------- --resume config check
def _checkpoint_with_config(run_dir: Path, config_yaml: str) -> Path:
    from cat_tts.training.checkpoint import checkpoint_dir, write_manifest

    ckpt = checkpoint_dir(run_dir, 4)
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 4, "data": {"epoch": 0, "position": 4}}))
    (ckpt / "config.yaml").write_text(config_yaml)
    write_manifest(ckpt, 4)
    return ckpt


def test_resume_with_a_changed_training_field_is_refused_naming_each_change(tmp_path, caplog):
    from cat_tts.training.config import TrainConfig
    from cat_tts.training.loop import ConfigChangedError, resume_point

    saved = TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml")
    ckpt = _checkpoint_with_config(tmp_path, saved.to_yaml())
    changed = saved.with_overrides(["optim.lr=1e-4", "run.max_steps=16", "run.log_every=2"])
    with pytest.raises(ConfigChangedError) as err:
        resume_point(changed, tmp_path, allow_config_change=False)
    message = str(err.value)
    assert "\n" not in message and str(ckpt) in message and "--allow-config-change" in message
    assert "optim.lr: 0.003 -> 0.0001" in message
    assert "optim.decay_steps: null (= run.max_steps 8) -> null (= run.max_steps 16)" in message
    assert "log_every" not in message  # logging, saving and the run length may change freely
    with caplog.at_level(logging.INFO, logger="cat_tts.training.loop"):
        assert resume_point(changed, tmp_path, allow_config_change=True) == ckpt
    assert "continuing" in caplog.text and "optim.lr: 0.003 -> 0.0001" in caplog.text
    assert "run.log_every: 1 -> 2" in caplog.text
    assert resume_point(saved.with_overrides(["run.save_every=1"]), tmp_path, allow_config_change=False) == ckpt


def test_train_py_refuses_a_changed_resume_before_any_work(tmp_path, capsys):
    import importlib.util

    from cat_tts.training.config import TrainConfig

    write_prepared(tmp_path / "data", make_utterances(4, seed=1, min_frames=3, max_frames=8))
    capsys.readouterr()
    out = tmp_path / "run"
    saved = TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml").with_overrides([f"data.path={tmp_path / 'data'}"])
    _checkpoint_with_config(out, saved.with_overrides([f"run.out={out}"]).to_yaml())
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    argv = ["--config", "configs/tiny.yaml", "--data", str(tmp_path / "data"), "--out", str(out), "--resume"]
    assert cli.main([*argv, "--set", "optim.lr=1e-4"]) == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.lr: 0.003 -> 0.0001" in err and "--allow-config-change" in err
    assert (out / LOCK_FILE).read_text() == ""  # the refused run let go of the directory
