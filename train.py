"""Train CAT-TTS under DeepSpeed: `python train.py --help` (the same as `cat-tts train`).

    python train.py --config configs/tiny.yaml --data DATA_DIR --out runs/tiny [--max-steps N] [--resume]
    deepspeed --num_gpus 8 train.py --config configs/cat_tts_1_7b.yaml --data DATA_DIR --out runs/big

The logic lives in `cat_tts/training/cli.py`.
"""

import sys

from cat_tts.training.cli import load_config, main, parse_args  # noqa: F401 - the script's public names

if __name__ == "__main__":
    sys.exit(main())
