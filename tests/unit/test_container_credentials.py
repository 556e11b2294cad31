"""Made-up short-lived credentials for emulators that check no keys: how long each set
is accepted, when a new one is made, and the Expiration botocore is shown."""

from __future__ import annotations

from datetime import datetime

from local_aws.container_credentials import BOTOCORE_ADVISORY_WINDOW, MintedCredentials


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_accepted_for_its_lifetime_and_refused_after():
    clock = Clock()
    source = MintedCredentials(30, clock=clock)
    token = source.credentials()["Token"]
    clock.now += 30
    assert source.expired(token) is False
    clock.now += 0.5
    assert source.expired(token) is True


def test_tokens_it_did_not_make_are_not_judged():
    assert MintedCredentials(30).expired("a static key's token") is None


def test_the_same_set_is_served_until_refresh_before_is_left_then_a_new_one():
    clock = Clock()
    source = MintedCredentials(30, refresh_before=10, clock=clock)
    first = source.credentials()
    clock.now += 19.9
    assert source.credentials() == first
    clock.now += 0.1
    second = source.credentials()
    assert second["Token"] != first["Token"] and second["AccessKeyId"] != first["AccessKeyId"]
    assert source.minted == 2


def test_botocore_is_shown_an_expiration_that_opens_its_refresh_window_on_time():
    """botocore starts refreshing BOTOCORE_ADVISORY_WINDOW before the Expiration it is
    shown: that moment must be refresh_before seconds before the token really ends."""
    clock = Clock()
    source = MintedCredentials(30, refresh_before=10, clock=clock)
    shown = datetime.fromisoformat(source.credentials()["Expiration"]).timestamp()
    assert shown - BOTOCORE_ADVISORY_WINDOW == clock.now + 30 - 10
