"""Fixtures for the data tests: the tiny tokenizer, tiny token ids, and an in-memory prepared dataset."""

from __future__ import annotations

import pytest
from memory_dataset import MemoryDataset, make_utterances


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
