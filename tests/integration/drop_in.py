"""Helpers for the drop-in comparison of the bundled transport with stock kombu's SQS
transport (tests/integration/test_drop_in.py): a recording proxy between kombu and
moto, connections, and plain-boto3 readings of what is left in the queues.

The proxy records, per request, the SQS (or SNS) action, the access key that signed
it, whether a session token was sent, and the JSON parameters, so a test can say
which credentials a transport used and what it asked of SQS, the same way for both
transports. It can also answer requests signed with given keys the way AWS answers
an unknown key (HTTP 403, ``InvalidClientTokenId``), which moto does not do unless
it enforces IAM.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from kombu import Connection

from local_aws.counting_proxy import Answer, CountingProxy
from local_aws.moto_server import REGION

STOCK = "kombu.transport.SQS:Transport"
BUNDLED = "runtime.transport:Transport"

URL_KEY, URL_SECRET = "AKIDURLKEYEXAMPLE", "urlsecretexample"
"""Dummy keys put in the broker URL (moto accepts any key)."""
ENV_KEY, ENV_SECRET = "AKIDENVKEYEXAMPLE", "envsecretexample"
"""Different dummy keys put in the environment, to tell which set signed a request."""
BAD_KEY = "AKIDBADKEYEXAMPLE"
"""Keys the proxy refuses as AWS refuses an unknown key."""

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


class RecordingProxy(CountingProxy):
    """``with RecordingProxy(moto.endpoint_url) as proxy: proxy.port; proxy.requests``."""

    def __init__(self, upstream: str, *, refuse_keys: tuple[str, ...] = (BAD_KEY,)) -> None:
        super().__init__(upstream)
        self.refuse_keys = set(refuse_keys)
        self.requests: list[dict[str, Any]] = []
        self._answered: Counter[str] = Counter()

    def forwarded(self, action: str, body: bytes, fault: str | None) -> None:
        with self._lock:
            self._answered[action] += 1

    def all_answered(self, action: str) -> bool:
        """Every request of ``action`` so far has had SQS's answer (a long poll is over)."""
        with self._lock:
            return self._answered[action] == sum(r["action"] == action for r in self.requests)

    def intercept(self, action: str, headers: Any, body: bytes) -> Answer | None:
        key = _CREDENTIAL.search(headers.get("Authorization", ""))
        record = {"action": action, "key": key.group(1) if key else None,
                  "token": "X-Amz-Security-Token" in headers,
                  "params": _json_params(headers, body)}
        with self._lock:
            self.requests.append(record)
        if record["key"] in self.refuse_keys:
            return (403, "com.amazon.coral.service#UnrecognizedClientException",
                    "InvalidClientTokenId", "The security token included in the request is "
                                            "invalid.")
        return super().intercept(action, headers, body)

    def actions(self) -> Counter[str]:
        with self._lock:
            return Counter(r["action"] for r in self.requests)

    def of(self, action: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["action"] == action]

    def keys(self) -> set[str | None]:
        with self._lock:
            return {r["key"] for r in self.requests}

    def tokens(self) -> set[bool]:
        with self._lock:
            return {r["token"] for r in self.requests}

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.requests.clear()
            self._answered.clear()


def _json_params(headers, body: bytes) -> dict[str, Any]:
    if "json" not in headers.get("Content-Type", ""):
        return {}
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}


def wire(proxy: RecordingProxy, *, exact: bool = False) -> dict[str, int]:
    """The actions called, with their counts; those whose count depends on timing
    (ReceiveMessage, and the batch calls, whose batches form by time) as 1 when called,
    unless ``exact``."""
    counts = dict(proxy.actions())
    if not exact:
        for action in TIMED_ACTIONS & set(counts):
            counts[action] = 1
    return dict(sorted(counts.items()))


TIMED_ACTIONS = {"ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"}


# connections ---------------------------------------------------------------------------

BASE_OPTIONS = {"is_secure": False, "region": REGION, "wait_time_seconds": 0,
                "polling_interval": 0.05, "visibility_timeout": 30}


def connect(port: int, transport: str, *, keys: tuple[str, str] | None = (URL_KEY, URL_SECRET),
            **options: Any) -> Connection:
    """A kombu connection to ``localhost:port``, keys in the URL unless ``keys`` is None."""
    auth = f"{keys[0]}:{keys[1]}@" if keys else ""
    return Connection(f"sqs://{auth}localhost:{port}", transport=transport,
                      transport_options={**BASE_OPTIONS, **options})


