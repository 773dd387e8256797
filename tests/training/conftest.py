"""Fixtures for the training tests."""

from __future__ import annotations

import sys
from pathlib import Path

# The training tests share the in-memory dataset helpers of the data tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
