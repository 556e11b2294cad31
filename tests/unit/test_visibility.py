"""runtime.visibility: when a held message is extended, and by how much."""

from __future__ import annotations

from runtime.visibility import MAX_HOLD_SECONDS, Held, extension, extension_due_at


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
