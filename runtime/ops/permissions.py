"""Who is calling, and may it send to and receive from a queue?

Sending or receiving to find out would move real messages, so the answer comes
from IAM's policy simulator (``iam:SimulatePrincipalPolicy``) for the caller's
user or role, when the caller is one and IAM answers; otherwise each answer is
``not checked`` with the reason (an emulator without IAM, a caller that may not
simulate, the account root). The simulation evaluates the principal's own
policies: queue policies and KMS key policies are not read, so ``allowed`` means
"granted by the role", and a queue policy can still deny.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from botocore.exceptions import NoCredentialsError

from runtime.errors import CredentialsError
from runtime.ops.aws import AWS_FAILURES, NO_CREDENTIALS, Aws
from runtime.sqs_errors import error_code

SEND = ("sqs:SendMessage",)
RECEIVE = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
SEND_KEY = ("kms:GenerateDataKey",)
RECEIVE_KEY = ("kms:Decrypt",)


@dataclass(frozen=True)
class Caller:
    arn: str | None
    """As STS names it (an assumed role's session ARN), or ``None`` if STS did not say."""
    principal: str | None
    """The IAM user or role to simulate, or ``None`` when there is none."""
    problem: str | None
    """Why permissions cannot be simulated."""


def identify(aws: Aws) -> Caller:
    try:
        arn = aws.once("sts").get_caller_identity()["Arn"]
    except NoCredentialsError:
        raise CredentialsError("*", "GetCallerIdentity", "NoCredentials",
                               hint=NO_CREDENTIALS) from None
    except AWS_FAILURES as error:
        return Caller(None, None, f"sts:GetCallerIdentity failed ({error_code(error)})")
    _, partition, _, _, account, resource = arn.split(":", 5)
    kind, _, rest = resource.partition("/")
    if kind == "user":
        return Caller(arn, f"arn:{partition}:iam::{account}:user/{rest}", None)
    if kind == "assumed-role":
        role = rest.split("/", 1)[0]
        return Caller(arn, _role_arn(aws, role, f"arn:{partition}:iam::{account}:role/{role}"),
                      None)
    who = "the account root" if kind == "root" else f"a {kind}"
    return Caller(arn, None, f"the caller is {who}, not an IAM user or role")


def _role_arn(aws: Aws, role: str, without_path: str) -> str:
    """The role's ARN with its path (iam:GetRole), else the ARN for a role at ``/``."""
    try:
        return aws.once("iam").get_role(RoleName=role)["Role"]["Arn"]
    except AWS_FAILURES:
        return without_path


class Simulator:
    """``decide(actions, resource)``: ``allowed``, ``denied: ACTION``, or ``not checked:
    WHY``. After one simulation fails, the rest say why without asking again."""

    def __init__(self, aws: Aws, caller: Caller) -> None:
        self._aws = aws
        self.principal = caller.principal
        self.problem = caller.problem

    def decide(self, actions: Sequence[str], resource: str) -> str:
        if self.problem is not None or self.principal is None:
            return f"not checked: {self.problem}"
        try:
            results = self._aws.once("iam").simulate_principal_policy(
                PolicySourceArn=self.principal, ActionNames=list(actions),
                ResourceArns=[resource])["EvaluationResults"]
        except AWS_FAILURES as error:
            self.problem = f"iam:SimulatePrincipalPolicy failed ({error_code(error)})"
            return f"not checked: {self.problem}"
        denied = [r["EvalActionName"] for r in results if r["EvalDecision"] != "allowed"]
        return f"denied: {', '.join(denied)}" if denied else "allowed"


def key_arn(key_id: str | None, queue_arn: str) -> str | None:
    """The ARN of a queue's KMS key (``KmsMasterKeyId`` may be an ARN or a bare key id);
    ``None`` for no key or an alias, which the simulator cannot resolve."""
    if not key_id or key_id.startswith("alias/") or ":alias/" in key_id:
        return None
    if key_id.startswith("arn:"):
        return key_id
    _, partition, _, region, account, _ = queue_arn.split(":", 5)
    return f"arn:{partition}:kms:{region}:{account}:key/{key_id}"
