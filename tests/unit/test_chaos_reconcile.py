"""Reconciling the chaos run task by task: lost, completed, duplicates and their causes."""

from __future__ import annotations

from chaos.reconcile import AppliedFault, DeadLetter, Execution, reconcile


def run(task_id: str, worker: str, pid: int, start: float, end: float | None = None):
    records = [Execution("start", task_id, worker, pid, start)]
    if end is not None:
        records.append(Execution("done", task_id, worker, pid, end))
    return records


def test_every_sent_task_done_once_is_completed_and_nothing_is_lost():
    result = reconcile(["a", "b"], run("a", "w1.0", 10, 1, 2) + run("b", "w2.0", 20, 1, 2), [])
    assert (result.sent, result.completed, result.lost, result.duplicates) == (2, 2, {}, 0)


def test_a_task_that_never_finished_is_lost_and_says_where_it_was():
    executions = run("started", "w1.0", 10, 1)
    letters = [DeadLetter("dead", "rejected without requeue")]
    result = reconcile(["started", "never", "dead"], executions, [], letters)
    assert result.lost == {"dead": "in the DLQ (rejected without requeue)",
                           "never": "never ran", "started": "started, never finished"}
    assert result.completed == 0


def test_a_task_killed_with_its_worker_and_run_again_is_a_duplicate_caused_by_the_kill():
    executions = run("a", "w1.0", 10, 100) + run("a", "w2.0", 20, 120, 121)
    faults = [AppliedFault(95, "throttle", "ANY"), AppliedFault(101, "kill9", "w1", worker="w1.0"),
              AppliedFault(110, "http_5xx", "ANY")]
    result = reconcile(["a"], executions, faults)
    assert result.completed == 1 and result.lost == {}
    assert result.duplicates == 1 and result.duplicate_rate == 1.0
    (dup,) = result.duplicate_tasks
    assert dup.causes == ("kill9 (its worker)",)
    assert dup.workers == ("w1.0", "w2.0") and dup.completed == 1
    assert result.duplicates_by_cause == {"kill9 (its worker)": 1}


def test_a_killed_pool_process_is_the_cause_only_of_what_that_process_ran():
    executions = run("a", "w1.0", 11, 100) + run("a", "w1.0", 13, 105, 106) + \
        run("b", "w1.0", 12, 100, 101) + run("b", "w3.0", 30, 107, 108)
    faults = [AppliedFault(102, "kill9_pool_process", "w1", pid=11),
              AppliedFault(103, "connection_reset", "DeleteMessageBatch")]
    result = reconcile(["a", "b"], executions, faults)
    causes = {d.task_id: d.causes for d in result.duplicate_tasks}
    assert causes == {"a": ("kill9_pool_process (its worker)",),
                      "b": ("connection_reset (nearest before)",)}
    assert result.duplicates_by_cause == {"connection_reset (nearest before)": 1,
                                          "kill9_pool_process (its worker)": 1}
    assert result.completed_twice == 1


def test_a_duplicate_with_no_fault_before_it_is_unknown_and_bad_inputs_are_no_cause():
    executions = run("a", "w1.0", 10, 1, 2) + run("a", "w2.0", 20, 3, 4)
    result = reconcile(["a"], executions, [AppliedFault(2.5, "poison_body", "queue")])
    assert result.duplicate_tasks[0].causes == ("unknown",)


def test_bad_inputs_are_counted_apart_from_tasks():
    letters = [DeadLetter("p-1", "undecodable: not a kombu message"),
               DeadLetter("u-1", "rejected without requeue"), DeadLetter(None, "?")]
    result = reconcile(["a"], run("a", "w1.0", 10, 1, 2), [], letters,
                       bad_inputs={"poison_body": ["p-1"], "unknown_task": ["u-1", "u-2"]})
    assert result.lost == {}
    assert result.bad_inputs_sent == {"poison_body": 1, "unknown_task": 2}
    assert result.bad_inputs_in_dlq == {"poison_body": 1, "unknown_task": 1}
    assert result.bad_inputs_executed == []


def test_a_task_that_ran_though_its_publish_raised_is_counted_apart_not_lost():
    result = reconcile(["a"], run("a", "w1.0", 10, 1, 2) + run("z", "w1.0", 10, 3, 4), [])
    assert result.executed_unsent == ["z"] and result.lost == {} and result.sent == 1


def test_copies_queued_by_a_publisher_retry_explain_that_many_duplicates():
    executions = run("a", "w1.0", 10, 100, 101) + run("a", "w2.0", 20, 100.1, 100.2) + \
        run("a", "w3.0", 30, 100.2, 100.3)
    faults = [AppliedFault(99, "connection_reset", "SendMessageBatch", until=114),
              AppliedFault(99.5, "throttle", "ReceiveMessage", until=114.5)]
    result = reconcile(["a"], executions, faults,
                       copies={"a": ["connection_reset", "", "connection_reset"][:2]},
                       lookback=30)
    assert result.duplicate_tasks[0].causes == ("connection_reset (publish retried)",
                                                "throttle (nearest before)")


def test_a_kill_is_preferred_to_a_publish_copy_as_the_cause():
    executions = run("a", "w1.0", 10, 100) + run("a", "w2.0", 20, 140, 141) + \
        run("a", "w3.0", 30, 142, 143)
    faults = [AppliedFault(101, "kill9", "w1", worker="w1.0")]
    result = reconcile(["a"], executions, faults, copies={"a": ["stall", ""]})
    assert result.duplicate_tasks[0].causes == ("kill9 (its worker)", "stall (publish retried)")


def test_nearest_before_looks_back_only_over_faults_still_in_effect():
    executions = run("a", "w1.0", 10, 100, 101) + run("a", "w2.0", 20, 150, 151)
    old = AppliedFault(10, "http_5xx", "ANY", until=25)
    outage = AppliedFault(80, "credentials_outage", "endpoint", until=125)
    assert reconcile(["a"], executions, [old, outage], lookback=30
                     ).duplicate_tasks[0].causes == ("credentials_outage (nearest before)",)
    assert reconcile(["a"], executions, [old], lookback=30
                     ).duplicate_tasks[0].causes == ("unknown",)


def test_the_kill_of_its_own_pool_process_wins_over_a_later_stop_of_its_worker():
    executions = run("a", "w1.0", 11, 100) + run("a", "w2.0", 20, 110, 111)
    faults = [AppliedFault(100.3, "kill9_pool_process", "w1", worker="w1.0", pid=11),
              AppliedFault(101, "sigterm", "w1", worker="w1.0")]
    assert reconcile(["a"], executions, faults).duplicate_tasks[0].causes == (
        "kill9_pool_process (its worker)",)
