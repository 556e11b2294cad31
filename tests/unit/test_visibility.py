"""runtime.visibility: when a held message is extended, and by how much; when a task
whose ETA is too far away is parked instead, and for how long."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from runtime.visibility import (MAX_DELAY_SECONDS, MAX_ETA_HOLD_LIMIT, MAX_HOLD_SECONDS, Held,
                                eta_of, extension, extension_due_at, park_delay)


def held(received_at: float = 1000.0, window: int = 60) -> Held:
    return Held("m1", received_at, received_at + window)


def test_an_extension_is_due_when_half_the_window_is_left():
    assert extension_due_at(held(window=60), 60) == 1000.0 + 30


def test_each_extension_is_the_queue_s_visibility_timeout():
    assert extension(held(), 60, now=1030.0) == 60


def test_extensions_never_pass_the_twelve_hour_cap():
    h = held(window=43_200)
    assert extension(h, 43_200, now=1000.0 + MAX_HOLD_SECONDS - 100) <= 100
    assert extension(h, 43_200, now=1000.0 + MAX_HOLD_SECONDS) == 0


@pytest.mark.parametrize("elapsed", [MAX_HOLD_SECONDS - 90, MAX_HOLD_SECONDS - 45.5,
                                     MAX_HOLD_SECONDS - 2])
def test_the_last_extension_leaves_room_for_sqs_receipt_before_the_hold(elapsed):
    """Issue 18 item 10: SQS counts the cap from its receipt, which comes seconds before
    the lane's hold; an extension past SQS's cap is refused, so the last one must end
    well before the cap as counted here (it left 1 s)."""
    h = held(window=60)
    now = 1000.0 + elapsed
    granted = extension(h, 60, now)
    assert granted == 0 or now + granted <= 1000.0 + MAX_HOLD_SECONDS - 30


# far ETAs: parked, not held -----------------------------------------------------------------
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def in_seconds(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize("eta, delay", [
    (None, 0),  # not an ETA task
    (in_seconds(-5), 0),  # overdue
    (in_seconds(100), 0),  # well within the limit
    (in_seconds(3600), 0),  # exactly at the limit: held
    (in_seconds(3600.2), 1),  # just beyond: rounded up, so it comes back within the limit
    (in_seconds(3600 + 300), 300),  # what is beyond the limit
    (in_seconds(3 * 86_400), MAX_DELAY_SECONDS),  # days away: SQS's longest delay
])
def test_a_message_is_parked_for_what_its_eta_is_beyond_the_hold_limit(eta, delay):
    assert park_delay(eta, NOW, hold_limit=3600) == delay


def test_a_parked_message_comes_back_within_the_limit_and_is_then_held():
    eta, now = in_seconds(5000), NOW
    while (delay := park_delay(eta, now, hold_limit=3600)):
        now += timedelta(seconds=delay)
    assert timedelta(0) < eta - now <= timedelta(seconds=3600)


def test_the_default_hold_limit_leaves_an_hour_of_the_twelve_hour_cap():
    assert MAX_ETA_HOLD_LIMIT == 11 * 3600 == MAX_HOLD_SECONDS - 3600


@pytest.mark.parametrize("headers, eta", [
    ({"eta": "2026-01-01T13:00:00+00:00"}, datetime(2026, 1, 1, 13, tzinfo=timezone.utc)),
    ({"eta": "2026-01-01T14:00:00+01:00"}, datetime(2026, 1, 1, 13, tzinfo=timezone.utc)),
    ({"eta": "2026-01-01T13:00:00"}, datetime(2026, 1, 1, 13, tzinfo=timezone.utc)),  # naive: UTC
    ({"eta": None}, None),
    ({}, None),
    ({"eta": "tomorrow"}, None),  # Celery reports it; the transport delivers it
])
def test_the_eta_is_read_from_celery_s_headers(headers, eta):
    assert eta_of(headers) == eta
