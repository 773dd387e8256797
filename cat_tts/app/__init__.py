"""The cat-tts Gradio demo: voice cloning with a bitrate slider, streaming playback and side-by-side depths.

`build_demo(pipeline)` builds the page; `launch_demo(demo)` serves it; `app.py` at the repository root is the
command line. Gradio is an optional dependency (`pip install 'cat-tts[app]'`), imported only when a page is built.
"""

from cat_tts.app.handlers import (
    DemoHandlers,
    DemoInputError,
    DemoLimits,
    GenerationStats,
    SamplingSettings,
    bitrate_info,
    kbps,
)
from cat_tts.app.ui import Example, build_demo, bundled_examples, launch_demo

__all__ = [
    "DemoHandlers",
    "DemoInputError",
    "DemoLimits",
    "Example",
    "GenerationStats",
    "SamplingSettings",
    "bitrate_info",
    "build_demo",
    "bundled_examples",
    "kbps",
    "launch_demo",
]
