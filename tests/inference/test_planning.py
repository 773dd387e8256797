"""Seeds of a request's batch items and text segments: derived by hashing (seed, item, segment)."""

from __future__ import annotations

from cat_tts.generation import GenerationConfig
from cat_tts.inference.planning import derive_seed


def test_every_item_and_segment_draws_its_own_noise():
    seeds = {(i, s): derive_seed(1234, item=i, segment=s) for i in range(12) for s in range(12)}
    assert seeds[(0, 0)] == 1234  # a one-segment request gives what the engine gives for its seed
    assert seeds[(0, 1)] != seeds[(1, 0)]  # the old seed + item + segment gave both 1235
    assert len(set(seeds.values())) == len(seeds)
    assert all(GenerationConfig(seed=s).seed == s for s in seeds.values())  # every one is a valid seed
    assert derive_seed(1234, item=3, segment=5) == seeds[(3, 5)]  # deterministic
    assert derive_seed(1235, item=3, segment=5) != seeds[(3, 5)]
    assert derive_seed(None, item=3, segment=5) is None  # unseeded stays unseeded
