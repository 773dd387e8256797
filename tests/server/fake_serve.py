"""Runs the server on the fake pipeline in its own process, through the same runner as serve.py (for the SIGTERM
tests): python tests/server/fake_serve.py PORT_FILE VOICES_DIR [--frame-time S] [--grace S]."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `tests.server` and `cat_tts`

from cat_tts.server.app import create_app  # noqa: E402
from cat_tts.server.config import ServerConfig  # noqa: E402
from cat_tts.server.runner import serve_forever  # noqa: E402
from tests.server.conftest import free_socket  # noqa: E402
from tests.server.fakes import FakeBackend  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("port_file")
    p.add_argument("voices_dir")
    p.add_argument("--frame-time", type=float, default=0.05)
    p.add_argument("--grace", type=float, default=30.0)
    args = p.parse_args()
    logging.basicConfig(level="INFO")
    backend = FakeBackend(frame_time=args.frame_time)
    config = ServerConfig(voices_dir=Path(args.voices_dir), shutdown_grace=args.grace)
    app = create_app(config, backend)
    sock = free_socket()
    Path(args.port_file).write_text(str(sock.getsockname()[1]))
    code = serve_forever(app, sock, config, "info")
    logging.getLogger("fake_serve").info("engine closed with grace %s", backend.closed_with)
    return code


if __name__ == "__main__":
    sys.exit(main())
