"""Train CAT-TTS under DeepSpeed: the command line of `cat-tts train` and `python train.py` (same options).

    python train.py --config configs/tiny.yaml --data DATA_DIR --out runs/tiny [--max-steps N] [--resume]
    deepspeed --num_gpus 8 train.py --config configs/cat_tts_1_7b.yaml --data DATA_DIR --out runs/big
    deepspeed --hostfile hosts --num_nodes 4 --num_gpus 8 train.py --config ... (multi-node)

Settings come from the YAML config (see cat_tts/training/config.py); the flags below override single
fields, `--set section.field=value` any field. `--print-deepspeed` prints the DeepSpeed JSON the run uses.
`--resume` continues from the newest intact checkpoint (every file checked against the checkpoint's manifest;
a damaged newer checkpoint is named and moved aside). A resumed run must train as the checkpoint's run did: a
changed training field (e.g. `--set optim.lr=1e-4`) is refused, naming each change (old -> new), unless
`--allow-config-change` is given; the run length, logging, saving and loader workers may change freely.

One run per run directory: while a run lives it holds `OUT/train.lock`; a second run on the same `--out` exits 2
naming the first one's pid. A lock left by a killed run is reported and taken over.

Exit codes: 0 done; 2 a user error (bad config, data, --out, checkpoint; one line on stderr); 3 the loss
became NaN/inf; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def parse_args(argv: list[str] | None = None, prog: str = "train.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="training config YAML (e.g. configs/tiny.yaml)")
    parser.add_argument("--data", default=None, help="prepared dataset directory (overrides data.path)")
    parser.add_argument(
        "--init",
        default=None,
        help="start point (overrides model.init): qwen3:PATH_OR_ID, or a CAT-TTS checkpoint dir/hub id",
    )
    parser.add_argument("--out", default=None, help="run directory (overrides run.out)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps of the run (run.max_steps)")
    parser.add_argument("--save-every", type=int, default=None, help="checkpoint interval in steps (run.save_every)")
    parser.add_argument("--log-every", type=int, default=None, help="logging interval in steps (run.log_every)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint in the run directory (damaged ones are named and set aside)",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue even though training fields of the config differ from the checkpoint's "
        "(the changes are listed as a warning); without it such a resume is refused",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any config field (repeatable), e.g. --set optim.lr=1e-4",
    )
    parser.add_argument(
        "--print-deepspeed",
        action="store_true",
        help="print the generated DeepSpeed JSON (for a CUDA run; with --device-type cpu for CPU) and exit",
    )
    parser.add_argument("--device-type", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Passed by the deepspeed launcher; the rank is read from the environment.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace):
    from cat_tts.training.config import TrainConfig

    cfg = TrainConfig.from_yaml(args.config)
    overrides = list(args.overrides)
    for flag, name in (
        ("data", "data.path"),
        ("init", "model.init"),
        ("out", "run.out"),
        ("max_steps", "run.max_steps"),
        ("save_every", "run.save_every"),
        ("log_every", "run.log_every"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{name}={value}" if not isinstance(value, str) else f"{name}={_quote(value)}")
    return cfg.with_overrides(overrides)


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar: paths stay strings


def _error(err: BaseException) -> int:
    from cat_tts.errors import USER_ERROR_EXIT_CODE

    print(f"train.py: error: {err}", file=sys.stderr)
    return USER_ERROR_EXIT_CODE


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    args = parse_args(argv, prog)
    from cat_tts.errors import UserError

    try:
        cfg = load_config(args)
    except (UserError, OSError) as err:
        return _error(err)
    if args.print_deepspeed:
        from cat_tts.training.deepspeed_config import deepspeed_config_json

        try:
            print(deepspeed_config_json(cfg, args.device_type), end="")
        except UserError as err:
            return _error(err)
        return 0
    from cat_tts.cli import check_writable_dir

    try:
        check_writable_dir(cfg.run.out, "--out")  # before DeepSpeed is even imported
    except UserError as err:
        return _error(err)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from cat_tts.training.loop import NonFiniteLossError, train

    try:
        result = train(
            cfg, resume=args.resume, progress=not args.no_progress, allow_config_change=args.allow_config_change
        )
    except KeyboardInterrupt:
        print("train.py: interrupted; continue from the last checkpoint with --resume", file=sys.stderr)
        return 130
    except NonFiniteLossError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 3
    except (UserError, OSError, ImportError) as err:  # any other exception is a bug: keep its traceback
        return _error(err)
    if rank == 0:
        print(f"train.py: done at step {result.step}; checkpoint {result.checkpoint}; model {result.model_dir}")
    return 0
