"""A recording stand-in for a boto3 SQS client (unit tests only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class StubSqs:
    def __init__(self, respond: Callable[[str, dict], dict] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._respond = respond or (lambda _action, _kwargs: {})

    def _record(self, action: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((action, kwargs))
        return self._respond(action, kwargs)

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return self._record("DeleteMessageBatch", kwargs)

    def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        return self._record("ChangeMessageVisibilityBatch", kwargs)

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        return self._record("SendMessage", kwargs)

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return self._record("SendMessageBatch", kwargs)

    def get_queue_attributes(self, **kwargs: Any) -> dict[str, Any]:
        return self._record("GetQueueAttributes", kwargs)

    def actions(self) -> list[str]:
        return [action for action, _ in self.calls]
