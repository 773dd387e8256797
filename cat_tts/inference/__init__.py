"""Speech from text and a voice: the request (`SpeechRequest`), text planning, the service (`CatTTS`), output.

    request.py   SpeechRequest, Limits: what a user can ask, validated once
    planning.py  text -> segments (prompt grids, seeds, frame estimates); SynthesisConfig
    service.py   CatTTS: load, submit, synthesize / stream / batch
    output.py    cross-fade, one-shot and streaming decode
    voice.py     a reference clip -> codes
    live.py      realtime sessions: text streamed in, audio out

The names are imported lazily: a front end that only parses its input into a `SpeechRequest` does not load the model
code (transformers).
"""

from __future__ import annotations

from cat_tts import lazy_exports

_EXPORTS = {
    "CatTTS": "cat_tts.inference.service",
    "SpeechStream": "cat_tts.inference.output",
    "SynthesisConfig": "cat_tts.inference.planning",
    "Limits": "cat_tts.inference.request",
    "SpeechRequest": "cat_tts.inference.request",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("cat_tts.inference", _EXPORTS)
