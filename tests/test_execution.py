"""The action executor on hand-made chunks: alignment at arrival, each strategy, rtc's prefix, threading."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xvla.execution import (
    STRATEGIES,
    ActionExecutor,
    ChunkScheduler,
    ExecutionConfig,
    motion_metrics,
    rtc_prefix_weights,
    trace_metrics,
)
from xvla.execution import strategies as st

T = 10


def labelled(observation, request):
    """Action i of a chunk = [the position it is meant for, the chunk number]: skips and repeats show."""
    return np.stack([np.arange(T) + request.position, np.full(T, request.number)], axis=1).astype(np.float32)


def run(strategy, delay, ticks=40, execute_steps=4, policy=labelled, **config):
    executor = ActionExecutor(
        policy, ExecutionConfig(strategy, execute_steps=execute_steps, **config), delay_steps=delay
    )
    with executor:
        records = [executor.step({"tick": k}) for k in range(ticks)]
    return executor, records


@pytest.mark.parametrize("strategy", ["replace", "rtc", "sync"])
@pytest.mark.parametrize("delay", [0, 1, 3, 6])
def test_no_action_is_skipped_or_repeated(strategy, delay):
    """Executed actions are meant for positions 0, 1, 2, ... with no gap and no repeat, at any delay."""
    _, records = run(strategy, delay)
    executed = [r for r in records if not r.idle]
    assert [round(float(r.action[0])) for r in executed] == list(range(len(executed)))
    assert all(r.index == round(float(r.action[0])) - _chunk_position(records, r) for r in executed)


def _chunk_position(records, record):
    first = next(r for r in records if r.chunk == record.chunk)
    return round(float(first.action[0])) - first.index


@pytest.mark.parametrize("delay", [1, 3, 5])
def test_a_new_chunk_starts_at_its_arrival_index(delay):
    _, records = run("replace", delay, execute_steps=4)
    assert [r.idle for r in records[:delay]] == [True] * delay  # nothing to do before the first chunk
    switches = [r for r in records if r.switch]
    assert switches[0].index == 0  # the robot held still: nothing of the first chunk is in the past
    assert all(r.index == delay for r in switches[1:])  # later chunks: the delay's actions are skipped
    # chunks are asked for every max(execute_steps, delay) ticks and there is no idle tick after the first
    assert sum(r.idle for r in records) == delay


def test_sync_holds_while_waiting_and_starts_each_chunk_at_zero():
    _, records = run("sync", 3, ticks=21, execute_steps=4)
    assert [r.idle for r in records[:7]] == [True] * 3 + [False] * 4
    assert all(r.index == 0 for r in records if r.switch)
    assert sum(r.idle for r in records) == 9  # three waits of 3 ticks in 21 ticks


def test_sync_and_replace_are_identical_without_delay():
    _, sync = run("sync", 0)
    _, replace = run("replace", 0)
    assert [tuple(r.action) for r in sync] == [tuple(r.action) for r in replace]
    assert not any(r.idle for r in sync)


def test_execute_steps_is_cut_when_the_delay_would_starve_the_plan():
    _, records = run("replace", 4, ticks=60, execute_steps=8)  # 8 + 4 > T: ask after T - 4 = 6 actions
    assert sum(r.idle for r in records) == 4  # only the wait for the first chunk


def test_a_delay_longer_than_the_chunk_idles_but_never_repeats():
    _, records = run("replace", 12, ticks=60)
    executed = [int(r.action[0]) for r in records if not r.idle]
    assert executed == list(range(len(executed)))


# ---------------------------------------------------------------------------------------------- strategies
def constant(values):
    """Chunk n is the constant values[n] (2 channels)."""

    def policy(observation, request):
        return np.full((T, 2), values[min(request.number, len(values) - 1)], dtype=np.float32)

    return policy


def test_replace_jumps_at_the_switch():
    _, records = run("replace", 2, policy=constant([0.0, 1.0]), execute_steps=4, ticks=10)
    values = [float(r.action[0]) for r in records if not r.idle]
    assert values == [0.0] * 6 + [1.0] * 2  # asked after 4 actions, arrived 2 ticks later


def test_blend_cross_fades_over_the_overlap():
    _, records = run("blend", 2, policy=constant([0.0, 1.0]), execute_steps=4, ticks=14, blend_steps=3)
    values = [round(float(r.action[0]), 6) for r in records if not r.idle]
    assert values[:6] == [0.0] * 6
    assert values[6:9] == pytest.approx([0.25, 0.5, 0.75])  # continuous: steps of 1/(n+1)
    assert values[9:] == [1.0] * len(values[9:])


def test_blend_without_length_uses_the_whole_overlap():
    old, new = np.zeros((4, 1)), np.ones((6, 1))
    out = st.blend(old, new)
    assert out[:, 0].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_ensemble_averages_every_chunk_covering_a_tick():
    chunks = [(0, np.zeros((6, 1))), (2, np.ones((6, 1))), (4, np.full((6, 1), 2.0))]
    out = ensemble_at(chunks, 4, decay=0.0)
    assert out[:, 0].tolist() == pytest.approx([1.0, 1.0, 1.5, 1.5, 2.0, 2.0])
    decayed = ensemble_at(chunks, 4, decay=1.0)
    w = np.exp(-np.arange(3))
    assert decayed[0, 0] == pytest.approx((w @ [0.0, 1.0, 2.0]) / w.sum())  # older chunks weigh more (ACT)


def ensemble_at(chunks, position, decay):
    return st.ensemble(chunks, position, decay)


def test_ensemble_executor_uses_the_weighted_mean():
    _, records = run(
        "ensemble", 0, policy=constant([0.0, 1.0, 1.0, 1.0]), execute_steps=4, ticks=12, ensemble_decay=0.0
    )
    values = [float(r.action[0]) for r in records]
    assert values[:4] == [0.0] * 4 and values[4:8] == [0.5] * 4  # two chunks cover ticks 4-7


def test_rtc_sends_the_committed_prefix_with_weight_one_over_the_delay():
    seen = []

    def policy(observation, request):
        seen.append(request)
        return labelled(observation, request)

    run("rtc", 3, policy=policy, execute_steps=4, ticks=20)
    first, second = seen[0], seen[1]
    assert first.prefix is None  # nothing committed before the first chunk
    assert second.delay == 3 and second.position == 4
    assert second.prefix[:, 0].tolist() == list(range(4, T))  # the plan from the observation on
    assert second.prefix_weights[:3].tolist() == [1.0, 1.0, 1.0]
    assert np.all(np.diff(second.prefix_weights[3:]) < 0) and second.prefix_weights[-1] > 0


def test_rtc_honours_the_prefix_even_when_the_policy_ignores_it():
    """A policy that cannot take a prefix gets rtc's mask applied after sampling: weight 1 = committed action."""
    _, records = run("rtc", 3, policy=constant([0.0, 1.0]), execute_steps=4, ticks=16)
    values = [float(r.action[0]) for r in records if not r.idle]
    assert values[:7] == [0.0] * 7  # four planned + three committed during the delay
    weights = rtc_prefix_weights(3, T - 4)
    assert values[7] == pytest.approx(1 - weights[3])  # then the soft part of the mask
    assert np.all(np.diff(values[7:12]) > 0)


