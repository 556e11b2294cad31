"""runtime.ops.output: tables, durations and the progress bar, as printed."""

from __future__ import annotations

import io

from runtime.ops.output import Progress, duration, progress_line, progress_wanted, table


def test_table_pads_columns_and_right_aligns_numbers():
    text = table(["QUEUE", "VISIBLE", "OLDEST"], [["celery", 3, "n/a"], ["reports", 120, None]])
    assert text.splitlines() == [
        "QUEUE    VISIBLE  OLDEST",
        "celery         3  n/a",
        "reports      120  -",
    ]


def test_durations_read_like_a_clock():
    assert [duration(s) for s in (None, 4.4, 65, 7380, 4 * 86400 + 3 * 3600)] == \
        ["n/a", "4s", "1m05s", "2h03m", "4d03h"]


def test_progress_line_shows_bar_count_rate_and_estimate():
    assert progress_line("redrive x", 10, 40, elapsed=2.0) == \
        "redrive x [######------------------]  10/40  5.0 msg/s  eta 6s"
    assert progress_line("redrive x", 40, 40, elapsed=4.0).endswith("40/40  10.0 msg/s  eta 0s")


def test_progress_line_without_a_total_has_no_bar_or_estimate():
    assert progress_line("redrive x", 7, None, elapsed=2.0) == "redrive x  7  3.5 msg/s"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_redraws_in_place_and_ends_with_one_newline():
    stream, clock = io.StringIO(), Clock()
    bar = Progress("redrive x", 4, enabled=True, stream=stream, clock=clock)
    for _ in range(4):
        clock.now += 0.5
        bar.advance()
    clock.now += 10  # the command's last calls: not part of the rate
    bar.close()
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    assert text.rstrip().endswith("4/4  2.0 msg/s  eta 0s")


def test_progress_throttles_redraws_but_always_draws_the_last_state():
    stream, clock = io.StringIO(), Clock()
    bar = Progress("redrive x", None, enabled=True, stream=stream, clock=clock)
    for _ in range(5):
        clock.now += 0.01
        bar.advance()
    assert stream.getvalue().count("\r") == 1
    bar.close()
    assert stream.getvalue().rstrip().endswith("redrive x  5  100.0 msg/s")


def test_progress_draws_nothing_when_disabled():
    stream = io.StringIO()
    bar = Progress("redrive x", 4, enabled=False, stream=stream)
    bar.advance()
    bar.close()
    assert stream.getvalue() == ""


def test_progress_only_on_a_terminal_unless_asked():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_wanted(False, Tty()) and progress_wanted(True, io.StringIO())
    assert not progress_wanted(False, io.StringIO())
