"""Two data-parallel ranks (torchrun, gloo, ZeRO-2) compute the same update as one rank accumulating both batches.

Progressive Sequence Dropout gives every rank a different graph (different depths, unused heads); this checks
that gradient reduction still sums matching gradients (see `cat_tts.training.loop.gated_forward`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from memory_dataset import make_utterances, write_prepared

ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_rank_with_accumulation(tmp_path):
    from safetensors.torch import load_file

    write_prepared(tmp_path / "data", make_utterances(16, seed=1, min_frames=3, max_frames=8))
    common = [
        "train.py",
        "--config",
        "configs/tiny.yaml",
        "--data",
        str(tmp_path / "data"),
        "--max-steps",
        "2",
        "--save-every",
        "2",
        "--no-progress",
        "--set",
        "data.tokens_per_batch=64",
        "--set",
        "run.tensorboard=false",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_port()),
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one"), "--set", "deepspeed.grad_accum=2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a = load_file(str(tmp_path / "two" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("two", "one")
    ]
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-6, atol=1e-6)