def test_rtc_prefix_honouring_policy_is_used_as_is():
    def policy(observation, request):
        chunk = np.ones((T, 2), dtype=np.float32)
        if request.prefix is not None:
            chunk[: request.delay] = request.prefix[: request.delay]
        return chunk

    policy.accepts_prefix = True
    _, records = run("rtc", 2, policy=policy, execute_steps=4, ticks=12)
    assert all(float(r.action[0]) == 1.0 for r in records if not r.idle)


def test_other_policy_forms():
    """An object with predict_action_chunk (batched, torch) and a one-argument callable both work."""
    import torch

    class Fake:
        def predict_action_chunk(self, batch, **kwargs):
            assert batch["observation.state"].shape == (1, 3) and batch["task"] == ["go"]
            return torch.arange(T, dtype=torch.float32).view(1, T, 1).repeat(1, 1, 2)

    for policy in (Fake(), lambda observation: np.arange(T, dtype=np.float32)[:, None].repeat(2, 1)):
        executor = ActionExecutor(policy, ExecutionConfig("rtc", execute_steps=4), delay_steps=2)
        with executor:
            records = [executor.step({"observation.state": np.zeros(3), "task": "go"}) for _ in range(14)]
        assert [r.index for r in records if not r.idle][:8] == [0, 1, 2, 3, 4, 5, 2, 3]


