"""Zero-shot voice cloning at a chosen depth (bitrate): `python infer.py --help` (the same as `cat-tts infer`).

    python infer.py --text "Hello from cat-tts." --depth 16 -o out.wav   # the bundled voice
    python infer.py --text "Hello." --prompt-audio ref.wav --language English --duration 2 -o out.wav
    python infer.py --jsonl jobs.jsonl --out-dir outs/ --depth 8          # batch; finished outputs are skipped

The logic lives in `cat_tts/commands/infer.py`.
"""

import sys

from cat_tts.commands.infer import main

if __name__ == "__main__":
    sys.exit(main())
