"""Celery settings from a :class:`runtime.config.WorkerConfig`: one function, used
both by the renderer (which writes them as ``celeryconfig.py``) and by code that
configures an app directly (``app.conf.update(celery_settings(load_config()))``).

Choices, and why:

- ``broker_url = "sqs://"``: no keys; boto3's default chain supplies the ECS task
  role, the instance profile, or (in development) the environment.
- ``broker_transport``: the one line that selects stock kombu (``"sqs"``) or the
  kit's bundled transport (``BUNDLED_TRANSPORT``); by default the one the spec names
  (the document's ``transport``), whose visibility rules the queues were checked for.
- ``predefined_queues``: every queue's URL, so kombu never lists, looks up or
  creates a queue (the worker roles may not), with what the bundled transport reads
  per queue (visibility timeout, DLQ, largest message); ``task_queues`` are
  ``no_declare``: declaring one only costs a GetQueueAttributes call, which a
  producer is not granted.
- ``polling_interval = 0`` when long polling: the 20 s wait already bounds idle
  cost; stock's extra 1 s sleep only adds latency.
- ``task_acks_late`` + ``task_reject_on_worker_lost``: a task is deleted from SQS
  only after it ran; a killed worker's tasks come back.
- ``worker_prefetch_multiplier = 1`` with stock kombu: a prefetched message's
  visibility clock runs while it waits, so prefetching more than one per process
  can outlive the visibility timeout. ``BUNDLED_PREFETCH`` with the bundled
  transport, whose heartbeat keeps prefetched messages invisible.
- ``task_time_limit``: the smallest queue limit, so no task outlives what the spec
  checked for the queue it came from (its visibility timeout with stock, SQS's 12-hour
  cap on the bundled heartbeat).
- remote control and events off: SQS supports neither.
- ``task_publish_retry = False``: the bundled transport's publish client is the one
  retry policy of a publish (``runtime.publishing``). Kombu's retry adds nothing on
  SQS (no connection to restore) but runs the client's whole retry sequence again
  after a network error: twice the attempts, and twice the wait when SQS never
  answers (measured with stock: 6 SendMessage attempts, 360 s, instead of 3 in 180 s).
- ``result_backend``: the result table. With the bundled transport, through the kit's
  backend (``runtime.result_backend``: bounded client, Celery's retry loop switched on
  with ``RETRY_SETTINGS``, a result that cannot be stored logged, never costing a task
  run); with stock, Celery's own ``dynamodb://``, so that rendering stays settings only.
- ``kit_revocations`` (bundled only): the revocations table, ``{"region", "table"}``,
  where ``revoke()`` writes and every worker reads (``runtime.revocation``).
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from runtime import result_backend, revocation
from runtime.config import QueueConfig, WorkerConfig
from runtime.schema import BUNDLED, STOCK

STOCK_TRANSPORT = "sqs"
BUNDLED_TRANSPORT = "runtime.transport:Transport"
BUNDLED_PREFETCH = 10
"""With the bundled transport's heartbeat, prefetched messages stay invisible, so
a full receive batch (10) per process is safe and halves receive calls."""
TRANSPORTS = {BUNDLED: BUNDLED_TRANSPORT, STOCK: STOCK_TRANSPORT}
"""The document's (and ``--transport``'s) names for each ``broker_transport``."""


def celery_settings(config: WorkerConfig, *,
                    transport: str | None = None) -> dict[str, Any]:
    """``transport`` is a ``broker_transport`` value; ``None`` takes the document's."""
    transport = transport or TRANSPORTS[config.transport]
    queues = config.queues.values()
    wait_time = max(q.wait_time_seconds for q in queues)
    options: dict[str, Any] = {
        "region": config.region,
        "predefined_queues": {
            q.name: _predefined_queue(q) for q in queues
        },
        "visibility_timeout": config.queues[config.default_queue].visibility_timeout,
        "wait_time_seconds": wait_time,
        "polling_interval": 0 if wait_time > 0 else 1,
    }
    if config.endpoint_url:
        options["is_secure"] = config.endpoint_url.startswith("https://")
    if config.sts is not None:
        if config.sts.role_arn is not None:  # else each queue's entry names its role
            options["sts_role_arn"] = config.sts.role_arn
        options["sts_token_timeout"] = config.sts.token_timeout
        if config.sts.external_id is not None:
            # Read by the bundled transport; stock kombu cannot send an ExternalId.
            options["sts_external_id"] = config.sts.external_id

    settings: dict[str, Any] = {
        "broker_url": _broker_url(config.endpoint_url),
        "broker_transport": transport,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": config.default_queue,
        "task_queues": tuple(Queue(q.name, routing_key=q.name, no_declare=True) for q in queues),
        "task_routes": {pattern: {"queue": q.name} for q in queues for pattern in q.routes},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": min(q.task_time_limit for q in queues),
        "worker_prefetch_multiplier": 1 if transport == STOCK_TRANSPORT else BUNDLED_PREFETCH,
        "worker_enable_remote_control": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "task_publish_retry": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
    }
    if config.result_backend is not None:
        rb = config.result_backend
        url = f"dynamodb://@{config.region}/{rb.table}?ttl_seconds={rb.ttl_seconds}"
        if transport == STOCK_TRANSPORT:
            settings["result_backend"] = url
        else:
            settings["result_backend"] = f"{result_backend.BACKEND}+{url}"
            settings.update(result_backend.RETRY_SETTINGS)
    else:
        settings["task_ignore_result"] = True
    if config.revocations is not None and transport != STOCK_TRANSPORT:
        settings[revocation.SETTING] = {"region": config.region,
                                        "table": config.revocations.table}
    return settings


def _predefined_queue(q: QueueConfig) -> dict[str, Any]:
    # dead_letter_queue, visibility_timeout and max_message_bytes are read by the bundled
    # transport (DLQ moves, heartbeat, the size check at publish); stock kombu ignores them.
    entry: dict[str, Any] = {"url": q.url, "visibility_timeout": q.visibility_timeout,
                             "max_message_bytes": q.max_message_bytes}
    if q.dead_letter_queue is not None:
        entry["dead_letter_queue"] = q.dead_letter_queue.url
    if q.backoff_policy:
        entry["backoff_policy"] = dict(q.backoff_policy)
        entry["backoff_tasks"] = list(q.backoff_tasks)
    if q.sts_role_arn is not None:
        entry["sts_role_arn"] = q.sts_role_arn
    return entry


def _broker_url(endpoint_url: str | None) -> str:
    # kombu builds its endpoint from the URL's host; without one boto3 decides
    # (AWS_ENDPOINT_URL, VPC endpoint DNS, or the public regional endpoint).
    if not endpoint_url:
        return "sqs://"
    return "sqs://" + endpoint_url.split("://", 1)[-1].rstrip("/")
