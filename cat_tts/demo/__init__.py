"""The cat-tts Gradio demo: voice cloning with a bitrate slider, streaming playback and side-by-side depths.

    request.py   the page's labels for the request's fields (DEMO_LABELS), widget values -> SpeechRequest, DemoLimits
    handlers.py  the callbacks: streamed generation, the bitrate comparison, visible errors
    ui.py        the Blocks layout (every request field has a widget) and launching
    cli.py       the command line (`cat-tts demo`, `python app.py`): loads the service on the engine and starts it

Gradio is an optional dependency (`pip install 'cat-tts[app]'`), imported only when a page is built.
"""

from cat_tts.demo.handlers import DemoHandlers, EmptyOutputError, GenerationStats
from cat_tts.demo.request import DEMO_LABELS, PAGE_INPUTS, DemoLimits, bitrate_info, kbps, page_request
from cat_tts.demo.ui import Example, build_demo, bundled_examples, default_depths, launch_demo, slider_explanation

__all__ = [
    "DEMO_LABELS",
    "PAGE_INPUTS",
    "DemoHandlers",
    "DemoLimits",
    "EmptyOutputError",
    "Example",
    "GenerationStats",
    "bitrate_info",
    "build_demo",
    "bundled_examples",
    "default_depths",
    "kbps",
    "launch_demo",
    "page_request",
    "slider_explanation",
]
