"""The chaos run's fault schedule and workload: a seed names them."""

from __future__ import annotations

import pytest

from chaos.schedule import (FAULT_KINDS, NETWORK_TARGETS, STALL_ACTIONS, ScheduleConfig, digest,
                            make_schedule, slot_names)
from chaos.workload import WorkloadConfig, plan_tasks


def test_the_same_seed_gives_the_same_schedule():
    config = ScheduleConfig()
    assert make_schedule(7, config) == make_schedule(7, ScheduleConfig())
    assert digest(make_schedule(7, config)) == digest(make_schedule(7, config))


def test_another_seed_gives_another_schedule():
    assert digest(make_schedule(1, ScheduleConfig())) != digest(make_schedule(2, ScheduleConfig()))


def test_every_kind_is_scheduled_as_often_as_asked_inside_the_window():
    config = ScheduleConfig()
    schedule = make_schedule(1, config)
    assert {k: sum(f.kind == k for f in schedule) for k in FAULT_KINDS} == config.counts
    assert all(0 <= f.at < config.window for f in schedule)
    assert [f.at for f in schedule] == sorted(f.at for f in schedule)


def test_targets_fit_their_kind():
    config = ScheduleConfig(pools=("prefork", "threads", "threads"),
                            counts={"kill9": 20, "kill9_pool_process": 20, "stall": 20})
    schedule = make_schedule(3, config)
    assert {f.target for f in schedule if f.kind == "kill9"} <= set(slot_names(config.pools))
    assert {f.target for f in schedule if f.kind == "kill9_pool_process"} == {"w1"}
    stalls = [f for f in schedule if f.kind == "stall"]
    assert {f.target for f in stalls} <= set(STALL_ACTIONS)
    assert all(f.seconds > 10 for f in stalls)  # past the workers' read timeout


def test_the_credentials_outage_ends_inside_the_window_and_outlasts_a_token():
    config = ScheduleConfig(window=100, outage_seconds=40)
    for seed in range(20):
        (outage,) = [f for f in make_schedule(seed, config) if f.kind == "credentials_outage"]
        assert outage.at + outage.seconds <= config.window


def test_a_schedule_that_cannot_be_applied_is_refused_saying_why():
    with pytest.raises(ValueError, match="outage_seconds must be < window"):
        ScheduleConfig(window=30, outage_seconds=45)
    with pytest.raises(ValueError, match="kill9_pool_process needs a prefork slot"):
        ScheduleConfig(pools=("threads",))
    with pytest.raises(ValueError, match="unknown fault kinds"):
        ScheduleConfig(counts={"meteor": 1})


def test_the_workload_is_seeded_and_mixes_long_and_countdown_tasks():
    config = WorkloadConfig(tasks=5000)
    plan = plan_tasks(1, config)
    assert plan == plan_tasks(1, config) and plan != plan_tasks(2, config)
    assert len({t.id for t in plan}) == 5000
    kinds = [t.kind for t in plan]
    assert kinds.count("long") >= 1 and kinds.count("countdown") >= 50
    assert all(t.seconds > 15 for t in plan if t.kind == "long")
    assert all(2 <= t.countdown <= 8 for t in plan if t.kind == "countdown")


@pytest.mark.parametrize("seed", range(5))
def test_faults_of_a_kind_visit_every_target_before_any_repeats(seed):
    config = ScheduleConfig(counts={"kill9": 3, "throttle": 5, "http_5xx": 7})
    schedule = make_schedule(seed, config)
    assert {f.target for f in schedule if f.kind == "kill9"} == {"w1", "w2", "w3"}
    assert {f.target for f in schedule if f.kind == "throttle"} == set(NETWORK_TARGETS)
    assert {f.target for f in schedule if f.kind == "http_5xx"} == set(NETWORK_TARGETS)
