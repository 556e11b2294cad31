"""runtime.celery_settings: the worker configuration becomes the right Celery settings."""

from __future__ import annotations

from runtime.celery_settings import BUNDLED_TRANSPORT, STOCK_TRANSPORT, celery_settings
from runtime.config import parse_document
from tests.documents import document


def settings(mutate=lambda d: None, **kwargs):
    doc = document()
    mutate(doc)
    return celery_settings(parse_document(doc, "doc.json"), **kwargs)


def test_broker_url_carries_no_credentials():
    assert settings()["broker_url"] == "sqs://"


def test_every_queue_is_predefined_with_its_url_and_backoff():
    predefined = settings()["broker_transport_options"]["predefined_queues"]
    assert set(predefined) == {"celery", "reports", "orders.fifo"}
    assert predefined["celery"] == {
        "url": "https://sqs.us-east-1.amazonaws.com/123456789012/celery",
        "visibility_timeout": 1800,
        "max_message_bytes": 262_144,
        "dead_letter_queue": "https://sqs.us-east-1.amazonaws.com/123456789012/celery-dlq",
        "backoff_policy": {1: 10, 2: 20},
        "backoff_tasks": ["app.tasks.flaky"],
    }
    assert "backoff_policy" not in predefined["reports"]


def test_each_queue_carries_its_own_largest_message():
    def larger(doc):
        doc["queues"]["reports"]["max_message_bytes"] = 1_048_576
    predefined = settings(larger)["broker_transport_options"]["predefined_queues"]
    assert predefined["reports"]["max_message_bytes"] == 1_048_576
    assert predefined["celery"]["max_message_bytes"] == 262_144


def test_long_polls_with_no_extra_client_sleep():
    options = settings()["broker_transport_options"]
    assert options["wait_time_seconds"] == 20
    assert options["polling_interval"] == 0
    assert options["region"] == "us-east-1"


def test_short_polling_keeps_a_polling_interval():
    def short(doc):
        for q in doc["queues"].values():
            q["wait_time_seconds"] = 0
    assert settings(short)["broker_transport_options"]["polling_interval"] == 1


def test_tasks_are_acked_late_and_requeued_when_a_worker_dies():
    s = settings()
    assert s["task_acks_late"] is True
    assert s["task_reject_on_worker_lost"] is True


def test_stock_prefetches_one_and_bundled_a_full_receive_batch():
    assert settings(transport=STOCK_TRANSPORT)["worker_prefetch_multiplier"] == 1
    assert settings()["worker_prefetch_multiplier"] == 10


def test_the_transport_is_the_documents_unless_given():
    assert settings()["broker_transport"] == BUNDLED_TRANSPORT  # no transport: bundled
    stock = settings(lambda d: d.update(transport="stock"))
    assert (stock["broker_transport"], stock["worker_prefetch_multiplier"]) == (STOCK_TRANSPORT, 1)
    assert settings(lambda d: d.update(transport="stock"),
                    transport=BUNDLED_TRANSPORT)["broker_transport"] == BUNDLED_TRANSPORT


def test_time_limit_is_the_smallest_queue_limit():
    assert settings()["task_time_limit"] == 900


def test_remote_control_and_events_are_off():
    s = settings()
    assert s["worker_enable_remote_control"] is False
    assert s["worker_send_task_events"] is False
    assert s["task_send_sent_event"] is False


def test_queues_routes_and_default():
    s = settings()
    assert s["task_default_queue"] == "celery"
    assert [q.name for q in s["task_queues"]] == ["celery", "reports", "orders.fifo"]
    assert all(q.no_declare for q in s["task_queues"])
    assert s["task_routes"] == {"app.tasks.report*": {"queue": "reports"}}


def test_result_backend_is_the_dynamodb_table_through_the_kit_s_backend_when_bundled():
    bundled = settings()
    assert bundled["result_backend"] == ("runtime.result_backend:DynamoDBBackend+"
                                         "dynamodb://@us-east-1/results-table?ttl_seconds=86400")
    assert bundled["result_backend_always_retry"] is True
    stock = settings(transport=STOCK_TRANSPORT)
    assert stock["result_backend"] == "dynamodb://@us-east-1/results-table?ttl_seconds=86400"
    assert "result_backend_always_retry" not in stock


def test_without_result_table_results_are_ignored():
    s = settings(lambda d: d.pop("result_backend"))
    assert "result_backend" not in s
    assert s["task_ignore_result"] is True


def test_revocations_table_is_named_for_the_bundled_transport_only():
    assert settings()["kit_revocations"] == {"region": "us-east-1", "table": "revocations-table"}
    assert "kit_revocations" not in settings(transport=STOCK_TRANSPORT)
    assert "kit_revocations" not in settings(lambda d: d.pop("revocations"))


def test_sts_role_becomes_transport_options():
    def with_sts(doc):
        doc["sts"] = {"role_arn": "arn:aws:iam::123456789012:role/broker", "token_timeout": 1800,
                      "external_id": "fleet-1"}
    options = settings(with_sts)["broker_transport_options"]
    assert options["sts_role_arn"] == "arn:aws:iam::123456789012:role/broker"
    assert options["sts_token_timeout"] == 1800
    assert options["sts_external_id"] == "fleet-1"


def test_sts_without_a_shared_role_sets_no_global_role():
    def per_fleet(doc):
        doc["sts"] = {"role_arn": None, "token_timeout": 1800}
        doc["queues"]["reports"]["sts_role_arn"] = "arn:aws:iam::123456789012:role/ec2-broker"
    options = settings(per_fleet)["broker_transport_options"]
    assert "sts_role_arn" not in options and options["sts_token_timeout"] == 1800
    assert options["predefined_queues"]["reports"]["sts_role_arn"].endswith("/ec2-broker")


def test_per_queue_role_is_passed_per_queue():
    def dedicated(doc):
        doc["queues"]["reports"]["sts_role_arn"] = "arn:aws:iam::123456789012:role/reports"
    predefined = settings(dedicated)["broker_transport_options"]["predefined_queues"]
    assert predefined["reports"]["sts_role_arn"] == "arn:aws:iam::123456789012:role/reports"
    assert "sts_role_arn" not in predefined["celery"]


def test_endpoint_url_goes_into_the_broker_url_with_its_scheme():
    s = settings(lambda d: d.update(endpoint_url="https://vpce-1.sqs.us-east-1.vpce.amazonaws.com/"))
    assert s["broker_url"] == "sqs://vpce-1.sqs.us-east-1.vpce.amazonaws.com"
    assert s["broker_transport_options"]["is_secure"] is True


def test_transport_is_one_setting():
    assert settings()["broker_transport"] == BUNDLED_TRANSPORT  # the default
    assert settings(transport=STOCK_TRANSPORT)["broker_transport"] == STOCK_TRANSPORT
