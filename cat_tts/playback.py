"""What a listener hears from a stream: playback stalls computed from the arrival times of its audio.

A player starts at the first audio that arrives and plays continuously at real time; when the next piece has not
arrived by the time the audio before it has been played, it waits (a stall) and resumes as soon as the piece
arrives. `waits` gives the wait before each piece, `stall_seconds` their total: 0 for a stream that always stays ahead
of playback.

Used by the benchmarks (`cat_tts.tools.bench engine|serve|realtime`), the server's per-stream metrics and the
realtime client.
"""

from __future__ import annotations

from collections.abc import Sequence


def stall_seconds(arrivals: Sequence[float], durations: Sequence[float]) -> float:
    """Total time a player that started at the first arrival waits for data (the sum of `waits`).

    Args:
        arrivals: when each piece of audio arrived, in seconds on any clock, in arrival order.
        durations: audio seconds each piece carries (>= 0), same length as `arrivals`.

    Returns:
        The total stall in seconds (0.0 for no pieces or a stream that stays ahead).

    Raises:
        ValueError: the sequences differ in length, arrivals go back in time, or a duration is negative.
    """
    return sum(waits(arrivals, durations), 0.0)


def waits(arrivals: Sequence[float], durations: Sequence[float]) -> list[float]:
    """How long the player waits for each piece (0.0 for a piece that arrived in time; the first piece starts it).

    Piece i is needed at `arrivals[0] + A_i + W_i` (A_i: audio seconds before it, W_i: waits so far); the player
    waits `arrivals[i]` minus that when positive, i.e. by how much `arrivals[i] - A_i` exceeds its maximum over
    the pieces before (the latest piece relative to the real-time schedule).

    Raises:
        ValueError: as `stall_seconds`.
    """
    if len(arrivals) != len(durations):
        raise ValueError(f"arrivals and durations must have the same length, got {len(arrivals)} and {len(durations)}")
    if not arrivals:
        return []
    played = 0.0  # audio seconds before the current piece
    latest = arrivals[0]  # max over pieces so far of arrival - audio before it
    previous = arrivals[0]
    out = []
    for arrival, duration in zip(arrivals, durations, strict=True):
        if arrival < previous:
            raise ValueError(f"arrivals must not decrease, got {arrival} after {previous}")
        if duration < 0:
            raise ValueError(f"durations must be >= 0, got {duration}")
        out.append(max(arrival - played - latest, 0.0))
        latest = max(latest, arrival - played)
        played += duration
        previous = arrival
    return out
