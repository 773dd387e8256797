"""Where checkpoints come from: the default released ids, defined once for every entry point."""

from __future__ import annotations

DEFAULT_MODEL = "OpenMOSS-Team/MOSS-TTS-Local-Transformer"  # the released CAT-TTS weights (with its tokenizer)
DEFAULT_CODEC = "OpenMOSS-Team/MOSS-Audio-Tokenizer"  # the released CAT codec weights
