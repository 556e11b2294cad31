"""A bundled-transport channel driven by kombu's own event loop, the way Celery's
consumer drives it, against a real emulator: tests of what the transport does
with held, acked, rejected and released messages, observed at the queue.

Faults are injected into the channel's real botocore clients with event hooks
(``before-parameter-build.sqs.<Action>``), so the same test runs against any version of
the transport's internals.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub, set_event_loop

from local_aws.fleet import EMULATOR_KEYS, sqs_client
from local_aws.moto_server import REGION

TRANSPORT = "runtime.transport:Transport"


def make_queue(sqs, *, visibility: int, fifo: bool = False, dlq: bool = True,
               max_message_bytes: int | None = None) -> dict[str, Any]:
    """A fresh queue on the emulator; its ``predefined_queues`` entry (with its DLQ URL,
    and its MaximumMessageSize when ``max_message_bytes`` sets one)."""
    name = f"h{uuid.uuid4().hex[:10]}" + (".fifo" if fifo else "")
    attrs = {"VisibilityTimeout": str(visibility)}
    if fifo:
        attrs["FifoQueue"] = "true"
    entry: dict[str, Any] = {"name": name, "visibility_timeout": visibility}
    if max_message_bytes is not None:
        attrs["MaximumMessageSize"] = str(max_message_bytes)
        entry["max_message_bytes"] = max_message_bytes
    if dlq:
        dlq_name = name.replace(".fifo", "-dlq.fifo") if fifo else f"{name}-dlq"
        entry["dead_letter_queue"] = sqs.create_queue(
            QueueName=dlq_name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    entry["url"] = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    return entry


def counts(sqs, url: str) -> tuple[int, int]:
    """(visible, in flight) as the emulator reports them."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return (int(attrs["ApproximateNumberOfMessages"]),
            int(attrs["ApproximateNumberOfMessagesNotVisible"]))


class HubChannel:
    """``with HubChannel(endpoint, [queue entries], **options) as h:`` then ``h.consume``,
    ``h.run_until``, and ``h.messages`` (kombu messages in delivery order)."""

    def __init__(self, endpoint_url: str, queues: list[dict[str, Any]],
                 monkeypatch: pytest.MonkeyPatch, *, hub: bool = True,
                 **options: Any) -> None:
        for key, value in {**EMULATOR_KEYS, "AWS_ENDPOINT_URL": endpoint_url,
                           "AWS_DEFAULT_REGION": REGION}.items():
            monkeypatch.setenv(key, value)
        self.sqs = sqs_client(endpoint_url)
        self.queues = queues
        predefined = {q["name"]: {k: v for k, v in q.items() if k != "name"} for q in queues}
        self.hub = Hub() if hub else None
        set_event_loop(self.hub)
        endpoint = urlsplit(endpoint_url)
        self.connection = Connection(hostname=endpoint.hostname, port=endpoint.port,
                                     transport=TRANSPORT, transport_options={
            "region": REGION, "is_secure": False, "predefined_queues": predefined, "wait_time_seconds": 1,
            "polling_interval": 0, **options})
        self.channel = self.connection.channel()
        self.messages: list[Any] = []
        self.on_message: Callable[[Any], None] = lambda _m: None

    def client(self, queue: dict[str, Any]):
        return self.channel.sqs(queue["name"])

    def hook(self, queue: dict[str, Any], action: str, handler: Callable[..., Any]) -> None:
        """Run ``handler(params=<the call's parameters>, ...)`` before every ``action`` of
        the channel's SQS clients: those made already, and (through their session)
        those made later. An exception it raises fails the call."""
        credentials = self.channel._credentials
        clients = {id(c): c for c in [self.client(queue), *credentials._clients.values()]}
        event = f"before-parameter-build.sqs.{action}"
        for client in clients.values():
            client.meta.events.register(event, handler)
        credentials._base.register(event, handler)

    def publish(self, queue: dict[str, Any], body: Any, **properties: Any) -> None:
        Producer(self.channel).publish(body, routing_key=queue["name"], serializer="json",
                                       **properties)

    def send_raw(self, queue: dict[str, Any], body: str, **kwargs: Any) -> None:
        self.sqs.send_message(QueueUrl=queue["url"], MessageBody=body, **kwargs)

    def consume(self, queue: dict[str, Any], *, prefetch: int = 10, no_ack: bool = False) -> Consumer:
        consumer = Consumer(self.channel, [Queue(queue["name"], no_declare=True)],
                            callbacks=[self._on_message], accept=["json"], no_ack=no_ack,
                            prefetch_count=prefetch)
        consumer.consume()
        return consumer

    def _on_message(self, _body: Any, message: Any) -> None:
        self.messages.append(message)
        self.on_message(message)

    def run_until(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hub is not None:
                self.hub.run_once()
            else:
                try:
                    self.connection.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
            value = predicate()
            if value:
                return value
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        self.run_until(lambda: time.monotonic() >= deadline, seconds + 5, "time to pass")

    def close(self) -> float:
        """Close the channel as Celery does at warm shutdown; returns the seconds it took."""
        started = time.monotonic()
        self.channel.close()
        took = time.monotonic() - started
        self.connection.release()
        if self.hub is not None:
            self.hub.close()
        set_event_loop(None)
        return took

    def __enter__(self) -> HubChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.channel.closed:
            self.close()


def body_of(message: Any) -> Any:
    return json.loads(message.body) if isinstance(message.body, (str, bytes)) else message.body
