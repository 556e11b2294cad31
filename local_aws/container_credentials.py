"""A loopback stand-in for the ECS container-credentials endpoint.

On ECS, the agent serves the task role's credentials at
``AWS_CONTAINER_CREDENTIALS_FULL_URI``; boto3's default chain reads them and
refreshes before ``Expiration``. Here a thread assumes the deployed role with
the operator's keys and serves the result the same way, so a worker process
gets no static keys: only the URI.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any

import boto3

from local_aws.http_thread import LoopbackHttpServer

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


class ContainerCredentialsEndpoint:
    """``with ContainerCredentialsEndpoint(session, role_arn, endpoint_url) as ep: ep.environment()``."""

    def __init__(self, session: boto3.Session, role_arn: str, endpoint_url: str,
                 session_name: str = "celery-worker") -> None:
        self.role = AssumedRole(session, role_arn, endpoint_url, session_name)
        self.role_arn = role_arn
        self._path = f"/v2/credentials/{secrets.token_hex(8)}"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != endpoint._path:
                    self.send_error(404)
                    return
                body = json.dumps(endpoint.role.credentials()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Silent: request lines would be noise, bodies are secrets."""

        self._http = LoopbackHttpServer(Handler)
        self.port = self._http.port

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self._path}"

    def environment(self) -> dict[str, str]:
        """What a worker process needs to authenticate as the role: one URI, no keys."""
        return {"AWS_CONTAINER_CREDENTIALS_FULL_URI": self.uri}

    def start(self) -> ContainerCredentialsEndpoint:
        self.role.credentials()  # fail here, loudly, if the role cannot be assumed
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> ContainerCredentialsEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
