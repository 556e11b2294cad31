"""Revoke that works on SQS, without broadcast.

Celery revokes by broadcasting to every worker's remote-control queue, and SQS has
no broadcast: on the kit, ``app.control.revoke(task_id)`` (and
``AsyncResult.revoke()``) used to return at once, make no request and change
nothing. Here a revocation is an item of the stack's revocations table, one per revoked
task (partition :data:`~runtime.schema.REVOCATION_SHARD`, sort key the task id, and
``expires``, its TTL attribute); every worker queries the table for the entries not yet
expired every :data:`POLL_SECONDS` and adds their ids to Celery's own
``worker.state.revoked`` set. Celery then discards a revoked task before it starts, as it
does for a broadcast revoke, whether it arrives later or is already held for its ETA. A
revocation is therefore seen at most a few seconds late: a task that starts before the
worker has seen it runs. Each worker logs the revocations it has not applied before.

How long a revocation lasts: :data:`DEFAULT_EXPIRES`, unless the caller passes
``expires`` (seconds). A task may be due up to :data:`runtime.limits.MAX_ETA_SECONDS`
after it was sent (the bundled transport parks it until then and dead-letters a later
ETA), and its last copy may then wait in its queue for SQS's longest retention
(:data:`runtime.limits.MAX_RETENTION`), so a default revocation outlives any task it can
name. Revoking a task again never shortens a revocation already written.

What it costs and what bounds it:

- storage: one small item per revocation, deleted by DynamoDB's TTL once it has expired
  (usually within days of expiry, at no charge). Nothing accumulates in one item, so
  however many tasks were revoked before, ``revoke()`` keeps working;
- reads: the workers query the table's :data:`~runtime.schema.REVOCATIONS_LIVE_INDEX`
  index (keyed by ``expires``) for the entries expiring after now, so expired entries
  that TTL has not deleted yet are never read. One strongly consistent Query per worker
  and interval (whatever the number of tasks: no request per task) at 1 read unit per
  4 KB of live entries, at least 1: 1800 read request units per worker-hour while the
  live revocations fit in 4 KB (a few dozen task ids), one more per Query for each further
  4 KB. Each worker builds its client once;
- a malformed entry (an id that is not a string, an expiry that is not a number) is
  skipped and logged once; every other revocation still applies.

Who may write: only the producer role, and only ``PutItem`` of items in the revocation
partition with the three attributes above (the stack's ``dynamodb:LeadingKeys`` and
``dynamodb:Attributes`` conditions); worker roles may only query the live index.

``terminate=True`` cannot be honoured: nothing reaches the process that runs the
task. It is refused with :class:`runtime.errors.UsageError` rather than ignored.

Installed by the kit's worker hooks (:mod:`runtime.hooks`, :func:`install`): it routes
``Control.revoke`` of apps on the bundled transport here, and starts the reader in every
worker. It finds the table in the Celery setting :data:`SETTING` (``{"region", "table"}``),
which :mod:`runtime.celery_settings` renders from the worker configuration's
``revocations``; without it (a stack without a result backend makes no revocations
table), revoking raises :class:`~runtime.errors.ConfigError` and workers start no reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from celery.app.control import Control
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state

from runtime.errors import ConfigError, UsageError
from runtime.limits import MAX_ETA_SECONDS, MAX_RETENTION
from runtime.result_backend import CLIENT_CONFIG
from runtime.schema import (REVOCATION_EXPIRES_ATTRIBUTE, REVOCATION_SHARD,
                            REVOCATION_SHARD_ATTRIBUTE, REVOCATION_TASK_ATTRIBUTE,
                            REVOCATIONS_LIVE_INDEX)
from runtime.sqs_errors import error_code

logger = logging.getLogger(__name__)

SETTING = "kit_revocations"
"""The Celery setting naming the revocations table: ``{"region": ..., "table": ...}``."""
POLL_SECONDS = 2.0
DEFAULT_EXPIRES = MAX_ETA_SECONDS + MAX_RETENTION
"""How long a revocation is kept when the caller gives no ``expires`` (44 days): until
the task it names can no longer run (module docstring)."""
KIT_TRANSPORT = "runtime.transport:Transport"
LOGGED_IDS = 10
"""How many newly applied task ids a worker's log line names (then a count)."""

_original_revoke = Control.revoke


