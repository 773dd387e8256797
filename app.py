"""The cat-tts Gradio demo: `python app.py --help` (the same as `cat-tts demo`; the logic lives in cat_tts/demo/).

    python app.py                                   # the released weights (downloaded from the Hugging Face hub)
    python app.py --model tiny/model --codec tiny/codec --min-new-frames 10   # offline, on make_tiny checkpoints

The script keeps the name Hugging Face Spaces runs. Needs the `app` extra: pip install 'cat-tts[app]'.
"""

import sys

from cat_tts.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
