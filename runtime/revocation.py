"""Revoke that works on SQS, without broadcast.

Celery revokes by broadcasting to every worker's remote-control queue, and SQS has
no broadcast: on the kit, ``app.control.revoke(task_id)`` (and
``AsyncResult.revoke()``) used to return at once, make no request and change
nothing. Here a revocation is written to the result table, in one item of its
own (``id`` = :data:`ITEM_ID`) that maps each revoked task id to when the
revocation expires; every worker reads that item every :data:`POLL_SECONDS`
(one GetItem per worker and interval, whatever the number of tasks: no request
per task) and adds the ids to Celery's own ``worker.state.revoked`` set. Celery then
discards a revoked task before it starts, as it does for a broadcast revoke. A
revocation is therefore seen at most a few seconds late: a task that starts
before the worker has seen it runs.

``terminate=True`` cannot be honoured: nothing reaches the process that runs the
task. It is refused with :class:`runtime.errors.UsageError` rather than ignored.

Installed by the kit's worker hooks (:mod:`runtime.hooks`, :func:`install`): it routes
``Control.revoke`` of apps on the bundled transport here, and starts the reader
in every worker. Needs the result backend (the table); without one, revoking
raises :class:`~runtime.errors.ConfigError`. The producer role may write only
this item of the table (the stack's ``dynamodb:LeadingKeys`` condition).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import boto3
from celery.app.control import Control
from celery.signals import worker_ready, worker_shutdown
from celery.worker import state

from runtime.errors import ConfigError, UsageError
from runtime.result_backend import dynamodb_table
from runtime.schema import REVOCATIONS_ITEM

logger = logging.getLogger(__name__)

ITEM_ID = REVOCATIONS_ITEM
"""The result-table item holding the revocations (no Celery task id looks like it)."""
POLL_SECONDS = 2.0
DEFAULT_EXPIRES = 24 * 3600
"""How long a revocation is kept when the caller gives no ``expires``: a task not
received by then is assumed gone."""
KIT_TRANSPORT = "runtime.transport:Transport"

_original_revoke = Control.revoke


def revoke(app: Any, task_ids: str | Iterable[str], *, terminate: bool = False,
           expires: float | None = None) -> None:
    """Revoke these tasks for every worker of ``app``: a task not yet started never starts."""
    if terminate:
        raise UsageError("revoke(terminate=True) cannot reach the process running a task on "
                         "SQS (no broadcast); revoke without terminate stops tasks that have "
                         "not started")
    ids = [task_ids] if isinstance(task_ids, str) else list(task_ids)
    table, client = _table(app)
    until = int(time.time() + (expires or DEFAULT_EXPIRES))
    key = {"id": {"S": ITEM_ID}}
    client.update_item(TableName=table, Key=key,
                       UpdateExpression="SET revoked = if_not_exists(revoked, :empty)",
                       ExpressionAttributeValues={":empty": {"M": {}}})
    names = {f"#t{i}": task_id for i, task_id in enumerate(ids)}
    client.update_item(
        TableName=table, Key=key,
        UpdateExpression="SET " + ", ".join(f"revoked.{name} = :until" for name in names),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={":until": {"N": str(until)}})
    logger.info("revoked %d task(s) until %d: %s", len(ids), until, ", ".join(ids))


def revoked_now(app: Any) -> set[str]:
    """The task ids revoked and not yet expired, as the workers read them."""
    table, client = _table(app)
    item = client.get_item(TableName=table, Key={"id": {"S": ITEM_ID}},
                           ConsistentRead=True).get("Item", {})
    now = time.time()
    return {task_id for task_id, until in item.get("revoked", {}).get("M", {}).items()
            if float(until["N"]) > now}


def _scheme(backend: Any) -> str:
    """Only the backend URL's scheme: the rest may hold a password (``redis://:pw@h``)."""
    return urlsplit(str(backend or "")).scheme or str(type(backend).__name__)


def _table(app: Any) -> tuple[str, Any]:
    table = dynamodb_table(app.conf.result_backend)
    if table is None:
        raise ConfigError("celery app", "result_backend",
                          f"revoking on SQS keeps revocations in the result table; "
                          "needs the DynamoDB result backend, got a "
                          f"{_scheme(app.conf.result_backend)!r} one")
    region, name = table
    return name, boto3.client("dynamodb", region_name=region)


def _revoke_through_the_table(self: Control, task_id: Any, destination: Any = None,
                              terminate: bool = False, signal: Any = None,
                              **kwargs: Any) -> None:
    if str(self.app.conf.broker_transport or "") != KIT_TRANSPORT:
        return _original_revoke(self, task_id, destination=destination, terminate=terminate,
                                signal=signal, **kwargs)
    revoke(self.app, task_id, terminate=terminate, expires=kwargs.get("expires"))
    return None


class _Reader:
    """The worker's reader: every POLL_SECONDS, the table's revocations into Celery's set."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kit-revocations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for task_id in revoked_now(self._app):
                    state.revoked.add(task_id)
            except Exception as error:  # a table outage must not stop the worker
                logger.warning("could not read revocations (%s); retrying in %.0f s",
                               type(error).__name__, POLL_SECONDS)
            self._stop.wait(POLL_SECONDS)


_reader: _Reader | None = None


def install() -> None:
    """Route ``Control.revoke`` of kit apps through the table; read it in every worker."""
    Control.revoke = _revoke_through_the_table
    worker_ready.connect(_on_worker_ready, dispatch_uid="celery-sqs-kit-revocations",
                         weak=False)
    worker_shutdown.connect(_on_worker_shutdown, dispatch_uid="celery-sqs-kit-revocations-stop",
                            weak=False)


def _on_worker_ready(sender: Any, **_: Any) -> None:
    global _reader
    if dynamodb_table(sender.app.conf.result_backend) is not None:
        _reader = _Reader(sender.app)
        _reader.start()


def _on_worker_shutdown(**_: Any) -> None:
    if _reader is not None:
        _reader.stop()
