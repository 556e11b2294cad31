"""A loopback HTTP proxy that counts SQS requests by action, at the wire, and can
answer the next N requests of an action with an error (throttling, 5xx,
AccessDenied), or stop answering at all (a black-holed network), for fault tests,
and can add a fixed delay to every request (real SQS answers in 5 to 20 ms).

Both sides of a comparison (stock kombu and the bundled transport, publisher
and worker) point ``AWS_ENDPOINT_URL`` at it, so every request is counted the
same way. It changes timing (see BENCHMARKS.md), so throughput is measured in
a separate pass without it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from typing import Any
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from local_aws.http_thread import LoopbackHttpServer

Answer = tuple[int, str, str, str]
"""An error answer: HTTP status, JSON ``__type``, query-protocol code, message."""

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate"}


def action_of(headers, body: bytes) -> str:
    target = headers.get("X-Amz-Target", "")
    if target:
        return target.rsplit(".", 1)[-1]
    if body:
        actions = parse_qs(body.decode("utf-8", "replace")).get("Action")
        if actions:
            return actions[0]
    return "unknown"


class CountingProxy:
    """``with CountingProxy(upstream) as proxy: proxy.endpoint_url; proxy.counts()``."""

    def __init__(self, upstream: str, *, delay: float = 0.0) -> None:
        """``delay``: seconds added to every request, as a far endpoint would."""
        parts = urlsplit(upstream)
        self.delay = delay
        self._upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._hanging = threading.Event()
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as clients expect
            # Headers and body leave in separate writes: with Nagle's algorithm the body
            # waits for the client's delayed ACK, adding ~25 ms to every request.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self._forward()

            def do_GET(self) -> None:  # noqa: N802
                self._forward()

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = action_of(self.headers, body)
                proxy._count(action)
                if proxy._hanging.is_set():
                    proxy._released.wait()  # never answered while the network is "down"
                    return
                if proxy.delay:
                    time.sleep(proxy.delay)
                answer = proxy.intercept(action, self.headers, body)
                if answer is not None:
                    status, error_type, code, message = answer
                    payload = json.dumps({"__type": error_type, "message": message}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("x-amzn-query-error", f"{code};Sender")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
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
                    except OSError:  # the client is gone too (shutdown)
                        pass
                    return
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Silent: request lines carry signed headers."""

        self._http = LoopbackHttpServer(Handler)
        self.port = self._http.port
        self._local = threading.local()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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

    def _count(self, action: str) -> None:
        with self._lock:
            self._counts[action] += 1

    def inject(self, action: str, count: int, status: int, code: str) -> None:
        """Answer the next ``count`` requests of ``action`` with ``status`` and ``code``."""
        with self._lock:
            self._faults.setdefault(action, []).extend([(status, code)] * count)

    def hang(self) -> None:
        """From now on read every request and never answer it (until ``stop``)."""
        self._hanging.set()

    def intercept(self, action: str, headers: Any, body: bytes) -> Answer | None:
        """The error to answer this request with instead of forwarding it, if any.
        Subclasses may record the request here, or refuse it for reasons of their own."""
        with self._lock:
            pending = self._faults.get(action)
            fault = pending.pop(0) if pending else None
        if fault is None:
            return None
        status, code = fault
        return status, f"com.amazonaws.sqs#{code}", code, f"injected {code}"

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def start(self) -> CountingProxy:
        self._http.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._http.stop()

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
