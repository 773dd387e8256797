"""The scheduling policy as pure functions: admissions, prefill, buckets, read-back, and depth "auto" under load."""

from __future__ import annotations

import pytest

from cat_tts.generation.policy import FrameClock, Limits, Slot, Waiting, choose_depth, plan_frame, plan_step

LIMITS = Limits(buckets=(1, 2, 4, 8), prefill_chunk=16, prefill_budget=32, sync_every=4, frame_period=0.08)


def running(request: int, depth: int = 32, frames_run: int = 3, budget: int = 100) -> Slot:
    return Slot(request, "running", 10, 10, depth, frames_run, budget)


def test_admissions_take_the_lowest_free_slots_and_prefill_first_come_first_served():
    slots = [running(0), None, running(1), None]
    queue = [Waiting(5, 40, (8, 8), 50), Waiting(6, 10, (12, 12), 50), Waiting(7, 5, (1, 1), 50)]
    plan = plan_step(queue, slots, window=1, clock=FrameClock(), limits=LIMITS)
    assert [(a.slot, a.request, a.depth) for a in plan.admit] == [(1, 5, 8), (3, 6, 12)]  # request 7 waits
    # 32 rows of budget: request 5's first two chunks (16 + 16), then the budget is spent while others generate
    assert [(p.slot, p.rows, p.completes) for p in plan.prefill] == [(1, 16, False), (1, 16, False)]
    assert plan.frame.bucket == 4 and plan.frame.k_max == 32


def test_a_prompt_completed_in_this_step_joins_its_frame_and_is_read_right_after():
    plan = plan_step([Waiting(0, 10, (5, 5), 20)], [None] * 4, window=0, clock=FrameClock(), limits=LIMITS)
    assert [(p.rows, p.completes) for p in plan.prefill] == [(10, True)]
    assert plan.frame.bucket == 1 and plan.frame.k_max == 5 and plan.frame.read_after  # its first frame: read now


def test_without_generating_slots_prefill_runs_past_the_budget_until_one_prompt_is_complete():
    plan = plan_step([Waiting(0, 70, (3, 3), 20)], [None] * 2, window=0, clock=FrameClock(), limits=LIMITS)
    assert [p.rows for p in plan.prefill] == [16, 16, 16, 16, 6] and plan.prefill[-1].completes


def test_the_bucket_holds_the_highest_running_slot_and_read_back_follows_the_window():
    slots = [None, None, None, None, None, running(9, depth=7)]
    frame = plan_frame(slots, window=1, limits=LIMITS)
    assert frame.bucket == 8 and frame.k_max == 7 and not frame.read_after
    assert plan_frame(slots, window=3, limits=LIMITS).read_after  # the 4th frame of the window
    assert plan_frame([running(1, frames_run=99, budget=100)], window=0, limits=LIMITS).read_after  # its last
    assert plan_frame([Slot(1, "prefill", 10, 0, 4, 0, 9)], window=0, limits=LIMITS) is None


def test_auto_depth_alone_or_unmeasured_takes_the_ceiling():
    clock = FrameClock()
    assert choose_depth((1, 32), bucket=1, others_k_max=1, clock=clock, limits=LIMITS) == 32
    assert choose_depth((4, 20), bucket=1, others_k_max=1, clock=clock, limits=LIMITS) == 20
    clock.observe(1, 32, 0.02)  # a lone request at K = 32 is well under real time (80 ms)
    assert choose_depth((1, 32), bucket=1, others_k_max=1, clock=clock, limits=LIMITS) == 32


def test_auto_depth_falls_as_load_rises_and_comes_back_when_it_falls():
    clock = FrameClock()
    clock.observe(8, 32, 0.160)  # 8 slots at K = 32: twice real time
    clock.observe(8, 8, 0.050)
    depth = choose_depth((1, 32), bucket=8, others_k_max=1, clock=clock, limits=LIMITS)
    assert 8 <= depth < 32  # the highest depth predicted under 0.8 x 80 ms = 64 ms
    predicted = clock.predict(8, depth)
    assert predicted <= 0.8 * 0.08 < clock.predict(8, depth + 1)
    assert choose_depth((12, 32), bucket=8, others_k_max=1, clock=clock, limits=LIMITS) == 12  # never below min
    # load falls: a lone request is measured fast again, and depth comes back to the ceiling
    clock.observe(1, 32, 0.03)
    assert choose_depth((1, 32), bucket=1, others_k_max=1, clock=clock, limits=LIMITS) == 32
    # frames running at K = 32 are too slow whatever a new request asks: it starts at the depth that keeps real time
    # once the others come down to it too (every new request and segment does the same)
    assert choose_depth((1, 32), bucket=8, others_k_max=32, clock=clock, limits=LIMITS) == depth


