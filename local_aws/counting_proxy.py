"""A loopback HTTP proxy that counts SQS requests by action (and times their arrival),
at the wire, and can
answer the next N requests of an action with an error (throttling, 5xx,
AccessDenied), or stop answering at all (a black-holed network), for fault tests,
and can add a fixed delay to every request (real SQS answers in 5 to 20 ms).

Network faults, each for the next N requests of an action (or of any, ``ANY``):
``inject_reset`` forwards the request and then resets the client's connection
without an answer (SQS acted, the client cannot know); ``inject_stall`` forwards
it and answers only after a delay (longer than the client's read timeout: it
gives up and retries what SQS already did); ``inject_hang`` never forwards nor
answers it (a long poll that never returns). Any of them may be limited to the
requests of the next ``within`` seconds (a burst). ``faulted()`` counts the
requests each fault reached.

Both sides of a comparison (stock kombu and the bundled transport, publisher
and worker) point ``AWS_ENDPOINT_URL`` at it, so every request is counted the
same way. It changes timing (see BENCHMARKS.md), so throughput is measured in
a separate pass without it.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from local_aws.http_thread import LoopbackService, reset_connection

Answer = tuple[int, str, str, str]
"""An error answer: HTTP status, JSON ``__type``, query-protocol code, message."""

ANY = "*"
"""The action name that makes an injected fault apply to requests of any action."""

RESET, STALL, HANG = "reset", "stall", "hang"


@dataclass(frozen=True)
class _NetworkFault:
    kind: str  # RESET, STALL or HANG
    seconds: float = 0.0  # STALL: how late the answer comes


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


class CountingProxy(LoopbackService):
    """``with CountingProxy(upstream) as proxy: proxy.endpoint_url; proxy.counts()``."""

    def __init__(self, upstream: str, *, delay: float = 0.0,
                 tls: ssl.SSLContext | None = None) -> None:
        """``delay``: seconds added to every request, as a far endpoint would; ``tls``:
        serve HTTPS with this context (``endpoint_url`` then says ``https``)."""
        parts = urlsplit(upstream)
        self.delay = delay
        self._upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._arrivals: dict[str, list[float]] = {}  # action -> time.monotonic() of each
        # action -> [(fault, when it expires)], oldest first
        self._faults: dict[str, list[tuple[tuple[int, str], float]]] = {}
        self._network_faults: dict[str, list[tuple[_NetworkFault, float]]] = {}
        self._faulted: Counter[str] = Counter()
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
                fault = proxy._take(proxy._network_faults, action)
                if fault is not None:
                    proxy._tally(fault.kind)
                    if fault.kind == HANG:
                        proxy._released.wait()  # not forwarded, never answered
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
                if response.status < 300:
                    proxy.forwarded(action, body, fault.kind if fault is not None else None)
                if fault is not None and fault.kind == RESET:
                    reset_connection(self.connection)
                    self.close_connection = True
                    return
                if fault is not None and fault.kind == STALL:
                    proxy._released.wait(fault.seconds)
                try:
                    self._answer(response, data)
                except OSError:  # a stalled client gave up and closed its end
                    self.close_connection = True

            def _answer(self, response: http.client.HTTPResponse, data: bytes) -> None:
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Silent: request lines carry signed headers."""

        self._serve(Handler, tls=tls)
        self._scheme = "http" if tls is None else "https"
        self._local = threading.local()

    @property
    def endpoint_url(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self.port}"

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
            self._arrivals.setdefault(action, []).append(time.monotonic())

    def inject(self, action: str, count: int, status: int, code: str, *,
               within: float | None = None) -> None:
        """Answer the next ``count`` requests of ``action`` (or ``ANY``) with ``status``
        and ``code``; with ``within``, only those that come in the next ``within``
        seconds (a burst, not a debt that a quiet client pays off for minutes)."""
        self._add(self._faults, action, count, (status, code), within)

    def inject_reset(self, action: str, count: int, *, within: float | None = None) -> None:
        """Forward the next ``count`` requests of ``action`` (or ``ANY``), then reset
        the client's connection instead of answering."""
        self._add(self._network_faults, action, count, _NetworkFault(RESET), within)

    def inject_stall(self, action: str, count: int, seconds: float, *,
                     within: float | None = None) -> None:
        """Forward the next ``count`` requests of ``action`` (or ``ANY``) and answer
        each ``seconds`` late (sooner if the proxy stops)."""
        self._add(self._network_faults, action, count, _NetworkFault(STALL, seconds), within)

    def inject_hang(self, action: str, count: int, *, within: float | None = None) -> None:
        """Neither forward nor answer the next ``count`` requests of ``action`` (or
        ``ANY``); their connections stay open until the proxy stops."""
        self._add(self._network_faults, action, count, _NetworkFault(HANG), within)

    def _add(self, faults: dict[str, list[tuple[Any, float]]], action: str, count: int,
             fault: Any, within: float | None) -> None:
        expires = time.monotonic() + within if within is not None else float("inf")
        with self._lock:
            faults.setdefault(action, []).extend([(fault, expires)] * count)

    def _take(self, faults: dict[str, list[tuple[Any, float]]], action: str) -> Any:
        """The next fault pending for this action, else for any action; expired ones
        are dropped."""
        now = time.monotonic()
        with self._lock:
            for key in (action, ANY):
                pending = faults.get(key)
                while pending:
                    fault, expires = pending.pop(0)
                    if now <= expires:
                        return fault
        return None

    def _tally(self, kind: str) -> None:
        with self._lock:
            self._faulted[kind] += 1

    def faulted(self) -> dict[str, int]:
        """Requests each injected fault reached: ``reset``, ``stall``, ``hang``, and
        error answers by code."""
        with self._lock:
            return dict(self._faulted)

    def hang(self) -> None:
        """From now on read every request and never answer it (until ``stop``)."""
        self._hanging.set()

    def intercept(self, action: str, headers: Any, body: bytes) -> Answer | None:
        """The error to answer this request with instead of forwarding it, if any.
        Subclasses may record the request here, or refuse it for reasons of their own."""
        fault = self._take(self._faults, action)
        if fault is None:
            return None
        status, code = fault
        self._tally(code)
        return status, f"com.amazonaws.sqs#{code}", code, f"injected {code}"

    def forwarded(self, action: str, body: bytes, fault: str | None) -> None:
        """SQS accepted this request (a 2xx); ``fault`` is the network fault that then
        hit its answer (``RESET``, ``STALL``) or ``None``. Subclasses may record it."""

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def arrivals(self, action: str) -> list[float]:
        """When each request of ``action`` reached the proxy (``time.monotonic()``)."""
        with self._lock:
            return list(self._arrivals.get(action, []))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._arrivals.clear()

    def stop(self) -> None:
        self._released.set()  # hung and stalled requests end now
        super().stop()


class TokenCheckingProxy(CountingProxy):
    """A counting proxy that refuses requests signed with an expired session token
    (403 ``ExpiredToken``), as SQS does, for an emulator that checks no credentials.
    ``expired(token)`` judges a token: ``True`` refuse, ``False`` or ``None`` (a token
    it does not know, or static keys without one) pass."""

    def __init__(self, upstream: str, expired: Callable[[str], bool | None], *,
                 delay: float = 0.0) -> None:
        super().__init__(upstream, delay=delay)
        self._expired = expired

    def intercept(self, action: str, headers: Any, body: bytes) -> Answer | None:
        token = headers.get("X-Amz-Security-Token")
        if token and self._expired(token):
            self._tally("ExpiredToken")
            return (403, "com.amazon.coral.service#ExpiredTokenException", "ExpiredToken",
                    "The security token included in the request is expired")
        return super().intercept(action, headers, body)
