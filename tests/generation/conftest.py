"""Shared fixtures for generation tests: the golden tiny checkpoint and its prompts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "generation"


@pytest.fixture(scope="session")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(ASSETS / "golden.safetensors"))


@pytest.fixture(scope="session")
def golden_model():
    from cat_tts.model import CatTTSModel

    return CatTTSModel.from_pretrained(ASSETS / "model", attn_implementation="sdpa").eval()
