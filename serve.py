"""OpenAI-compatible speech server for cat-tts: `python serve.py --help` (see cat_tts/server/cli.py)."""

import sys

from cat_tts.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
