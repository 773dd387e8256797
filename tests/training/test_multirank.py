"""Two data-parallel ranks (torchrun, gloo) compute the same update as one rank accumulating both batches.

Progressive Sequence Dropout gives every rank a different graph (different depths, unused heads); this checks
that gradient reduction still sums matching gradients (ZeRO-2: `cat_tts.training.distributed.gated_forward`) and that
ZeRO-3's per-module parameter gathering still matches across ranks (`CatTTSModel.uniform_graph`; every parameter
is partitioned there: persistence threshold 0, and the trace-based prefetch is on from the second step).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from memory_dataset import make_utterances, write_prepared

ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_depths(data: Path, steps: int) -> list[list[list[int]]]:
    """PSD depths of each rank's micro-batches in a 2-rank run of configs/tiny.yaml (as train.py draws them)."""
    from cat_tts.training.build import build_model, build_stream, load_tokenizer
    from cat_tts.training.config import TrainConfig

    cfg = TrainConfig.from_yaml(ROOT / "configs" / "tiny.yaml").with_overrides(
        [f"data.path={data}", "data.tokens_per_batch=64"]
    )
    model = build_model(cfg, torch.device("cpu"))
    tokenizer = load_tokenizer(cfg)
    depths = []
    for rank in (0, 1):
        batches = iter(build_stream(cfg, model, tokenizer, rank, 2))
        depths.append([next(batches).depths.tolist() for _ in range(steps)])
    return depths


@pytest.mark.slow  # two torchrun processes plus one reference run: 20-50 s each on 2 CPU cores
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_ranks_equal_one_rank_with_accumulation(tmp_path, zero_stage):
    from safetensors.torch import load_file

    steps = 3 if zero_stage == 3 else 2  # ZeRO-3: step 1 records the module trace, later steps prefetch along it
    write_prepared(tmp_path / "data", make_utterances(16, seed=1, min_frames=3, max_frames=8))
    if zero_stage == 3:  # the ranks' batches really differ in depth (hence in the normal-mode graph)
        ranks = _rank_depths(tmp_path / "data", steps)
        assert any(max(a) != max(b) for a, b in zip(ranks[0], ranks[1], strict=True)), ranks
    common = [
        "train.py",
        "--config",
        "configs/tiny.yaml",
        "--data",
        str(tmp_path / "data"),
        "--max-steps",
        str(steps),
        "--save-every",
        str(steps),
        "--no-progress",
        "--set",
        "data.tokens_per_batch=64",
        "--set",
        "run.tensorboard=false",
        "--set",
        f"deepspeed.zero_stage={zero_stage}",
        "--set",
        "deepspeed.stage3_param_persistence_threshold=0",
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
    for key in ("loss", "grad_norm"):
        values = [
            [json.loads(x)[key] for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
            for r in ("two", "one")
        ]
        assert len(values[0]) == steps
        torch.testing.assert_close(torch.tensor(values[0]), torch.tensor(values[1]), rtol=1e-6, atol=1e-6, msg=key)
