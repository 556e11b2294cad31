"""The VPC the worker fleets run in when none is given.

Workers only make outbound HTTPS calls (SQS, SSM, STS, CloudWatch Logs, ECR,
Auto Scaling; DynamoDB for results; S3 for image layers), so the cheapest
network that works is private subnets in 2 AZs behind **one** NAT gateway, plus
the free gateway endpoints for S3 and DynamoDB:

- one NAT gateway: about 33 USD a month plus 0.045 USD per GB. Long polls and
  task messages are a few KB each, so the per-GB part is small; image pulls from
  ECR go through S3 (layers, via the gateway endpoint), not the NAT.
- isolated subnets with interface endpoints instead would need at least SQS,
  SSM, CloudWatch Logs, ECR API, ECR Docker and Auto Scaling (STS too, with
  ``sts.enabled``): 6 endpoints x 2 AZs x 0.01 USD an hour, about 88 USD a month,
  before traffic. Add them (``vpc.add_interface_endpoint``) when egress must not
  reach the internet at all.
- one NAT gateway is a single-AZ dependency for egress: if its AZ fails, the
  other AZ's workers cannot reach SQS until it is back. Pass ``nat_gateways=2``
  to remove that for another 33 USD a month.

The public subnets hold only the NAT gateway: nothing launched there gets a
public IP. Rejected traffic is recorded by a VPC flow log to an encrypted log
group (rejections are what an audit of a workers-only VPC asks about; accepted
flows would cost ingestion for nothing the kit reads).
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.encrypted_log_group import encrypted_log_group

AZ_COUNT = 2


class WorkerNetwork(Construct):
    """A VPC for Celery workers: the stack's first 2 AZs, private subnets with egress
    through NAT.

    Props (keyword-only):

    - ``encryption_key`` (default: a new customer-managed key with rotation on):
      encrypts the flow log group.
    - ``nat_gateways`` (default 1): see the module docstring for the trade-off.
    - ``flow_log_retention`` (default one year).

    Attributes: ``vpc``, ``flow_log``, ``flow_log_group``.
    """

    def __init__(self, scope: Construct, construct_id: str, *,
                 encryption_key: kms.IKey | None = None, nat_gateways: int = 1,
                 flow_log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR) -> None:
        super().__init__(scope, construct_id)
        key = encryption_key or kms.Key(self, "Key", enable_key_rotation=True,
                                        description="Encrypts the worker VPC's flow log")
        self.vpc = ec2.Vpc(
            self, "Vpc",
            max_azs=AZ_COUNT,
            nat_gateways=nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Nat", subnet_type=ec2.SubnetType.PUBLIC,
                                        cidr_mask=28, map_public_ip_on_launch=False),
                ec2.SubnetConfiguration(name="Workers",
                                        subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                                        cidr_mask=20),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDb": ec2.GatewayVpcEndpointOptions(
                    service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        self.flow_log_group = encrypted_log_group(self, "FlowLogs", encryption_key=key,
                                                  retention=flow_log_retention)
        self.flow_log = self.vpc.add_flow_log(
            "FlowLog", traffic_type=ec2.FlowLogTrafficType.REJECT,
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group))
