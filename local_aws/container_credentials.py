"""A loopback stand-in for the ECS container-credentials endpoint.

On ECS, the agent serves the task role's credentials at
``AWS_CONTAINER_CREDENTIALS_FULL_URI``; boto3's default chain reads them and
refreshes before ``Expiration``. Here a thread assumes the deployed role with
the operator's keys and serves the result the same way, so a worker process
gets no static keys: only the URI.

For an emulator that checks no keys (fauxqs), :class:`MintedCredentials` makes up
short-lived ones instead and says which have expired, so a proxy in front of the
emulator can refuse them as SQS does; :meth:`CredentialsEndpoint.go_down` and
``come_back`` make the endpoint fail, as a dead agent does.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

import boto3

from local_aws.http_thread import LoopbackService, reset_connection

REFRESH_MARGIN = timedelta(minutes=5)


class AssumedRole:
    """A role's AssumeRole credentials, assumed again shortly before they expire, in the
    shape both AWS credential endpoints serve (the container one and IMDS)."""

    def __init__(self, session: boto3.Session, role_arn: str, endpoint_url: str,
                 session_name: str) -> None:
        self._sts = session.client("sts", endpoint_url=endpoint_url)
        self.role_arn = role_arn
        self._session_name = session_name
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None

    def credentials(self) -> dict[str, Any]:
        with self._lock:
            now = datetime.now(timezone.utc)
            if self._cached is None or self._cached["Expiration"] - REFRESH_MARGIN <= now:
                self._cached = self._sts.assume_role(
                    RoleArn=self.role_arn, RoleSessionName=self._session_name)["Credentials"]
            c = self._cached
            return {"AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"],
                    "Token": c["SessionToken"], "Expiration": c["Expiration"].isoformat()}


BOTOCORE_ADVISORY_WINDOW = 15 * 60
"""Seconds before ``Expiration`` at which botocore starts refreshing container
credentials (it must refresh 10 minutes before)."""


class MintedCredentials:
    """Made-up credentials, each set accepted for ``lifetime`` seconds after it was made.

    botocore refreshes container credentials 15 minutes before their
    ``Expiration``, a window no short test can wait for. So the ``Expiration``
    served is shifted: clients see it ``BOTOCORE_ADVISORY_WINDOW - refresh_before``
    seconds later than the real end, and refresh ``refresh_before`` seconds before
    the token really expires, as they would before a real one. A new set is made
    when the current one has ``refresh_before`` seconds left or less.
    """

    def __init__(self, lifetime: float, *, refresh_before: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self.refresh_before = lifetime / 3 if refresh_before is None else refresh_before
        self._clock = clock
        self._lock = threading.Lock()
        self._made: dict[str, float] = {}  # token -> when it was made
        self._current: dict[str, Any] | None = None
        self.minted = 0

    def credentials(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            if self._current is None or \
                    now - self._made[self._current["Token"]] >= self.lifetime - self.refresh_before:
                token = secrets.token_urlsafe(24)
                self._made[token] = now
                self.minted += 1
                shown = now + self.lifetime + BOTOCORE_ADVISORY_WINDOW - self.refresh_before
                self._current = {
                    "AccessKeyId": "ASIA" + secrets.token_hex(8).upper(),
                    "SecretAccessKey": secrets.token_urlsafe(30), "Token": token,
                    "Expiration": datetime.fromtimestamp(shown, timezone.utc).isoformat()}
            return dict(self._current)

    def expired(self, token: str) -> bool | None:
        """Whether a token this source made has expired; ``None`` for a token it did
        not make (static keys, another source)."""
        with self._lock:
            made = self._made.get(token)
        return None if made is None else self._clock() - made > self.lifetime


class CredentialsSource(Protocol):
    def credentials(self) -> dict[str, Any]: ...


class CredentialsEndpoint(LoopbackService):
    """Serves a source's credentials as the ECS agent does, at an unguessable path of
    a loopback port: ``with CredentialsEndpoint(source) as ep: ep.environment()``."""

    def __init__(self, source: CredentialsSource) -> None:
        self.source = source
        self._path = f"/v2/credentials/{secrets.token_hex(8)}"
        self._down = threading.Event()
        self.refused = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if endpoint._down.is_set():
                    endpoint.refused += 1
                    reset_connection(self.connection)
                    self.close_connection = True
                    return
                if self.path != endpoint._path:
                    self.send_error(404)
                    return
                body = json.dumps(endpoint.source.credentials()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Silent: request lines would be noise, bodies are secrets."""

        self._serve(Handler)

    def go_down(self) -> None:
        """Reset every request from now on, as a dead agent would, until ``come_back``."""
        self._down.set()

    def come_back(self) -> None:
        self._down.clear()

    @property
    def down(self) -> bool:
        return self._down.is_set()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    def environment(self) -> dict[str, str]:
        """What a worker process needs to authenticate as the role: one URI, no keys."""
        return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": self.uri}

    def _check_ready(self) -> None:
        self.source.credentials()  # there are credentials to serve


class ContainerCredentialsEndpoint(CredentialsEndpoint):
    """``with ContainerCredentialsEndpoint(session, role_arn, endpoint_url) as ep: ep.environment()``."""

    def __init__(self, session: boto3.Session, role_arn: str, endpoint_url: str,
                 session_name: str = "celery-worker") -> None:
        self.role = AssumedRole(session, role_arn, endpoint_url, session_name)
        self.role_arn = role_arn
        super().__init__(self.role)

