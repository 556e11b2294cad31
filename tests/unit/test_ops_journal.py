"""runtime.ops.journal: what a killed redrive left is read back exactly."""

from __future__ import annotations

import pytest

from runtime.errors import UsageError
from runtime.ops.journal import Journal, default_path


def record(journal, message_id, state, at=1.0, handle=None, sync=False):
    entry = {"id": message_id, "state": state, "at": at}
    if handle:
        entry["handle"] = handle
    journal.record([entry], sync=sync)


def test_states_only_move_forward_and_the_newest_handle_wins(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    record(journal, "a", "received", handle="h1")
    record(journal, "a", "sending", at=2.0, sync=True)
    record(journal, "a", "received", at=3.0, handle="h2")  # received again by a rerun
    entry = journal.entries["a"]
    assert (entry.state, entry.at, entry.handle) == ("sending", 2.0, "h2")
    record(journal, "a", "sent", at=4.0, sync=True)
    record(journal, "a", "deleted", at=5.0)
    assert journal.entries["a"].state == "deleted"
    assert journal.unresolved() == []


def test_a_send_sqs_refused_goes_back_to_received(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    record(journal, "a", "received", handle="h1")
    record(journal, "a", "sending", sync=True)
    record(journal, "a", "unsent", at=9.0, sync=True)
    assert journal.entries["a"].state == "received"
    assert journal.unresolved() == []


def test_a_rerun_reads_back_what_was_written_and_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    assert not journal.resumed
    record(journal, "a", "received", handle="h1")
    record(journal, "a", "sending", sync=True)
    record(journal, "b", "received", handle="h2")
    record(journal, "b", "sent", sync=True)
    journal.close(remove=False)
    with open(path, "a") as torn:
        torn.write('{"id": "c", "sta')
    again = Journal(path)
    assert again.resumed
    assert {e.id: e.state for e in again.entries.values()} == {"a": "sending", "b": "sent"}
    assert sorted(e.id for e in again.unresolved()) == ["a", "b"]


def test_one_redrive_at_a_time_per_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    with pytest.raises(UsageError, match="another redrive is using the journal"):
        Journal(path)
    first.close(remove=True)
    assert not path.exists()
    Journal(path).close(remove=False)


def test_the_default_journal_is_one_per_dlq_under_xdg_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    a = default_path("https://sqs.us-east-1.amazonaws.com/1/reports-dlq")
    b = default_path("https://sqs.eu-west-1.amazonaws.com/1/reports-dlq")
    assert a.parent == tmp_path / "celery-sqs-kit" / "redrive"
    assert a.name.startswith("reports-dlq-") and a != b


def test_a_journal_that_cannot_be_written_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="pass --journal PATH somewhere writable"):
        Journal(blocker / "j.jsonl")
