"""cat-tts: CAT-TTS zero-shot text-to-speech at any bitrate over the CAT codec.

Public API (imported lazily so `import cat_tts` stays cheap):
    CatTTSModel  - temporal (Qwen3) + depth transformer over the RVQ grid   (cat_tts.model)
    CatTTSConfig - its configuration                                          (cat_tts.model)
    CatCodec     - the CAT / MOSS-Audio-Tokenizer codec                       (cat_tts.codec)
    CatTTS       - text + reference clip -> speech at depth K                 (cat_tts.inference)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CatTTSModel": "cat_tts.model",
    "CatTTSConfig": "cat_tts.model",
    "TokenIds": "cat_tts.model",
    "CatCodec": "cat_tts.codec",
    "CatTTS": "cat_tts.inference",
}

__all__ = sorted(_EXPORTS)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports each exported name from its module on first use (PEP 562), so importing a
    package stays cheap."""

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return getattr_


__getattr__ = lazy_exports("cat_tts", _EXPORTS)
