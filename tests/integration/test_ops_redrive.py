"""``dlq redrive`` as a process against moto (which has no move tasks, so ``auto``
copies): each dead letter reaches its source queue exactly once and the DLQ ends
empty, also when the redrive is killed with SIGKILL mid-run and run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from local_aws.server_process import PROJECT_ROOT
from tests.integration.fleet import wait_for
from local_aws.fleet import create_queue, worker_document
from tests.integration.ops import drain, make_dead_letters, make_fleet, task_body, task_ids

pytestmark = pytest.mark.integration

CRASHING = '''
"""Run the CLI with its SQS clients wrapped to SIGKILL this process at one point."""
import os, signal, sys
from collections import Counter
from runtime.ops import aws

POINT, AT = sys.argv[1], int(sys.argv[2])
calls = Counter()
make = aws.Aws._make


def die_if(point):
    if POINT == point and calls[point.split("_")[1]] == AT:
        os.kill(os.getpid(), signal.SIGKILL)


class Crashing:
    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def send_message(self, **request):
        calls["send"] += 1
        die_if("before_send")
        answer = self._client.send_message(**request)
        die_if("after_send")
        return answer

    def delete_message(self, **request):
        calls["delete"] += 1
        die_if("before_delete")
        return self._client.delete_message(**request)


aws.Aws._make = lambda self, service, *, once: (
    Crashing(make(self, service, once=once)) if service == "sqs" else
    make(self, service, once=once))
from runtime.ops.__main__ import main
sys.exit(main(sys.argv[3:]))
'''


def redrive(fleet, journal, *args):
    done = fleet.ops("dlq", "redrive", fleet.name, "--journal", str(journal), "--json", *args)
    return done, (json.loads(done.stdout) if done.stdout else None)


def assert_exactly_once(fleet, expected_ids, drained_before=()):
    """Every expected task on the source queue once (counting ``drained_before``, taken off
    it earlier in the test), none anywhere else, and the DLQ empty."""
    arrived = drain(fleet, fleet.queue["url"])
    counts = Counter([*drained_before, *task_ids(arrived)])
    assert {i: n for i, n in counts.items() if n != 1} == {}, "delivered more than once"
    assert sorted(counts) == sorted(expected_ids), "lost or unexpected"
    assert fleet.depth(fleet.dlq_url) == (0, 0)
    return arrived


def test_redrive_copies_each_dead_letter_back_once_and_empties_the_dlq(moto, tmp_path):
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    ids = make_dead_letters(fleet, 6)
    journal = tmp_path / "journal.jsonl"
    done, result = redrive(fleet, journal)
    assert done.returncode == 0, done.stderr
    assert (result["method"], result["moved"], result["uncertain_kept"]) == ("copy", 6, [])
    assert result["journal_state"] == "removed" and not journal.exists()
    arrived = assert_exactly_once(fleet, ids)
    for message in arrived:  # the dead-letter marks are gone, the message's own stay
        assert set(message["MessageAttributes"]) == {"tenant"}


def test_a_dead_letter_naming_another_queue_is_reported_not_injected_there(moto, tmp_path):
    """Whoever may send to a DLQ (the workers that consume its queue) sets
    kit_source_queue to a consume-only queue of the config; the redrive sends each dead
    letter back to the DLQ's own queue only, and keeps and lists the injected one."""
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    victim_name = f"v{fleet.name[1:]}"
    victim = create_queue(fleet.sqs, victim_name, visibility=30, wait=1)
    fleet.config.write_text(json.dumps(worker_document(
        {fleet.name: fleet.queue, victim_name: victim}, default_queue=fleet.name)))
    ids = make_dead_letters(fleet, 2)
    fleet.sqs.send_message(QueueUrl=fleet.dlq_url, MessageBody=task_body("injected"),
                           MessageAttributes={"kit_source_queue": {
                               "DataType": "String", "StringValue": victim_name}})
    done, result = redrive(fleet, tmp_path / "journal.jsonl", "--method", "copy")
    assert drain(fleet, victim["url"]) == []  # nothing reached the consume-only queue
    assert done.returncode == 1, done.stderr
    assert [(d["task_id"], d["source_queue"]) for d in result["misdirected_kept"]] == [
        ("injected", victim_name)]
    assert result["moved"] == 2
    assert f"names a queue other than {fleet.name}" in done.stderr
    assert sorted(task_ids(drain(fleet, fleet.queue["url"]))) == sorted(ids)
    assert fleet.depth(fleet.dlq_url) == (1, 0)  # left for the operator to inspect


