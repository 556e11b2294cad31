"""A loopback stand-in for the EC2 instance metadata service, IMDSv2 only.

    with InstanceMetadataService(session, instance_role_arn, endpoint_url) as imds:
        env = imds.environment()            # AWS_EC2_METADATA_SERVICE_ENDPOINT
        imds.target_lifecycle_state = "Terminated"

botocore's own instance-metadata provider authenticates through it exactly as on
an instance: ``PUT /latest/api/token``, then ``GET
/latest/meta-data/iam/security-credentials/`` (the role name) and ``.../ROLE``
(the credentials JSON), each with the token header; a request without a token is
refused (401), as IMDSv2-only instances (the fleet's launch template) refuse it.
The credentials are the deployed instance role's, assumed with the operator's
keys (:class:`local_aws.container_credentials.AssumedRole`). It also serves the
instance id, its identity document, the ``aws:autoscaling:groupName`` tag and a
settable ``autoscaling/target-lifecycle-state``.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

import boto3

from local_aws.container_credentials import AssumedRole
from local_aws.http_thread import LoopbackService
from local_aws.moto_server import ACCOUNT_ID, REGION

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


class InstanceMetadataService(LoopbackService):
    def __init__(self, session: boto3.Session, role_arn: str, endpoint_url: str, *,
                 instance_id: str = "i-0123456789abcdef0",
                 auto_scaling_group: str | None = None) -> None:
        self.role = AssumedRole(session, role_arn, endpoint_url, session_name=instance_id)
        self.role_name = role_arn.rsplit("/", 1)[-1]
        self.instance_id = instance_id
        self.auto_scaling_group = auto_scaling_group
        self.target_lifecycle_state = "InService"
        self._tokens: set[str] = set()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/latest/api/token" or not self.headers.get(TTL_HEADER):
                    self._answer(400, "")
                    return
                token = secrets.token_urlsafe(24)
                service._tokens.add(token)
                self._answer(200, token)

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get(TOKEN_HEADER) not in service._tokens:
                    self._answer(401, "")
                    return
                value = service.value(self.path)
                self._answer(404, "") if value is None else self._answer(200, value)

            def _answer(self, status: int, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Silent: credential bodies are secrets."""

        self._serve(Handler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def environment(self) -> dict[str, str]:
        """Where botocore (and :mod:`runtime.ec2_lifecycle`) find the metadata service."""
        return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": self.endpoint,
                "AWS_EC2_METADATA_DISABLED": "false"}

    def value(self, path: str) -> str | None:
        """What ``GET path`` answers, or None (404)."""
        meta = "/latest/meta-data/"
        credentials = f"{meta}iam/security-credentials/"
        if path == credentials:
            return self.role_name
        if path == f"{credentials}{self.role_name}":
            return json.dumps({"Code": "Success", "Type": "AWS-HMAC",
                               "LastUpdated": datetime.now(timezone.utc).isoformat(),
                               **self.role.credentials()})
        if path == "/latest/dynamic/instance-identity/document":
            return json.dumps({"accountId": ACCOUNT_ID, "region": REGION,
                               "instanceId": self.instance_id})
        fixed = {"instance-id": self.instance_id, "placement/region": REGION,
                 "autoscaling/target-lifecycle-state": self.target_lifecycle_state}
        if self.auto_scaling_group:
            fixed["tags/instance/aws:autoscaling:groupName"] = self.auto_scaling_group
        return fixed.get(path[len(meta):]) if path.startswith(meta) else None

    def _check_ready(self) -> None:
        self.role.credentials()  # the role can be assumed