class Revocations:
    """The revocations table through one client: what ``revoke()`` writes, what workers read.

    ``client_config`` is botocore's (the reader passes bounded timeouts: its next poll is
    its retry).
    """

    def __init__(self, region: str | None, table: str, *,
                 client_config: Config | None = None) -> None:
        self.table = table
        self._client = boto3.client("dynamodb", region_name=region, config=client_config)

    def put(self, task_ids: Iterable[str], until: int) -> None:
        """Revoke each task until ``until`` (epoch seconds), unless it already is for longer."""
        for task_id in task_ids:
            try:
                self._client.put_item(
                    TableName=self.table,
                    Item={REVOCATION_SHARD_ATTRIBUTE: {"S": REVOCATION_SHARD},
                          REVOCATION_TASK_ATTRIBUTE: {"S": task_id},
                          REVOCATION_EXPIRES_ATTRIBUTE: {"N": str(until)}},
                    ConditionExpression="attribute_not_exists(#expires) OR #expires < :until",
                    ExpressionAttributeNames={"#expires": REVOCATION_EXPIRES_ATTRIBUTE},
                    ExpressionAttributeValues={":until": {"N": str(until)}})
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                # Already revoked for at least as long: a later revoke never shortens one.

    def live(self, now: float) -> tuple[set[str], list[str]]:
        """The ids of the revocations expiring after ``now``, and a description of each
        entry that could not be read (skipped)."""
        request: dict[str, Any] = {
            "TableName": self.table, "IndexName": REVOCATIONS_LIVE_INDEX,
            "KeyConditionExpression": "#shard = :shard AND #expires > :now",
            "ExpressionAttributeNames": {"#shard": REVOCATION_SHARD_ATTRIBUTE,
                                         "#expires": REVOCATION_EXPIRES_ATTRIBUTE},
            "ExpressionAttributeValues": {":shard": {"S": REVOCATION_SHARD},
                                          ":now": {"N": str(int(now))}},
            "ConsistentRead": True,
        }
        ids: set[str] = set()
        malformed: list[str] = []
        while True:
            page = self._client.query(**request)
            for item in page.get("Items", []):
                try:
                    task_id, expires = _entry(item)
                except ValueError:
                    malformed.append(_describe(item))
                    continue
                if expires > now:
                    ids.add(task_id)
            if "LastEvaluatedKey" not in page:
                return ids, malformed
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _entry(item: Mapping[str, Any]) -> tuple[str, float]:
    """``(task id, expiry)`` of a table item; ``ValueError`` when it has no usable pair."""
    try:
        task_id = item[REVOCATION_TASK_ATTRIBUTE]["S"]
        expires = float(item[REVOCATION_EXPIRES_ATTRIBUTE]["N"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("not a revocation entry") from None
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("not a task id")
    return task_id, expires


def _describe(item: Mapping[str, Any]) -> str:
    text = repr(dict(item))
    return text if len(text) <= 200 else text[:199] + "…"


def revocations(app: Any, *, client_config: Config | None = None) -> Revocations:
    """The revocations table of ``app`` (its :data:`SETTING`)."""
    where = app.conf.get(SETTING)
    if not isinstance(where, Mapping) or not where.get("table"):
        raise ConfigError("celery app", SETTING,
                          "revoking on SQS keeps revocations in the stack's revocations "
                          "table, and this app's configuration names none (the stack makes "
                          "one with the result backend: render the configuration again from "
                          f"the deployed stack's document), got {where!r}")
    return Revocations(where.get("region"), str(where["table"]), client_config=client_config)


def revoke(app: Any, task_ids: str | Iterable[str], *, terminate: bool = False,
           expires: float | None = None) -> None:
    """Revoke these tasks for every worker of ``app``: a task not yet started never starts."""
    if terminate:
        raise UsageError("revoke(terminate=True) cannot reach the process running a task on "
                         "SQS (no broadcast); revoke without terminate stops tasks that have "
                         "not started")
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    until = int(time.time() + (expires or DEFAULT_EXPIRES))
    revocations(app).put(ids, until)
    logger.info("revoked %d task(s) until %d: %s", len(ids), until, ", ".join(ids))


def revoked_now(app: Any) -> set[str]:
    """The task ids revoked and not yet expired, as the workers read them."""
    ids, _malformed = revocations(app).live(time.time())
    return ids


def _revoke_through_the_table(self: Control, task_id: Any, destination: Any = None,
                              terminate: bool = False, signal: Any = None,
                              **kwargs: Any) -> None:
    if str(self.app.conf.broker_transport or "") != KIT_TRANSPORT:
        return _original_revoke(self, task_id, destination=destination, terminate=terminate,
                                signal=signal, **kwargs)
    revoke(self.app, task_id, terminate=terminate, expires=kwargs.get("expires"))
    return None


class Reader:
    """A worker's reader: every POLL_SECONDS, the live revocations into Celery's set,
    through the one :class:`Revocations` (one client) it was given."""

    def __init__(self, table: Revocations) -> None:
        self._table = table
        self._applied: frozenset[str] = frozenset()
        self._reported: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kit-revocations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def poll(self, now: float) -> None:
        """One read: apply the live revocations, log the new ones and new malformed entries."""
        ids, malformed = self._table.live(now)
        for task_id in ids:
            state.revoked.add(task_id)
        new = sorted(ids - self._applied)
        if new:
            more = f" and {len(new) - LOGGED_IDS} more" if len(new) > LOGGED_IDS else ""
            logger.info("applying %d new revocation(s): %s%s", len(new),
                        ", ".join(new[:LOGGED_IDS]), more)
        self._applied = frozenset(ids)
        for entry in sorted(set(malformed) - self._reported):
            logger.warning("skipping a malformed entry of revocations table %s (the others "
                           "still apply): %s", self._table.table, entry)
        self._reported = frozenset(malformed)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(time.time())
            except Exception as error:  # a table outage must not stop the worker
                logger.warning("could not read revocations (%s); retrying in %.0f s",
                               type(error).__name__, POLL_SECONDS)
            self._stop.wait(POLL_SECONDS)


_reader: Reader | None = None


def install() -> None:
    """Route ``Control.revoke`` of kit apps through the table; read it in every worker."""
    Control.revoke = _revoke_through_the_table
    worker_ready.connect(_on_worker_ready, dispatch_uid="celery-sqs-kit-revocations",
                         weak=False)
    worker_shutdown.connect(_on_worker_shutdown, dispatch_uid="celery-sqs-kit-revocations-stop",
                            weak=False)


def _on_worker_ready(sender: Any, **_: Any) -> None:
    global _reader
    if sender.app.conf.get(SETTING):
        _reader = Reader(revocations(sender.app, client_config=CLIENT_CONFIG))
        _reader.start()


def _on_worker_shutdown(**_: Any) -> None:
    if _reader is not None:
        _reader.stop()
