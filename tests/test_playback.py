"""Playback stalls: the closed form equals a player simulated step by step."""

from __future__ import annotations

import random

import pytest

from cat_tts.playback import stall_seconds, waits


def _simulated_player(arrivals: list[float], durations: list[float]) -> float:
    """A player that starts at the first arrival, plays each piece when it has both finished the previous one and
    received this one, and counts the time it spends waiting."""
    clock = arrivals[0]  # when the player is ready for the next piece
    waited = 0.0
    for arrival, duration in zip(arrivals, durations, strict=True):
        if arrival > clock:
            waited += arrival - clock
            clock = arrival
        clock += duration
    return waited


def test_a_stream_ahead_of_playback_never_stalls():
    assert stall_seconds([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) == 0.0  # everything at once
    assert stall_seconds([5.0, 5.5, 6.0, 7.0], [0.5, 0.5, 1.0, 1.0]) == 0.0  # each piece exactly when needed
    assert stall_seconds([], []) == 0.0


def test_a_late_piece_stalls_by_its_lateness_and_later_pieces_are_measured_from_the_new_schedule():
    # needed at 1.0, arrives at 1.5: 0.5 s stall; the schedule moves by 0.5 s, so the third piece (needed at 2.5)
    # arriving at 2.4 adds nothing, and the fourth (needed at 3.5) arriving at 4.0 adds 0.5 s.
    assert stall_seconds([0.0, 1.5, 2.4, 4.0], [1.0, 1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert waits([0.0, 1.5, 2.4, 4.0], [1.0, 1.0, 1.0, 1.0]) == pytest.approx([0.0, 0.5, 0.0, 0.5])  # which piece


@pytest.mark.parametrize("seed", range(20))
def test_stall_equals_a_simulated_player(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 30)
    arrivals = sorted(rng.uniform(0, 10) for _ in range(n))
    durations = [rng.choice([0.0, rng.uniform(0, 1)]) for _ in range(n)]
    assert stall_seconds(arrivals, durations) == pytest.approx(_simulated_player(arrivals, durations), abs=1e-9)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same length"):
        stall_seconds([0.0], [])
    with pytest.raises(ValueError, match="must not decrease"):
        stall_seconds([1.0, 0.5], [1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        stall_seconds([0.0], [-1.0])
