"""Fixtures for the data tests: the tiny tokenizer, tiny token ids, and an in-memory prepared dataset."""

from __future__ import annotations

import pytest
import torch
from memory_dataset import MemoryDataset, make_utterances


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny work gains nothing from intra-op threads; on a loaded 2-core machine two threads thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizer():
    from cat_tts.text.tiny_tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def token_ids():
    from cat_tts.model import CatTTSConfig

    return CatTTSConfig.tiny().token_ids


@pytest.fixture
def memory_dataset():
    return MemoryDataset(make_utterances(40))
