"""``dlq redrive`` with SQS's move task, against stand-in clients (no emulator has one):
chosen where offered, started once, watched to the end, and its failures reported."""

from __future__ import annotations

import json

import pytest

from runtime.ops import move_task, redrive
from runtime.ops.__main__ import main
from tests.documents import document
from tests.unit.fake_aws import Fake, FakeAws, aws_error

DOC = document()
DLQ_ARN = DOC["queues"]["reports"]["dead_letter_queue"]["arn"]
QUEUE_ARN = DOC["queues"]["reports"]["arn"]
DEPTH = {"Attributes": {"ApproximateNumberOfMessages": "7",
                        "ApproximateNumberOfMessagesNotVisible": "0"}}


def task(status: str, moved: int, **extra) -> dict:
    return {"TaskHandle": "handle-1", "Status": status, "SourceArn": DLQ_ARN,
            "ApproximateNumberOfMessagesMoved": moved, "ApproximateNumberOfMessagesToMove": 7,
            **extra}


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    config = tmp_path / "worker-config.json"
    config.write_text(json.dumps(DOC))
    monkeypatch.setattr(move_task, "POLL_SECONDS", 0)

    def run(sqs: Fake, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(redrive, "Aws", lambda _config: FakeAws(sqs=sqs))
        code = main(["dlq", "redrive", "reports", "--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


def test_auto_starts_a_move_task_where_offered_and_watches_it_to_the_end(run):
    sqs = Fake(get_queue_attributes=DEPTH, start_message_move_task={"TaskHandle": "handle-1"},
               list_message_move_tasks=[{"Results": []},
                                        {"Results": [task("RUNNING", 3)]},
                                        {"Results": [task("COMPLETED", 7)]}])
    code, out, _ = run(sqs, "--rate", "20", "--json")
    assert code == 0
    assert sqs.called("start_message_move_task") == [
        {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN, "MaxNumberOfMessagesPerSecond": 20}]
    result = json.loads(out)
    assert (result["method"], result["status"], result["moved"]) == ("move-task", "COMPLETED", 7)
    assert not result["resumed_running_task"]


def test_a_rerun_watches_the_running_task_instead_of_starting_another(run):
    sqs = Fake(get_queue_attributes=DEPTH,
               start_message_move_task={"TaskHandle": "handle-2"},  # offered: must not be used
               list_message_move_tasks=[{"Results": [task("RUNNING", 2)]},
                                        {"Results": [task("COMPLETED", 7)]}])
    code, out, _ = run(sqs)
    assert code == 0 and sqs.called("start_message_move_task") == []
    assert len(sqs.called("list_message_move_tasks")) == 2  # found running, watched to the end
    assert out.strip() == "redrive reports-dlq -> reports: move task completed, 7 moved"


def test_a_failed_move_task_is_an_aws_error_with_its_reason(run):
    sqs = Fake(get_queue_attributes=DEPTH, start_message_move_task={"TaskHandle": "handle-1"},
               list_message_move_tasks=[{"Results": []}, {"Results": [
                   task("FAILED", 1, FailureReason="AWS.SimpleQueueService.KmsAccessDenied")]}])
    code, _, err = run(sqs)
    assert code == 3 and err.count("\n") == 1
    assert "KmsAccessDenied" in err and "--method copy" in err


def test_a_caller_that_may_not_start_move_tasks_is_told_what_to_grant(run):
    sqs = Fake(get_queue_attributes=DEPTH, list_message_move_tasks={"Results": []},
               start_message_move_task=aws_error("AccessDenied", 403, "StartMessageMoveTask"))
    code, _, err = run(sqs, "--method", "move-task")
    assert code == 3
    assert "grant it sqs:StartMessageMoveTask" in err and "or use --method copy" in err


def test_count_and_dry_run_choose_without_moving(run):
    sqs = Fake(get_queue_attributes=DEPTH, list_message_move_tasks={"Results": []})
    code, out, _ = run(sqs, "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and (plan["method"], plan["would_move"], plan["rate"]) == \
        ("move-task", 7, None)
    code, out, _ = run(sqs, "--dry-run", "--count", "3", "--json")
    plan = json.loads(out)
    assert (plan["method"], plan["would_move"]) == ("copy", 3)
    assert "--count" in plan["why"]
