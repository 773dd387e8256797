"""Files that ship inside the package: the default voice.

The default voice is a synthetic clip made for this project (espeak-ng; no third-party recording) and its transcript.
Every front end that needs a voice when none is given (infer.py, the server's voice "default", the demo's examples)
reads it through `default_voice()`, so an installed wheel finds it wherever it is installed. (`docs/assets/` in the
repository links to these files.)
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from cat_tts.errors import UserError

VOICE_AUDIO = "reference.wav"  # 24 kHz mono, 6.9 s
VOICE_TEXT = "reference.txt"  # its transcript, one line of UTF-8


@dataclass(frozen=True)
class Voice:
    """A reference clip and its transcript."""

    audio: Path  # the clip (a file any front end can read)
    text: str  # what the clip says (enables continuation mode)


def default_voice() -> Voice:
    """The bundled voice: `cat_tts/assets/reference.wav` and its transcript.

    Raises:
        UserError: the package was installed without its data files (the message says how to fix that).
    """
    root = Path(str(files(__name__)))  # an installed wheel is a directory on disk (never a zip: see pyproject.toml)
    audio, text = root / VOICE_AUDIO, root / VOICE_TEXT
    if not audio.is_file() or not text.is_file():
        raise UserError(
            f"the default voice is missing from the installed package ({audio}); reinstall cat-tts, or give a "
            "reference clip of your own"
        )
    return Voice(audio=audio, text=text.read_text(encoding="utf-8").strip())
