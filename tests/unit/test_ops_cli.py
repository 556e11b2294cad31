"""runtime.ops: every command's --help, exit statuses of usage errors, and the parts of
status and doctor that talk to AWS, against stand-in clients."""

from __future__ import annotations

import datetime
import json

import pytest

from runtime.ops import permissions, status
from runtime.ops.__main__ import main
from tests.documents import document
from tests.unit.fake_aws import Fake, FakeAws, aws_error

COMMANDS = [["status"], ["doctor"], ["dlq"], ["dlq", "peek"], ["dlq", "redrive"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: python -m runtime.ops" in capsys.readouterr().out


def test_the_help_of_peek_and_redrive_says_how_nothing_is_consumed_or_doubled(capsys):
    with pytest.raises(SystemExit):
        main(["dlq", "peek", "--help"])
    assert "ChangeMessageVisibilityBatch" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["dlq", "redrive", "--help"])
    text = capsys.readouterr().out
    assert "journal" in text and "--uncertain" in text and "StartMessageMoveTask" in text


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "worker-config.json"
    path.write_text(json.dumps(document()))
    return str(path)


@pytest.mark.parametrize("argv, says", [
    (["dlq", "peek", "nope"], "unknown queue 'nope'"),
    (["dlq", "redrive", "reports", "--method", "move-task", "--count", "3"],
     "--count needs --method copy"),
    (["dlq", "redrive", "reports", "--method", "move-task", "--rate", "900"],
     "--rate must be at most 500"),
])
def test_usage_errors_exit_2_with_one_line(argv, says, config_file, capsys):
    assert main([*argv, "--config", config_file]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and err.startswith("celery-sqs-kit: ")


def test_a_missing_config_exits_2_naming_the_file(tmp_path, capsys):
    assert main(["status", "--config", str(tmp_path / "outputs.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outputs.json: file not found" in err


def test_argument_errors_exit_2():
    with pytest.raises(SystemExit) as exit_:
        main(["dlq", "peek", "reports", "--max", "0"])
    assert exit_.value.code == 2


def denied(operation: str):
    return aws_error("AccessDenied", 403, operation, "no")


def test_oldest_age_is_cloudwatchs_newest_datapoint():
    now = datetime.datetime.now(datetime.timezone.utc)
    cloudwatch = Fake(get_metric_statistics={"Datapoints": [
        {"Timestamp": now - datetime.timedelta(minutes=3), "Maximum": 50.0},
        {"Timestamp": now - datetime.timedelta(minutes=1), "Maximum": 170.0}]})
    age, source = status.oldest_age(FakeAws(cloudwatch=cloudwatch), "reports")
    assert age == 170.0 and source.startswith("CloudWatch at ")
    [(_, request)] = cloudwatch.calls
    assert request["Namespace"] == "AWS/SQS"
    assert request["MetricName"] == "ApproximateAgeOfOldestMessage"
    assert request["Dimensions"] == [{"Name": "QueueName", "Value": "reports"}]


def test_oldest_age_is_na_without_a_datapoint_or_without_cloudwatch():
    empty = FakeAws(cloudwatch=Fake(get_metric_statistics={"Datapoints": []}))
    assert status.oldest_age(empty, "q") == (None, "n/a: no CloudWatch datapoint in the "
                                                   "last 15 minutes")
    refused = FakeAws(cloudwatch=Fake(get_metric_statistics=denied("GetMetricStatistics")))
    assert status.oldest_age(refused, "q") == (
        None, "n/a: CloudWatch GetMetricStatistics failed (AccessDenied)")


def test_an_assumed_role_is_simulated_as_its_role_with_its_path():
    aws = FakeAws(
        sts=Fake(get_caller_identity={
            "Arn": "arn:aws:sts::123456789012:assumed-role/Ops/alice"}),
        iam=Fake(get_role={"Role": {"Arn": "arn:aws:iam::123456789012:role/team/Ops"}}))
    caller = permissions.identify(aws)
    assert caller.principal == "arn:aws:iam::123456789012:role/team/Ops"


def test_a_user_is_simulated_as_that_user_and_the_root_is_not_simulated():
    user = FakeAws(sts=Fake(get_caller_identity={"Arn": "arn:aws:iam::1:user/ops/bob"}))
    assert permissions.identify(user).principal == "arn:aws:iam::1:user/ops/bob"
    root = permissions.identify(FakeAws(sts=Fake(get_caller_identity={
        "Arn": "arn:aws:iam::1:root"})))
    assert root.principal is None and "not an IAM user or role" in root.problem


def test_the_simulator_names_denied_actions_and_stops_asking_once_iam_fails():
    results = {"EvaluationResults": [
        {"EvalActionName": "sqs:ReceiveMessage", "EvalDecision": "allowed"},
        {"EvalActionName": "sqs:DeleteMessage", "EvalDecision": "implicitDeny"}]}
    caller = permissions.Caller("arn", "arn:aws:iam::1:role/Ops", None)
    simulator = permissions.Simulator(FakeAws(iam=Fake(simulate_principal_policy=results)),
                                      caller)
    assert simulator.decide(permissions.RECEIVE, "arn:q") == "denied: sqs:DeleteMessage"
    iam = Fake(simulate_principal_policy=denied("SimulatePrincipalPolicy"))
    simulator = permissions.Simulator(FakeAws(iam=iam), caller)
    assert simulator.decide(permissions.SEND, "arn:q") == \
        "not checked: iam:SimulatePrincipalPolicy failed (AccessDenied)"
    assert simulator.decide(permissions.SEND, "arn:q2").startswith("not checked")
    assert len(iam.calls) == 1


def test_a_queues_kms_key_arn_for_simulation():
    queue_arn = "arn:aws:sqs:eu-west-1:1:reports"
    assert permissions.key_arn("abcd-1234", queue_arn) == "arn:aws:kms:eu-west-1:1:key/abcd-1234"
    assert permissions.key_arn("arn:aws:kms:eu-west-1:1:key/k", queue_arn) == \
        "arn:aws:kms:eu-west-1:1:key/k"
    assert permissions.key_arn("alias/aws/sqs", queue_arn) is None
    assert permissions.key_arn(None, queue_arn) is None


def test_aws_failures_become_one_line_naming_the_fix():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from runtime.errors import CredentialsError, QueueAccessDenied, TransportError
    from runtime.ops.aws import call

    def raising(error):
        def method(**_kwargs):
            raise error
        return method

    with pytest.raises(QueueAccessDenied) as denied_:
        call("reports", "ReceiveMessage", raising(denied("ReceiveMessage")))
    assert str(denied_.value) == (
        "ReceiveMessage on queue 'reports' failed: AccessDenied; the caller may not do this: "
        "grant it sqs:ReceiveMessage on it, or run with credentials that may (AWS_PROFILE, "
        "or an operator role)")
    with pytest.raises(CredentialsError, match="no AWS credentials found"):
        call("reports", "GetQueueAttributes", raising(NoCredentialsError()))
    with pytest.raises(TransportError, match="cannot reach AWS"):
        call("reports", "GetQueueAttributes",
             raising(EndpointConnectionError(endpoint_url="http://x")))


def test_the_cli_imports_no_aws_cdk():
    import subprocess
    import sys

    code = ("import sys, runtime.ops.__main__; "
            "sys.exit(any(m == 'aws_cdk' or m.startswith('aws_cdk.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