def test_dry_run_moves_nothing_and_count_moves_only_that_many(moto, tmp_path):
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    make_dead_letters(fleet, 5)
    done, plan = redrive(fleet, tmp_path / "j", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert (plan["method"], plan["would_move"], plan["rate"]) == ("copy", 5, 50.0)
    assert "does not offer StartMessageMoveTask" in plan["why"]
    assert fleet.depth(fleet.dlq_url) == (5, 0)

    part = fleet.ops("dlq", "redrive", fleet.name, "--count", "2", "--rate", "20",
                     "--journal", str(tmp_path / "j"), "--progress")
    assert part.returncode == 0, part.stderr
    assert part.stdout.splitlines()[:2] == [
        f"redrive {fleet.name}-dlq -> {fleet.name}: copy at 20 msg/s",
        "moved 2; finished from an interrupted run 0; uncertain kept 0, resent 0, deleted 0"]
    bar = part.stderr.strip().splitlines()[-1]  # text mode reads each "\r" as a new line
    assert bar.startswith(f"redrive {fleet.name}-dlq [") and " 2/2 " in bar
    assert " msg/s  eta " in bar
    assert fleet.depth(fleet.dlq_url) == (3, 0)
    assert fleet.depth(fleet.queue["url"]) == (2, 0)


def test_move_task_is_refused_where_the_endpoint_has_none(moto, tmp_path):
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    done = fleet.ops("dlq", "redrive", fleet.name, "--method", "move-task")
    assert done.returncode == 2
    assert "does not offer StartMessageMoveTask" in done.stderr and "--method copy" in done.stderr


def run_until_killed(fleet, journal, rate: int, after: int) -> None:
    """Start a redrive and SIGKILL it once ``after`` copies have reached the source queue."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.ops", "dlq", "redrive", fleet.name, "--rate", str(rate),
         "--journal", str(journal), "--config", str(fleet.config)],
        cwd=PROJECT_ROOT, env=fleet.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sum(fleet.depth(fleet.queue["url"])) >= after, 30,
                 f"{after} copies on the source queue")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL


def test_a_redrive_killed_mid_run_then_rerun_delivers_each_dead_letter_exactly_once(moto,
                                                                                    tmp_path):
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    ids = make_dead_letters(fleet, 30)
    journal = tmp_path / "journal.jsonl"
    run_until_killed(fleet, journal, rate=15, after=8)
    assert journal.exists() and sum(fleet.depth(fleet.dlq_url)) > 0

    done, result = redrive(fleet, journal)
    assert result["resumed"]
    drained: list[str] = []
    if done.returncode == 1:  # the kill came while a send was on the wire: settled as an
        # operator would, by looking whether its copy arrived (nothing consumes the queue)
        [kept] = result["uncertain_kept"]
        drained = task_ids(drain(fleet, fleet.queue["url"]))
        choice = "delete" if kept["task_id"] in drained else "resend"
        done, result = redrive(fleet, journal, "--uncertain", choice)
    assert done.returncode == 0, done.stderr
    assert result["journal_state"] == "removed"
    assert_exactly_once(fleet, ids, drained)


def test_a_fifo_redrive_killed_mid_run_resumes_exactly_once_in_group_order(moto, tmp_path):
    fleet = make_fleet(moto.endpoint_url, tmp_path, fifo=True)
    ids = make_dead_letters(fleet, 20)
    journal = tmp_path / "journal.jsonl"
    run_until_killed(fleet, journal, rate=15, after=6)

    done, result = redrive(fleet, journal)
    assert done.returncode == 0, done.stderr  # a send cut short is resent: SQS deduplicates
    assert result["uncertain_kept"] == []
    arrived = assert_exactly_once(fleet, ids)
    by_group: dict[str, list[str]] = {}
    for message in arrived:
        by_group.setdefault(message["Attributes"]["MessageGroupId"], []).append(
            task_ids([message])[0])
    assert by_group == {"g0": ids[0::2], "g1": ids[1::2]}


def crash(fleet, journal, point: str, at: int) -> None:
    process = subprocess.run(
        [sys.executable, "-c", CRASHING, point, str(at), "dlq", "redrive", fleet.name,
         "--journal", str(journal), "--config", str(fleet.config)],
        cwd=PROJECT_ROOT, env=fleet.env, capture_output=True, text=True, timeout=60,
        check=False)
    assert process.returncode == -signal.SIGKILL, process.stderr


def test_killed_after_a_copy_was_sent_but_before_its_dead_letter_was_deleted(moto, tmp_path):
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    ids = make_dead_letters(fleet, 6)
    journal = tmp_path / "journal.jsonl"
    crash(fleet, journal, "before_delete", at=3)  # the third copy is sent and journaled
    started = time.monotonic()
    done, result = redrive(fleet, journal)
    assert done.returncode == 0, done.stderr
    assert (result["moved"], result["finished_from_interrupted_run"]) == (3, 1)
    assert time.monotonic() - started < 10, "waited for the killed run's hold to end"
    assert_exactly_once(fleet, ids)


@pytest.mark.parametrize("point, copy_arrived, settle, settled", [
    ("after_send", True, "delete", "uncertain_deleted"),
    ("before_send", False, "resend", "uncertain_resent"),
])
def test_killed_while_a_send_was_on_the_wire_the_dead_letter_is_kept_until_settled(
        moto, tmp_path, point, copy_arrived, settle, settled):
    fleet = make_fleet(moto.endpoint_url, tmp_path)
    ids = make_dead_letters(fleet, 4)
    journal = tmp_path / "journal.jsonl"
    crash(fleet, journal, point, at=2)
    arrived_before = task_ids(drain(fleet, fleet.queue["url"]))
    assert len(arrived_before) == (2 if copy_arrived else 1)

    done, result = redrive(fleet, journal)
    assert done.returncode == 1
    [kept] = result["uncertain_kept"]
    assert kept["task"] == "ttasks.refuse" and (kept["task_id"] in arrived_before) == copy_arrived
    assert "--uncertain resend or --uncertain delete" in done.stderr
    assert done.stderr.count("\n") == 1
    assert fleet.depth(fleet.dlq_url) == (1, 0) and result["journal_state"] == "kept"

    done, result = redrive(fleet, journal, "--uncertain", settle)
    assert done.returncode == 0, done.stderr
    assert [d["task_id"] for d in result[settled]] == [kept["task_id"]]
    assert_exactly_once(fleet, ids, arrived_before)
