"""What the chaos run reads off the wire: the proxy between everything and SQS
(``PublishRecordingProxy``: it also refuses expired tokens and injects the network
faults) records every publish SQS accepted, by task id, with the fault that then
hit its answer, so a task queued twice by a publisher's retry is told apart from
one delivered twice; and ``message_id`` reads a message body's task or poison id."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable

from local_aws.counting_proxy import RESET, STALL, TokenCheckingProxy

POISON_MARK = "chaos-poison"
"""Every poison body carries ``chaos-poison <id>``, so the DLQ can be read back."""
_POISON_ID = re.compile(re.escape(POISON_MARK) + r"\W+(p-\d+)")
PUBLISHES = {"SendMessage", "SendMessageBatch"}
FAULT_KINDS = {RESET: "connection_reset", STALL: "stall"}
"""The proxy's network faults by the schedule's names."""


def message_id(body: str) -> str | None:
    """A message body's task id (a kombu envelope, base64 or not) or poison id."""
    poison = _POISON_ID.search(body)
    if poison:
        return poison.group(1)
    for text in (body, _b64(body)):
        try:
            headers = json.loads(text).get("headers") or {}
        except (ValueError, TypeError, AttributeError):
            continue
        if isinstance(headers, dict) and headers.get("id"):
            return str(headers["id"])
    return None


def _b64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode()
    except ValueError:
        return ""


class PublishRecordingProxy(TokenCheckingProxy):
    """``copies()``: task id -> one entry per copy SQS accepted, the fault that hit
    that publish's answer (``connection_reset``, ``stall``) or ``""``."""

    def __init__(self, upstream: str, expired: Callable[[str], bool | None]) -> None:
        super().__init__(upstream, expired)
        self._copies: dict[str, list[str]] = {}
        self._copies_lock = threading.Lock()

    def forwarded(self, action: str, body: bytes, fault: str | None) -> None:
        if action not in PUBLISHES:
            return
        request = json.loads(body)
        entries = request.get("Entries") if action == "SendMessageBatch" else [request]
        ids = [message_id(e.get("MessageBody", "")) for e in entries or []]
        with self._copies_lock:
            for task_id in ids:
                if task_id is not None:
                    self._copies.setdefault(task_id, []).append(FAULT_KINDS.get(fault or "", ""))

    def copies(self) -> dict[str, list[str]]:
        with self._copies_lock:
            return {k: list(v) for k, v in self._copies.items()}
