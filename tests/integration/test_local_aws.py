"""The local stand-ins themselves: IAM enforcement, the operator, and the moto
shim's resource-level checks for DynamoDB (stock moto asks about ``*``)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from local_aws.moto_server import REGION, MotoServer
from local_aws.operator import create_operator

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory):
    with MotoServer(enforce_iam=True,
                    log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        operator = create_operator(server.endpoint_url)
        yield server, operator


def client(service, endpoint, **creds):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, **creds)


def test_unknown_keys_are_refused_once_enforcement_starts(enforcing):
    server, _operator = enforcing
    stranger = client("sqs", server.endpoint_url, aws_access_key_id="AKIDSTRANGER",
                      aws_secret_access_key="nope")
    with pytest.raises(ClientError):
        stranger.list_queues()


def test_operator_repr_hides_its_secret(enforcing):
    _server, operator = enforcing
    assert operator.secret_access_key not in repr(operator)
    assert operator.access_key_id not in repr(operator)


def test_dynamodb_grants_are_checked_per_table(enforcing):
    server, operator = enforcing
    session = operator.session()
    ddb = session.client("dynamodb", endpoint_url=server.endpoint_url)
    for name in ("granted", "other"):
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    iam = session.client("iam", endpoint_url=server.endpoint_url)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "ecs-tasks.amazonaws.com", "AWS": operator.arn}}]}
    role = iam.create_role(RoleName="table-reader",
                           AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName="table-reader", PolicyName="one-table", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "dynamodb:DescribeTable",
            "Resource": f"arn:aws:dynamodb:{REGION}:123456789012:table/granted"}]}))
    c = session.client("sts", endpoint_url=server.endpoint_url).assume_role(
        RoleArn=role["Arn"], RoleSessionName="reader")["Credentials"]
    reader = client("dynamodb", server.endpoint_url, aws_access_key_id=c["AccessKeyId"],
                    aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
    assert reader.describe_table(TableName="granted")["Table"]["TableName"] == "granted"
    with pytest.raises(ClientError) as caught:
        reader.describe_table(TableName="other")
    assert "not authorized to perform: dynamodb:DescribeTable" in str(caught.value)
