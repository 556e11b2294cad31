"""runtime.revocation: what it says when the app has no DynamoDB result backend (the
round trip through the table runs in tests/integration/test_revocation.py)."""

from __future__ import annotations

import pytest

from runtime.errors import ConfigError
from runtime.revocation import revoked_now


def test_without_the_dynamodb_backend_the_error_names_its_scheme_not_its_url():
    class App:
        conf = type("Conf", (), {"result_backend": "redis://:s3cret@cache:6379/0"})()
    with pytest.raises(ConfigError) as raised:
        revoked_now(App())
    assert "needs the DynamoDB result backend, got a 'redis' one" in str(raised.value)
    assert "s3cret" not in str(raised.value)
