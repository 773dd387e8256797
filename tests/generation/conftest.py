"""Shared fixtures for generation tests: the golden tiny checkpoint and its prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "generation"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is much faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(ASSETS / "golden.safetensors"))


@pytest.fixture(scope="session")
def golden_model():
    from cat_tts.model import CatTTSModel

    return CatTTSModel.from_pretrained(ASSETS / "model", attn_implementation="sdpa").eval()
