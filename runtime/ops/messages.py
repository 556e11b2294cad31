"""What a dead letter is: why it died, where from, and which Celery task it holds.

The transport's DLQ move adds two message attributes (``runtime.lane``):
``kit_reason`` and ``kit_source_queue``. Messages SQS moved itself (after
``maxReceiveCount`` receives) carry neither. The task comes from the body:
kombu sends base64 of a JSON envelope whose ``headers`` hold ``task`` and
``id`` (Celery's message protocol 2); protocol 1 keeps them in the envelope's
own body. A body that is neither is shown as it is, never an error: the DLQ of
a queue that other producers share may hold anything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from runtime.lane import REASON_ATTRIBUTE, SOURCE_ATTRIBUTE


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    sent_at: float | None
    """Epoch seconds the message was sent to the queue it is on."""
    receive_count: int | None
    reason: str | None
    source_queue: str | None
    group_id: str | None
    task: str | None
    task_id: str | None
    note: str | None
    """Why ``task`` is unknown, when it is."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def describe(message: Mapping[str, Any]) -> DeadLetter:
    """A received SQS message (with its system and message attributes) as a dead letter."""
    system = message.get("Attributes") or {}
    custom = message.get("MessageAttributes") or {}
    task, task_id, note = task_of(message.get("Body", ""))
    sent = system.get("SentTimestamp")
    count = system.get("ApproximateReceiveCount")
    return DeadLetter(
        message_id=message["MessageId"],
        sent_at=int(sent) / 1000 if sent else None,
        receive_count=int(count) if count else None,
        reason=_string(custom, REASON_ATTRIBUTE),
        source_queue=_string(custom, SOURCE_ATTRIBUTE),
        group_id=system.get("MessageGroupId"),
        task=task, task_id=task_id, note=note)


def task_of(body: str) -> tuple[str | None, str | None, str | None]:
    """``(task name, task id, note)`` from a kombu message body; the note says why a
    part is missing."""
    envelope = _json_object(body)
    if envelope is None:
        return None, None, "body is not a kombu message (neither JSON nor base64 JSON)"
    headers = envelope.get("headers")
    headers = headers if isinstance(headers, Mapping) else {}
    task, task_id = headers.get("task"), headers.get("id")
    if task is None:  # protocol 1: task and id are in the payload
        payload = _json_object(envelope.get("body")) if isinstance(envelope.get("body"),
                                                                    str) else None
        if payload is not None:
            task, task_id = payload.get("task"), payload.get("id")
    if task_id is None:
        properties = envelope.get("properties")
        if isinstance(properties, Mapping):
            task_id = properties.get("correlation_id")
    note = None if task is not None else "no task header (not a Celery task message?)"
    return (None if task is None else str(task),
            None if task_id is None else str(task_id), note)


def _json_object(text: str) -> Mapping[str, Any] | None:
    """``text`` as a JSON object, directly or base64-encoded; ``None`` if it is neither."""
    for candidate in (text, _unbase64(text)):
        if candidate is None:
            continue
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, Mapping):
            return value
    return None


def _unbase64(text: str) -> str | None:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _string(attributes: Mapping[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    return value.get("StringValue") if isinstance(value, Mapping) else None
