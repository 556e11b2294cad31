"""One deployed stage (the real CDK CLI to moto with IAM enforcement) for all e2e tests."""

import pytest

from local_aws.stage import deploy_stage


@pytest.fixture(scope="session")
def stage(tmp_path_factory):
    deployed = deploy_stage(tmp_path_factory.mktemp("stage"))
    yield deployed
    deployed.moto.stop()
