"""`python -m cat_tts COMMAND ...`: the `cat-tts` command (see `cat_tts.commands`)."""

import sys

from cat_tts.commands import main

if __name__ == "__main__":
    sys.exit(main())
