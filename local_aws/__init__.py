"""Local stand-ins for AWS, started by the kit's own code on loopback.

Used by the demo and the test suite, never by workers in production:

- :mod:`local_aws.moto_server`: ``moto_server`` with IAM enforcement.
- :mod:`local_aws.operator`: the admin user made in the emulator's
  unauthenticated window, whose keys drive the CDK CLI.
- :mod:`local_aws.container_credentials`: a loopback ECS container-credentials
  endpoint serving a deployed role's credentials, so a worker authenticates
  through boto3's default chain exactly as it does on ECS.
"""
