"""The emulator's admin user: the person running ``cdk deploy`` locally."""

from __future__ import annotations

import json
from dataclasses import dataclass

import boto3

from local_aws.moto_server import REGION

OPERATOR_USER = "kit-operator"
ADMIN_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass(frozen=True)
class Operator:
    arn: str
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"Operator(arn={self.arn!r})"

    def session(self) -> boto3.Session:
        return boto3.Session(aws_access_key_id=self.access_key_id,
                             aws_secret_access_key=self.secret_access_key, region_name=REGION)

    def environment(self, endpoint_url: str) -> dict[str, str]:
        """Variables for a child process (the CDK CLI) acting as this operator."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": endpoint_url}


def create_operator(endpoint_url: str) -> Operator:
    """Three calls, made inside moto's unauthenticated window (``INITIAL_NO_AUTH_ACTION_COUNT=3``)."""
    iam = boto3.client("iam", endpoint_url=endpoint_url, region_name=REGION,
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    user = iam.create_user(UserName=OPERATOR_USER)["User"]
    iam.put_user_policy(UserName=OPERATOR_USER, PolicyName="admin", PolicyDocument=ADMIN_POLICY)
    key = iam.create_access_key(UserName=OPERATOR_USER)["AccessKey"]
    return Operator(arn=user["Arn"], access_key_id=key["AccessKeyId"],
                    secret_access_key=key["SecretAccessKey"])
