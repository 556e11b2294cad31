"""A recording stand-in for a boto3 SQS client (unit tests only)."""

from __future__ import annotations

import queue
import threading
from collections import deque
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


class LongPolls(StubSqs):
    """A :class:`StubSqs` whose receives wait, as long polls do, until the test answers
    them (:meth:`answer`, oldest first); :meth:`close` ends those still waiting, empty.
    Every other call is answered at once with ``{}``."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: deque[queue.SimpleQueue] = deque()
        self._changed = threading.Condition()

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        answer: queue.SimpleQueue = queue.SimpleQueue()
        with self._changed:
            self._record("ReceiveMessage", kwargs)
            self._waiting.append(answer)
            self._changed.notify_all()
        return {"Messages": answer.get(timeout=30)}

    def answer(self, messages: list[dict[str, Any]], timeout: float = 10) -> None:
        """Answer the oldest receive waiting (waiting for one to come, at most ``timeout``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._waiting, timeout):
                raise AssertionError(f"no receive was waiting within {timeout:.0f} s")
            self._waiting.popleft().put(messages)

    def close(self) -> None:
        with self._changed:
            while self._waiting:
                self._waiting.popleft().put([])
