"""The cat-tts Gradio demo: `python app.py --help` (see cat_tts/app/cli.py).

    python app.py                                   # the released weights (downloaded from the Hugging Face hub)
    python app.py --model tiny/model --codec tiny/codec --min-new-frames 10   # offline, on make_tiny checkpoints

Needs the `app` extra: pip install 'cat-tts[app]'.
"""

import sys
from pathlib import Path

from cat_tts.app.cli import main

ROOT = Path(__file__).resolve().parent  # holds docs/assets/reference.wav, the examples' reference clip

if __name__ == "__main__":
    sys.exit(main(examples_root=ROOT))
