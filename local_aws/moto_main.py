"""``python -m local_aws.moto_main``: moto's server, with two fidelity fixes.

moto 5.2 evaluates IAM policies against the request's resource ARN only for
SQS, IAM and STS; for every other service it asks about ``*``, which a
least-privilege statement naming a table or parameter never matches. Rather
than widen the kit's policies to suit the emulator, this launcher gives moto's
DynamoDB and SSM handlers the same ``_determine_resource`` hook its SQS handler
has, so enforcement stays exact.

moto's CloudFormation also drops a table's ``TimeToLiveSpecification``; on AWS
it is applied at creation, and Celery's result backend checks it at start-up.
The wrapped ``create_from_cloudformation_json`` applies it. Nothing else in moto
changes.
"""

from __future__ import annotations

import sys

from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.server import main
from moto.ssm.responses import SimpleSystemManagerResponse


def _dynamodb_resource(self: DynamoHandler) -> str:
    table = self._get_param("TableName")
    if not table:
        return "*"
    if table.startswith("arn:"):
        return table
    return f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"


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
DynamoHandler._determine_resource = _dynamodb_resource
SimpleSystemManagerResponse._determine_resource = _ssm_resource

if __name__ == "__main__":
    sys.exit(main())
