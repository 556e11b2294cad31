"""``python -m local_aws.moto_main --port-file PATH``: moto's server on 127.0.0.1, on a
port of its own (it binds port 0 and writes ``PORT\n`` to PATH once listening), with
fidelity fixes.

moto 5.2 evaluates IAM policies against the request's resource ARN only for
SQS, IAM and STS; for every other service it asks about ``*``, which a
least-privilege statement naming a table or parameter never matches. Rather
than widen the kit's policies to suit the emulator, this launcher gives moto's
DynamoDB and SSM handlers the same ``_determine_resource`` hook its SQS handler
has (a request naming an index is checked against the index's ARN, as on AWS), so
enforcement stays exact. moto evaluates no condition keys but ``sts:ExternalId``:
DynamoDB's ``dynamodb:LeadingKeys`` and ``dynamodb:Attributes`` are not checked here.

moto's CloudFormation also drops a table's ``TimeToLiveSpecification``; on AWS
it is applied at creation, and Celery's result backend checks it at start-up.
The wrapped ``create_from_cloudformation_json`` applies it.

moto never rejects an expired session token. Here one that has expired gets
``ExpiredToken`` (HTTP 400), as on AWS, and ``KIT_MOTO_STS_TIME_SCALE`` (default 1)
shortens every STS session by that factor, so a test can watch a worker live
through several token lifetimes in a minute.

moto authorizes SQS batch calls as ``sqs:DeleteMessageBatch`` and the like; AWS
authorizes them as the single-message action (``sqs:DeleteMessage``,
``sqs:ChangeMessageVisibility``, ``sqs:SendMessage``), which is all a
least-privilege policy grants. The request's action is mapped the AWS way.
Nothing else in moto changes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
from pathlib import Path

from moto.core.exceptions import _RESTError
from moto.dynamodb.models import dynamodb_backends
from moto.iam.access_control import AssumedRoleAccessKey, IAMRequestBase
from moto.sts.models import STSBackend, sts_backends
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.ssm.responses import SimpleSystemManagerResponse
from werkzeug.serving import make_server


def _dynamodb_resource(self: DynamoHandler) -> str:
    table = self._get_param("TableName")
    if not table:
        return "*"
    arn = table if table.startswith("arn:") else \
        f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"
    index = self._get_param("IndexName")
    # AWS authorizes a query of an index against the index's ARN, not the table's.
    return f"{arn}/index/{index}" if index else arn


def _ssm_resource(self: SimpleSystemManagerResponse) -> str:
    name = self._get_param("Name")
    if not name:
        return "*"
    return f"arn:aws:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"


_create_table_from_cloudformation = Table.create_from_cloudformation_json


def _create_table_with_ttl(resource_name, cloudformation_json, account_id, region_name, **kw):
    table = _create_table_from_cloudformation(resource_name, cloudformation_json, account_id,
                                              region_name, **kw)
    ttl = cloudformation_json["Properties"].get("TimeToLiveSpecification")
    if ttl:
        dynamodb_backends[account_id][region_name].update_time_to_live(table.name, ttl)
    return table


Table.create_from_cloudformation_json = staticmethod(_create_table_with_ttl)

_STS_TIME_SCALE = float(os.environ.get("KIT_MOTO_STS_TIME_SCALE", "1"))
_assume_role = STSBackend.assume_role
_resolve_assumed_key = AssumedRoleAccessKey.__init__


class ExpiredToken(_RESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("ExpiredToken", "The security token included in the request is expired")


def _assume_role_scaled(self, *args, duration: int, **kwargs):
    return _assume_role(self, *args, duration=max(1, round(duration * _STS_TIME_SCALE)), **kwargs)


def _resolve_unexpired(self, account_id, partition, access_key_id, headers):
    _resolve_assumed_key(self, account_id, partition, access_key_id, headers)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for role in sts_backends[account_id][partition].assumed_roles:
        if role.access_key_id == access_key_id and role.expiration.replace(tzinfo=None) <= now:
            raise ExpiredToken()


_BATCH_ACTIONS = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage",
                  "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
                  "sqs:SendMessageBatch": "sqs:SendMessage"}
_iam_request_init = IAMRequestBase.__init__


def _iam_request_with_aws_batch_actions(self, *args, **kwargs):
    _iam_request_init(self, *args, **kwargs)
    self._action = _BATCH_ACTIONS.get(self._action, self._action)


IAMRequestBase.__init__ = _iam_request_with_aws_batch_actions
STSBackend.assume_role = _assume_role_scaled
AssumedRoleAccessKey.__init__ = _resolve_unexpired
DynamoHandler._determine_resource = _dynamodb_resource
SimpleSystemManagerResponse._determine_resource = _ssm_resource



def serve(port_file: Path) -> None:
    """moto's ``moto_server`` as its ``main`` runs it, on port 0: the port is only known
    once bound, so moto is told it (``MOTO_PORT``, for the URLs it makes) before serving."""
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    os.environ["MOTO_PORT"] = str(server.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port_file.write_text(f"{server.port}\n")
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m local_aws.moto_main")
    parser.add_argument("--port-file", type=Path, required=True)
    serve(parser.parse_args().port_file)
