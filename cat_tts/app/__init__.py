"""The cat-tts Gradio demo: voice cloning with a bitrate slider, streaming playback and side-by-side depths.

`build_demo(pipeline)` builds the page; `launch_demo(demo)` serves it; `cat_tts.app.cli.main` (run by `app.py` at
the repository root) is the command line: it loads the pipeline on the continuous-batching engine and starts it, so
concurrent users are generated together. Gradio is an optional dependency (`pip install 'cat-tts[app]'`), imported
only when a page is built.
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
from cat_tts.app.ui import Example, build_demo, bundled_examples, default_depths, launch_demo, slider_explanation

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
    "default_depths",
    "kbps",
    "launch_demo",
    "slider_explanation",
]
