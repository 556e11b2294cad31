"""Credentials for the bundled transport: the default chain, and one refreshable
assume-role refresher per STS role, shared by every client that uses that role.

Stock kombu keeps a single STS expiry for all queues: after the first refresh
only the queue that triggered it gets a new client, and the others keep using
expired tokens. Here each role has one :class:`botocore.credentials.RefreshableCredentials`;
botocore refreshes it under a lock before it expires (advisory and mandatory
windows scaled to the token lifetime), and every client built on it signs with
the current token. Base credentials come from the environment's default chain:
the ECS task role, the EC2 instance profile, or variables in development.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

from runtime.errors import CredentialsError
from runtime.sqs_errors import error_code

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def session_name(prefix: str = "celery") -> str:
    """``celery-<host>-<pid>``, within STS's 64 characters of ``[\\w+=,.@-]``."""
    host = re.sub(r"[^\w+=,.@-]", "-", socket.gethostname())
    pid = str(os.getpid())
    return f"{prefix}-{host[: 64 - len(prefix) - len(pid) - 2]}-{pid}"


class RoleCredentials:
    """Clients whose credentials are the base chain or a shared, refreshing STS role.

    ``token_timeout`` is the STS session length (900..43200 s); ``external_id`` is
    sent with every AssumeRole when set; ``clock`` exists for tests.
    """

    def __init__(self, *, region: str, token_timeout: int = 900, external_id: str | None = None,
                 client_config: Config | None = None, endpoint_url: str | None = None,
                 clock: Clock = utc_now,
                 base_session: botocore.session.Session | None = None) -> None:
        self.region = region
        self.token_timeout = token_timeout
        self.external_id = external_id
        self.client_config = client_config
        self.endpoint_url = endpoint_url
        self._clock = clock
        self._base = base_session or botocore.session.get_session()
        self._lock = threading.Lock()
        self._roles: dict[str, RefreshableCredentials] = {}
        self._clients: dict[tuple[str, str | None], BaseClient] = {}
        self._sts: BaseClient | None = None
        self.session_name = session_name()

    def client(self, service: str, role_arn: str | None = None) -> BaseClient:
        """One client per (service, role), created once and reused for the worker's life."""
        key = (service, role_arn)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                session = self._base if role_arn is None else self._role_session(role_arn)
                client = session.create_client(service, region_name=self.region,
                                               config=self.client_config,
                                               endpoint_url=self.endpoint_url)
                self._clients[key] = client
            return client

    def credentials(self, role_arn: str) -> RefreshableCredentials:
        """The single refresher for ``role_arn`` (created on first use)."""
        with self._lock:
            return self._role_credentials(role_arn)

    def _role_session(self, role_arn: str) -> botocore.session.Session:
        session = botocore.session.get_session()
        session._credentials = self._role_credentials(role_arn)
        return session

    def _role_credentials(self, role_arn: str) -> RefreshableCredentials:
        creds = self._roles.get(role_arn)
        if creds is None:
            metadata = self._assume(role_arn)
            creds = RefreshableCredentials(
                access_key=metadata["access_key"], secret_key=metadata["secret_key"],
                token=metadata["token"],
                expiry_time=datetime.fromisoformat(metadata["expiry_time"]),
                refresh_using=lambda: self._refresh(role_arn), method="assume-role",
                time_fetcher=self._clock)
            self._size_windows(creds, metadata)
            self._roles[role_arn] = creds
        return creds

    def _refresh(self, role_arn: str) -> dict[str, Any]:
        metadata = self._assume(role_arn)
        self._size_windows(self._roles[role_arn], metadata)
        return metadata

    def _size_windows(self, creds: RefreshableCredentials, metadata: dict[str, Any]) -> None:
        """Refresh a third of the way before expiry (at most 15 minutes), and block for it
        a sixth of the way (at most 10): botocore's fixed 15/10 minutes would refresh a
        15-minute token on every request. Sized from the token actually issued."""
        lifetime = (datetime.fromisoformat(metadata["expiry_time"]) - self._clock()).total_seconds()
        creds._advisory_refresh_timeout = min(15 * 60, max(lifetime, 0) / 3)
        creds._mandatory_refresh_timeout = min(10 * 60, max(lifetime, 0) / 6)

    def _assume(self, role_arn: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": self.session_name,
                                  "DurationSeconds": self.token_timeout}
        if self.external_id is not None:
            kwargs["ExternalId"] = self.external_id
        try:
            response = self._assume_role_call(kwargs)
        except (ClientError, BotoCoreError) as error:
            code = error_code(error)
            raise CredentialsError("*", "sts:AssumeRole", code, role_arn) from None
        c = response["Credentials"]
        logger.info("assumed %s as %s until %s", role_arn, self.session_name, c["Expiration"])
        expiry = c["Expiration"]
        if isinstance(expiry, datetime) and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=timezone.utc)
        return {"access_key": c["AccessKeyId"], "secret_key": c["SecretAccessKey"],
                "token": c["SessionToken"],
                "expiry_time": expiry.isoformat() if isinstance(expiry, datetime) else expiry}

    def _assume_role_call(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._sts is None:
            self._sts = self._base.create_client("sts", region_name=self.region,
                                                 config=self.client_config)
        return self._sts.assume_role(**kwargs)
