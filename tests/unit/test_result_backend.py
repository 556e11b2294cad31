"""runtime.result_backend: the rendered setting resolves to the kit's DynamoDB backend,
which retries what may pass and, when a result cannot be stored, logs it instead of
raising (the task ran; a real worker on moto: tests/integration/test_result_backend_faults.py)."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import (CredentialRetrievalError, EndpointConnectionError,
                                 NoCredentialsError, ReadTimeoutError)
from celery import Celery
from kombu.exceptions import EncodeError

from runtime.celery_settings import STOCK_TRANSPORT, celery_settings
from runtime.config import parse_document
from runtime.result_backend import DynamoDBBackend, dynamodb_table, safe_to_retry
from tests.documents import document
from tests.unit.fake_aws import Fake, aws_error


def app_for(**kwargs) -> Celery:
    app = Celery("results")
    app.conf.update(celery_settings(parse_document(document(), "doc.json"), **kwargs))
    return app


def backend_with(put_item) -> DynamoDBBackend:
    backend = app_for().backend
    backend._client = Fake(get_item={}, put_item=put_item)
    backend._sleep = lambda _seconds: None
    return backend


def test_the_rendered_setting_is_the_kit_backend_on_the_table_with_retries():
    backend = app_for().backend
    assert type(backend) is DynamoDBBackend
    assert (backend.aws_region, backend.table_name, backend.time_to_live_seconds) == \
        ("us-east-1", "results-table", 86400)
    assert backend.always_retry is True
    assert backend.max_retries == 6


def test_the_stock_rendering_keeps_celery_s_own_backend():
    backend = app_for(transport=STOCK_TRANSPORT).backend
    assert type(backend).__module__ == "celery.backends.dynamodb"
    assert backend.always_retry is False


@pytest.mark.parametrize("error, retry", [
    (aws_error("ProvisionedThroughputExceededException", 400, "PutItem"), True),
    (aws_error("ThrottlingException", 400, "PutItem"), True),
    (aws_error("InternalServerError", 500, "PutItem"), True),
    (aws_error("ExpiredTokenException", 400, "PutItem"), True),
    (EndpointConnectionError(endpoint_url="http://x"), True),
    (ReadTimeoutError(endpoint_url="http://x"), True),
    (NoCredentialsError(), True),
    (CredentialRetrievalError(provider="container-role", error_msg="reset"), True),
    (aws_error("AccessDeniedException", 400, "PutItem"), False),
    (aws_error("ValidationException", 400, "PutItem"), False),
    (aws_error("ResourceNotFoundException", 400, "PutItem"), False),
    (EncodeError("not JSON"), False),
])
def test_what_is_retried(error, retry):
    assert safe_to_retry(error) is retry


def test_a_throttled_store_is_tried_again_and_lands():
    throttled = aws_error("ProvisionedThroughputExceededException", 400, "PutItem")
    backend = backend_with([throttled, throttled, {}])
    backend.store_result("t-1", 42, "SUCCESS")
    assert len(backend._client.called("put_item")) == 3


@pytest.mark.parametrize("error, tries", [
    (aws_error("ProvisionedThroughputExceededException", 400, "PutItem"), 7),
    (aws_error("AccessDeniedException", 400, "PutItem", "not authorized"), 1),
])
def test_a_result_that_cannot_be_stored_is_logged_not_raised(error, tries, caplog):
    backend = backend_with([error])
    with caplog.at_level(logging.ERROR, logger="runtime.result_backend"):
        backend.store_result("t-2", 42, "SUCCESS")
    assert len(backend._client.called("put_item")) == tries
    code = error.response["Error"]["Code"]
    assert caplog.messages == [
        f"task t-2 ran, but its SUCCESS result could not be stored in DynamoDB table "
        f"results-table: {code} ({error.response['Error']['Message']}); the task is not run "
        f"again and its result is lost"]


def test_a_result_that_does_not_encode_is_still_celery_s_to_handle():
    backend = backend_with([{}])
    with pytest.raises(EncodeError):
        backend.store_result("t-3", object(), "SUCCESS")  # JSON cannot carry it


def test_the_table_is_checked_again_after_a_failed_check(monkeypatch):
    backend = app_for().backend
    checks = iter([EndpointConnectionError(endpoint_url="http://x"), None])

    def check():
        error = next(checks)
        if error is not None:
            raise error
    monkeypatch.setattr(backend, "_get_or_create_table", check)
    monkeypatch.setattr(backend, "_has_ttl", lambda: None)
    with pytest.raises(EndpointConnectionError):
        backend.client
    assert backend._client is None
    assert backend.client is not None


@pytest.mark.parametrize("setting, table", [
    ("dynamodb://@us-east-1/results", ("us-east-1", "results")),
    ("runtime.result_backend:DynamoDBBackend+dynamodb://@eu-west-1/r?ttl_seconds=60",
     ("eu-west-1", "r")),
    ("redis://localhost/0", None),
    (None, None),
])
def test_the_table_of_a_result_backend_setting(setting, table):
    assert dynamodb_table(setting) == table