def unique(prefix: str = "d") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def predefined(*entries: tuple[str, str], **extra: Any) -> dict[str, dict[str, Any]]:
    """``predefined_queues`` for (name, url) pairs, each with ``extra`` settings."""
    return {name: {"url": url, **extra} for name, url in entries}


# reading the queues with plain boto3 -----------------------------------------------------

def counts(sqs, url: str) -> tuple[int, int]:
    """(visible, in flight): exact on moto."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), \
        int(attrs["ApproximateNumberOfMessagesNotVisible"])


def wait_counts(sqs, url: str, expected: tuple[int, int], timeout: float = 3.0) -> tuple[int, int]:
    """The queue's counts once they equal ``expected`` (or the last ones after ``timeout``):
    for the bundled transport's deletes, sent ``ack_flush_delay`` after the ack."""
    deadline = time.monotonic() + timeout
    while True:
        now = counts(sqs, url)
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def kombu_body(sqs_body: str) -> Any:
    """The payload of a message kombu published (base64 of its JSON envelope)."""
    envelope = json.loads(base64.b64decode(sqs_body))
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    return json.loads(body) if envelope.get("content-type") == "application/json" else body


def drain_raw(sqs, url: str, *, attributes: bool = False) -> list[dict[str, Any]]:
    """Receive (and delete) every visible message with plain boto3."""
    found: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                  MessageSystemAttributeNames=["All"],
                                  MessageAttributeNames=["All"]).get("Messages", [])
        if not got:
            return found
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            found.append(m if attributes else {"Body": m["Body"]})


def queue_names(sqs, prefix: str) -> list[str]:
    return sorted(u.rsplit("/", 1)[-1]
                  for u in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []))


def failure(call) -> dict[str, Any]:
    """What ``call()`` raised and how long it took to fail."""
    from botocore.exceptions import ClientError

    started = time.monotonic()
    try:
        call()
    except Exception as error:  # noqa: BLE001 (recorded, then compared)
        return {"type": type(error).__name__, "message": str(error),
                "client_error": isinstance(error, ClientError),
                "seconds": time.monotonic() - started}
    return {"type": None, "message": "", "client_error": False,
            "seconds": time.monotonic() - started}


# consuming ------------------------------------------------------------------------------

def describe(message) -> Any:
    """A delivered message's payload, or what made it undecodable."""
    try:
        return message.payload
    except Exception as error:  # noqa: BLE001
        return f"undecodable: {type(error).__name__}"


class Receiving:
    """A kombu Consumer on ``queues``, driven by ``Connection.drain_events`` or, given a
    ``hub``, by kombu's event loop as Celery drives it. ``messages`` are the deliveries,
    in order; ``auto_ack`` acks each as it arrives."""

    def __init__(self, conn: Connection, queues, *, hub=None, auto_ack: bool = False,
                 **consumer_options: Any) -> None:
        from kombu import Consumer

        self.conn, self.hub, self.auto_ack = conn, hub, auto_ack
        self.messages: list[Any] = []
        self.consumer = Consumer(conn.default_channel, queues, callbacks=[self._on],
                                 **consumer_options)
        self.consumer.consume()
        # A timer wakes the hub every 50 ms, as Celery's own timers do, so run() and until()
        # see their deadlines instead of sitting in a 1 s poll on an idle loop.
        self._tick = hub.call_repeatedly(0.05, _nothing) if hub is not None else None

    def _on(self, _body: Any, message: Any) -> None:
        self.messages.append(message)
        if self.auto_ack:
            message.ack()

    def _step(self) -> None:
        if self.hub is not None:
            self.hub.run_once()
            return
        import socket

        try:
            self.conn.drain_events(timeout=0.2)
        except socket.timeout:
            pass

    def until(self, count: int, timeout: float = 3.0) -> list[Any]:
        """Deliveries once there are ``count`` (or all there are after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            self._step()
        return self.messages

    def run_until(self, done: Callable[[], Any], timeout: float, what: str) -> None:
        """Keep consuming until ``done()`` (or fail after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            self._step()

    def run(self, seconds: float) -> list[Any]:
        """Keep consuming for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._step()
        return self.messages

    def payloads(self) -> list[Any]:
        return [describe(m) for m in self.messages]

    def cancel(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        self.consumer.cancel()


def _nothing() -> None:
    """A timer's callback that only wakes the hub."""
