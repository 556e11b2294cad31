"""Credentials for the bundled transport: the default chain, and one refreshable
assume-role refresher per STS role, shared by every client that uses that role.

Stock kombu keeps a single STS expiry for all queues: after the first refresh
only the queue that triggered it gets a new client, and the others keep using
expired tokens. Here each role has one :class:`botocore.credentials.RefreshableCredentials`;
botocore refreshes it under a lock before it expires (advisory and mandatory
windows scaled to the token lifetime), and every client built on it signs with
the current token. Base credentials come from the environment's default chain:
the ECS task role, the EC2 instance profile, or variables in development
(or static keys given in the broker URL, which work but are logged as such).

No network call is ever made under a lock shared by several roles: clients are
made without one (a role's first AssumeRole happens on its first request, under
that role's own botocore refresh lock), so a slow STS for one role never holds
up another role's queues or the default chain. A role whose AssumeRole failed is
not asked for again before a backoff (1 s doubling to 60 s); meanwhile its
requests fail at once with :class:`~runtime.errors.CredentialsError` instead of
each waiting on STS.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials, RefreshableCredentials

from runtime import sqs_wire
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


PROFILES = ("receive", "publish", "ops", "shutdown")
"""Client configurations: long polls; publishes (bounded: ``runtime.publishing``); every
other call; the last calls at shutdown."""
LEAN_PROFILES = ("receive", "ops")
"""The profiles whose per-message SQS calls take ``runtime.sqs_wire``'s lean path."""
ASSUME_BACKOFF_BASE, ASSUME_BACKOFF_MAX = 1.0, 60.0


class _RoleState:
    def __init__(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""


class RoleCredentials:
    """Clients whose credentials are the base chain or a shared, refreshing STS role.

    ``configs`` maps each of :data:`PROFILES` to a botocore ``Config``;
    ``token_timeout`` is the STS session length (900..43200 s); ``external_id`` is
    sent with every AssumeRole when set; ``clock`` and ``monotonic`` exist for tests.
    """

    def __init__(self, *, region: str, configs: dict[str, Config] | None = None,
                 token_timeout: int = 900, external_id: str | None = None,
                 endpoint_url: str | None = None, clock: Clock = utc_now,
                 monotonic: Callable[[], float] = time.monotonic,
                 base_session: botocore.session.Session | None = None) -> None:
        self.region = region
        self.token_timeout = token_timeout
        self.external_id = external_id
        self.configs = {profile: (configs or {}).get(profile) for profile in PROFILES}
        self.endpoint_url = endpoint_url
        self._clock = clock
        self._monotonic = monotonic
        self._base = base_session or botocore.session.get_session()
        self._lock = threading.Lock()  # guards the maps below; held across no network call
        self._roles: dict[str, RefreshableCredentials] = {}
        self._states: dict[str, _RoleState] = {}
        self._clients: dict[tuple[str, str | None, str], BaseClient] = {}
        self._sts: BaseClient | None = None
        self.session_name = session_name()

    def client(self, service: str, role_arn: str | None = None,
               profile: str = "ops") -> BaseClient:
        """One client per (service, role, profile), made once, without a request (for
        SQS's receive and ops profiles, wrapped by ``runtime.sqs_wire.lean``)."""
        key = (service, role_arn, profile)
        client = self._clients.get(key)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                session = self._base if role_arn is None else self._role_session(role_arn)
                client = session.create_client(service, region_name=self.region,
                                               config=self.configs[profile],
                                               endpoint_url=self.endpoint_url)
                if service == "sqs" and profile in LEAN_PROFILES:
                    client = sqs_wire.lean(client, session.get_credentials())
                self._clients[key] = client
            return client

    def credentials(self, role_arn: str) -> RefreshableCredentials:
        """The single refresher for ``role_arn``; it assumes the role on first use."""
        with self._lock:
            return self._role_credentials(role_arn)

    def _role_session(self, role_arn: str) -> botocore.session.Session:
        session = botocore.session.get_session()
        session._credentials = self._role_credentials(role_arn)
        return session

    def _role_credentials(self, role_arn: str) -> RefreshableCredentials:
        creds = self._roles.get(role_arn)
        if creds is None:
            creds = DeferredRefreshableCredentials(
                refresh_using=lambda: self._refresh(role_arn), method="assume-role",
                time_fetcher=self._clock)
            self._roles[role_arn] = creds
            self._states[role_arn] = _RoleState()
        return creds

    def _refresh(self, role_arn: str) -> dict[str, Any]:
        """Runs under the role's own botocore refresh lock, never under ``self._lock``."""
        state = self._states[role_arn]
        now = self._monotonic()
        if now < state.retry_at:
            raise CredentialsError("*", "sts:AssumeRole", state.last_error, role_arn)
        try:
            metadata = self._assume(role_arn)
        except CredentialsError as error:
            state.failures += 1
            delay = min(ASSUME_BACKOFF_MAX, ASSUME_BACKOFF_BASE * 2 ** (state.failures - 1))
            state.retry_at, state.last_error = now + delay, error.code
            logger.warning("could not assume %s (%s); not asking STS again for %.0f s",
                           role_arn, error.code, delay)
            raise
        state.failures, state.retry_at = 0, 0.0
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
        except Exception as error:  # STS unreachable, refused, or answering nonsense
            raise CredentialsError("*", "sts:AssumeRole", error_code(error), role_arn) from None
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
            with self._lock:
                if self._sts is None:
                    self._sts = self._base.create_client("sts", region_name=self.region,
                                                         config=self.configs["ops"])
        return self._sts.assume_role(**kwargs)