def test_rtc_weights():
    w = rtc_prefix_weights(2, 6)
    assert w[:2].tolist() == [1.0, 1.0]
    assert np.all((w[2:] > 0) & (w[2:] < 1)) and np.all(np.diff(w[2:]) < 0)
    assert rtc_prefix_weights(0, 0).shape == (0,)
    assert rtc_prefix_weights(5, 3).tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------------- threads
def test_the_background_inference_never_blocks_the_control_tick():
    release = threading.Event()
    started = threading.Event()
    returned_while_blocked = []

    def slow(observation, request):
        started.set()
        assert release.wait(timeout=60), "the control loop never released the policy"
        return labelled(observation, request)

    executor = ActionExecutor(slow, ExecutionConfig("replace", execute_steps=4), control_dt=0.01)
    with executor:
        for k in range(5):
            action = executor.act({"tick": k})
            returned_while_blocked.append((action, release.is_set()))
        assert started.wait(timeout=60)
        release.set()
        executor._future.result(timeout=60)  # let the inference finish before the next tick
        first = executor.step({"tick": 5})
    assert returned_while_blocked == [(None, False)] * 5  # five ticks passed while inference was stuck
    assert not first.idle and first.index == 0 and first.switch


def test_real_time_mode_measures_latency_and_aligns_by_what_was_executed():
    clock = {"now": 0.0}

    def timed(observation, request):
        clock["now"] += 0.035  # each inference "takes" 35 ms of the fake clock = 4 ticks of 10 ms
        return labelled(observation, request)

    executor = ActionExecutor(
        timed, ExecutionConfig("rtc", execute_steps=4), control_dt=0.01, clock=lambda: clock["now"]
    )
    with executor:
        executor.act({})
        executor._future.result()
        records = [executor.step({}) for _ in range(12)]
        assert executor.expected_delay == 4
    executed = [int(r.action[0]) for r in [*records] if not r.idle]
    assert executed == list(range(executed[0], executed[0] + len(executed)))


def test_failed_inference_raises_in_the_control_loop_and_recovers():
    calls = []

    def flaky(observation, request):
        calls.append(request.number)
        if len(calls) == 1:
            raise RuntimeError("server down")
        return labelled(observation, request)

    executor = ActionExecutor(flaky, "replace", delay_steps=1)
    with executor:
        executor.act({})
        with pytest.raises(RuntimeError, match="server down"):
            executor.act({})
        executor.act({})
        assert not executor.step({}).idle


def test_reset_drops_the_plan_and_a_stale_chunk():
    executor, _ = run("replace", 2, ticks=7)
    executor = ActionExecutor(labelled, ExecutionConfig("replace", execute_steps=4), delay_steps=2)
    with executor:
        for _ in range(7):
            executor.act({})
        executor.reset()
        assert executor.step({}).idle and executor.scheduler.position == 0


# ---------------------------------------------------------------------------------------------- errors, metrics
def test_clear_errors():
    with pytest.raises(ValueError, match=r"strategy 'smooth' is unknown: choose one of \['sync', 'replace'"):
        ExecutionConfig("smooth")
    with pytest.raises(ValueError, match="exactly one of delay_steps"):
        ActionExecutor(labelled, "sync")
    with pytest.raises(ValueError, match="guidance='x' is unknown"):
        ExecutionConfig("rtc", guidance="x")
    with pytest.raises(TypeError, match="cannot get action chunks"):
        ActionExecutor(42, "sync", delay_steps=0)
    scheduler = ChunkScheduler(ExecutionConfig("replace"))
    req = scheduler.request(0)
    with pytest.raises(ValueError, match=r"\[T, action_dim\]"):
        scheduler.receive(req, np.zeros(3))
    assert set(STRATEGIES) == {"sync", "replace", "blend", "ensemble", "rtc"}


def test_motion_metrics():
    actions = np.array([[0.0], [0.5], [0.5], [1.5], [1.5]])
    m = motion_metrics(
        actions, idle=[True, False, False, False, False], switch=[False, True, False, True, False]
    )
    # the first chunk's start from rest is not a switch; the second chunk jumps by 1
    assert m["max_switch_jump"] == 1.0 and m["idle_steps"] == 1 and m["switches"] == 1
    assert m["max_jerk"] == pytest.approx(1.0)  # second differences of [0, 0.5, 0.5, 1.5, 1.5]: -0.5, 1, -1
    executor, _ = run("sync", 2, ticks=12)
    metrics = trace_metrics(executor.trace, dims=[0])
    assert metrics["idle_steps"] == 4
