"""The redrive's journal: what became of each dead letter, on disk before it matters.

One JSON object per line, appended, never rewritten::

    {"id": "<DLQ MessageId>", "state": "sending", "at": 1767225600.0, "handle": "..."}

The states a dead letter goes through, in order (a later one never goes back,
except ``unsent``, see below):

- ``received``: in hand; ``handle`` is the receipt handle to give it back or delete it.
- ``sending``: its copy is about to be sent (flushed and fsynced before SendMessage).
- ``sent``: SQS accepted the copy (fsynced before DeleteMessage).
- ``deleted``: gone from the DLQ.
- ``unsent``: a send SQS refused outright (a 4xx answer, or no connection made): back
  to ``received``, since no copy can exist.

The file is locked (``flock``) while a redrive uses it, so two redrives of one DLQ
on this machine cannot interleave. A line cut short by a kill is ignored when the
journal is read back.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runtime.errors import UsageError

RECEIVED, SENDING, SENT, DELETED, UNSENT = "received", "sending", "sent", "deleted", "unsent"
ORDER = (RECEIVED, SENDING, SENT, DELETED)


@dataclass
class Entry:
    id: str
    state: str
    at: float
    """When the entry reached its state (epoch seconds)."""
    handle: str | None


def default_path(dlq_url: str) -> Path:
    """``$XDG_STATE_HOME/celery-sqs-kit/redrive/<dlq>-<hash of its URL>.jsonl`` (default
    ``~/.local/state``): one journal per DLQ, so a rerun finds the one it left."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = dlq_url.rstrip("/").rsplit("/", 1)[-1]
    digest = hashlib.sha256(dlq_url.encode()).hexdigest()[:12]
    return base / "celery-sqs-kit" / "redrive" / f"{name}-{digest}.jsonl"


class Journal:
    """Open (and lock) the journal at ``path``, reading back what an earlier run wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = open(path, "a+", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot open the redrive journal {path} ({error.strerror}): "
                             "pass --journal PATH somewhere writable") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise UsageError(f"another redrive is using the journal {path}: wait for it to "
                             "finish") from None
        self.entries: dict[str, Entry] = {}
        self._file.seek(0)
        self.resumed = False
        for line in self._file:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the tail of a write cut short by a kill
            self._apply(record)
            self.resumed = True

    def record(self, records: list[dict[str, Any]], *, sync: bool) -> None:
        """Append ``records`` (``id``, ``state``, ``at``, optional ``handle``); with ``sync``,
        on disk before this returns (it survives the machine, not only the process)."""
        self._file.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        for r in records:
            self._apply(r)

    def mark(self, message_id: str, state: str, at: float, *, sync: bool) -> None:
        self.record([{"id": message_id, "state": state, "at": at}], sync=sync)

    def unresolved(self) -> list[Entry]:
        """Dead letters whose copy may exist while they are still in the DLQ."""
        return [e for e in self.entries.values() if e.state in (SENDING, SENT)]

    def close(self, *, remove: bool) -> None:
        if remove:
            self.path.unlink(missing_ok=True)  # while still locked: no one reads it half-gone
        self._file.close()

    def _apply(self, record: dict[str, Any]) -> None:
        entry = self.entries.get(record["id"])
        state = RECEIVED if record["state"] == UNSENT else record["state"]
        if entry is None:
            self.entries[record["id"]] = Entry(record["id"], state, record["at"],
                                               record.get("handle"))
            return
        if record["state"] == UNSENT or ORDER.index(state) > ORDER.index(entry.state):
            entry.state, entry.at = state, record["at"]
        if record.get("handle"):
            entry.handle = record["handle"]
