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
import http.client
import json
import re
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from kombu import Connection

from local_aws.counting_proxy import action_of
from local_aws.http_thread import QuietServer
from local_aws.ports import free_port
from local_aws.moto_server import REGION

STOCK = "kombu.transport.SQS:Transport"
BUNDLED = "runtime.transport:Transport"

URL_KEY, URL_SECRET = "AKIDURLKEYEXAMPLE", "urlsecretexample"
"""Dummy keys put in the broker URL (moto accepts any key)."""
ENV_KEY, ENV_SECRET = "AKIDENVKEYEXAMPLE", "envsecretexample"
"""Different dummy keys put in the environment, to tell which set signed a request."""
BAD_KEY = "AKIDBADKEYEXAMPLE"
"""Keys the proxy refuses as AWS refuses an unknown key."""

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate"}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


class RecordingProxy:
    """``with RecordingProxy(moto.endpoint_url) as proxy: proxy.port; proxy.requests``."""

    def __init__(self, upstream: str, *, refuse_keys: tuple[str, ...] = (BAD_KEY,)) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.refuse_keys = set(refuse_keys)
        self.requests: list[dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self._forward()

            def do_GET(self) -> None:  # noqa: N802
                self._forward()

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = _CREDENTIAL.search(self.headers.get("Authorization", ""))
                record = {"action": action_of(self.headers, body),
                          "key": key.group(1) if key else None,
                          "token": "X-Amz-Security-Token" in self.headers,
                          "params": _json_params(self.headers, body)}
                with proxy._lock:
                    proxy.requests.append(record)
                if record["key"] in proxy.refuse_keys:
                    self._answer(403, {"__type": "com.amazon.coral.service#"
                                                 "UnrecognizedClientException",
                                       "message": "The security token included in the "
                                                  "request is invalid."},
                                 {"x-amzn-query-error": "InvalidClientTokenId;Sender"})
                    return
                upstream = proxy._connection()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException):
                    proxy._drop_connection()
                    try:
                        self.send_error(502)
                    except OSError:
                        pass
                    return
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, status: int, payload: dict, extra: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Silent."""

        self.port = free_port()
        self._server = QuietServer(("127.0.0.1", self.port), Handler)
        # polled every 20 ms, so that stopping it at the end of each test costs nothing
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

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
        with self._lock:
            self.requests.clear()

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


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