def test_auto_depth_alone_takes_the_ceiling_unless_a_lone_frame_was_measured_slower_than_real_time():
    queue = [Waiting(0, 5, (4, 24), 20)]
    clock = FrameClock()
    assert plan_step(queue, [None] * 4, window=0, clock=clock, limits=LIMITS).admit[0].depth == 24  # unmeasured
    clock.observe(1, 24, 0.05)  # real time at K = 24 alone (under 0.8 x 80 ms)
    assert plan_step(queue, [None] * 4, window=0, clock=clock, limits=LIMITS).admit[0].depth == 24
    clock = FrameClock()
    clock.observe(1, 32, 0.120)  # a slow machine: a lone frame at K = 32 takes 120 ms, at K = 4 30 ms
    clock.observe(1, 4, 0.030)
    depth = plan_step(queue, [None] * 4, window=0, clock=clock, limits=LIMITS).admit[0].depth
    assert 4 < depth < 24 and clock.predict(1, depth) <= 0.8 * 0.08 < clock.predict(1, depth + 1)


def test_a_short_window_moves_the_frame_clock_less_than_a_long_one():
    short, long = FrameClock(), FrameClock()
    for clock in (short, long):
        clock.observe(2, 8, 0.040)
    short.observe(2, 8, 0.200, frames=1)  # a request's first frame, read at once, with its prefill in the window
    long.observe(2, 8, 0.200, frames=4)
    assert 0.040 < short.predict(2, 8) < long.predict(2, 8) == pytest.approx(0.040 + 0.3 * 0.160)


def test_auto_depth_in_plan_step_sees_the_requests_admitted_before_it():
    clock = FrameClock()
    clock.observe(1, 32, 0.05)
    clock.observe(2, 32, 0.12)
    clock.observe(2, 4, 0.03)
    queue = [Waiting(0, 5, (1, 32), 20), Waiting(1, 5, (1, 32), 20)]
    plan = plan_step(queue, [None, None], window=0, clock=clock, limits=LIMITS)
    first, second = plan.admit
    assert first.depth == 32  # alone: real time at K = 32
    assert second.depth == 14  # beside it: 2 slots stay under 64 ms up to K = 14 (0.03 + 0.09 x 10/28 = 0.062 s)


def test_frame_clock_predicts_linearly_in_depth_and_borrows_the_nearest_larger_bucket():
    clock = FrameClock()
    assert clock.predict(4, 8) is None
    clock.observe(4, 8, 0.010)
    clock.observe(4, 32, 0.034)
    assert abs(clock.predict(4, 16) - 0.018) < 1e-9
    assert abs(clock.predict(2, 16) - 0.018) < 1e-9  # no measurement at bucket 2: bucket 4's line (an upper bound)
    clock.observe(4, 8, 0.020)  # moving average, not the last value
    assert 0.010 < clock.predict(4, 8) < 0.020


def test_the_frame_clock_does_not_count_the_time_the_engine_waited_for_requests():
    from cat_tts.generation.readback import ReadBack

    class Runner:  # what ReadBack asks of the runner: a read of the window's frames
        def start_read(self, bucket, frames):
            return object()

    waited = ReadBack()
    waited.started -= 5.0  # the last read was 5 s ago; the engine has had nothing to run since
    waited.idle()
    busy = ReadBack()
    busy.started -= 5.0  # ... the same, but busy (prefilling, running frames): that time is the load's
    for rb in (waited, busy):
        rb.ran(bucket=1, k_max=32)
        rb.start(Runner(), [])
    assert waited.frame_seconds < 0.5 and waited.clock.predict(1, 32) < 0.5
    assert busy.frame_seconds >= 5.0
    waited.ran(bucket=1, k_max=32)
    started = waited.started
    waited.idle()  # a window with frames keeps its start: those frames' time is measured whole
    assert waited.started == started


def test_a_depth_measured_slow_is_tried_again_once_the_measurement_is_old():
    t = [0.0]
    clock = FrameClock(now=lambda: t[0])  # max_age_s = 10
    clock.observe(1, 32, 0.200)  # a lone frame at K = 32 slowed by a passing load
    clock.observe(1, 4, 0.010)
    t[0] = 9.0
    assert choose_depth((1, 32), bucket=1, others_k_max=0, clock=clock, limits=LIMITS) < 32
    clock.observe(1, 4, 0.010)  # the depth it now runs at keeps being measured; K = 32 does not
    t[0] = 12.0
    assert clock.predict(1, 4) == pytest.approx(0.010)
    assert choose_depth((1, 32), bucket=1, others_k_max=0, clock=clock, limits=LIMITS) == 32  # by the line from K=4
    t[0] = 30.0
    assert clock.predict(1, 4) is None and clock.seconds == {}  # nothing recent: as before any measurement
