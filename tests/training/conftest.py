"""Fixtures for the training tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The training tests share the in-memory dataset helpers of the data tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a loaded 2-core machine two threads make every small
    matmul many times slower. Restored after each module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
