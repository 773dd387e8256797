"""Speech from text and a voice: the request (`SpeechRequest`), text planning, the service (`CatTTS`), output.

request.py   SpeechRequest, Limits: what a user can ask, validated once
planning.py  text -> segments (prompt grids, seeds, frame estimates); SynthesisConfig
service.py   CatTTS: load, submit, synthesize / stream / batch
output.py    cross-fade, one-shot and streaming decode
"""

from cat_tts.inference.planning import SynthesisConfig
from cat_tts.inference.request import Limits, SpeechRequest
from cat_tts.inference.service import CatTTS, SpeechStream

__all__ = ["CatTTS", "Limits", "SpeechRequest", "SpeechStream", "SynthesisConfig"]
