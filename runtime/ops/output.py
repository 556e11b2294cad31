"""What the operator commands print: tables for people, JSON for scripts, and a
progress bar on stderr for long work.

Tables and JSON go to stdout and nothing else does, so ``--json | jq`` always
parses; notes, errors and the progress bar go to stderr.

Every table cell goes through :func:`printable`: task names, ids and ``kit_*`` values
come from messages anyone with send access wrote, and a terminal obeys the control
characters in them (an OSC 52 sequence writes the operator's clipboard, a carriage
return or line erase hides what was printed, a newline fakes a row). They are shown
escaped instead (``\\x1b``, ``\\n``, ``\\u202e``). JSON escapes them itself.
"""

from __future__ import annotations

import json
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TextIO

BAR_WIDTH = 24
REDRAW_EVERY = 0.1
"""Seconds between redraws: often enough to look live, rarely enough to cost nothing."""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned, text left-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(row[i], int) for row in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _cell(value: object) -> str:
    return "-" if value is None else printable(str(value))


_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")
"""Characters that reorder what follows them on screen (a name read backwards)."""


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on instead of show (C0 and C1
    controls, DEL, line and paragraph separators, bidirectional overrides) escaped as
    ``\\xNN`` or ``\\uNNNN``."""
    if text.isprintable():  # the common case, in C; isprintable() is False for all of them
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def print_json(data: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, default=str), file=stream or sys.stdout)


def note(text: str) -> None:
    """One line for the person at the terminal, never mixed into stdout."""
    print(text, file=sys.stderr)


def duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h10m``, ``4d03h``; ``n/a`` when unknown."""
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def progress_line(label: str, done: int, total: int | None, elapsed: float,
                  unit: str = "msg") -> str:
    """``label [#####-----]  12/40  8.1 msg/s  eta 3s``; without a total, no bar or estimate."""
    rate = done / elapsed if elapsed > 0 else 0.0
    speed = f"{rate:.1f} {unit}/s"
    if not total:
        return f"{label}  {done}  {speed}"
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    eta = duration((total - done) / rate) if rate > 0 and done < total else (
        "0s" if done >= total else "n/a")
    return f"{label} [{bar}]  {done}/{total}  {speed}  eta {eta}"


class Progress:
    """A one-line bar redrawn in place on ``stream`` (stderr) when ``enabled``: only on a
    terminal or when asked (``--progress``), so logs and pipes stay clean."""

    def __init__(self, label: str, total: int | None, *, enabled: bool,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._drawn_at = float("-inf")
        self._width = 0
        self._closed = False
        self._drawn: tuple[int, int | None] | None = None

    def advance(self, count: int = 1) -> None:
        self.set(self.done + count)

    def set(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = self.clock()
        if now - self._drawn_at >= REDRAW_EVERY or done == self.total:
            self._draw(now)

    def close(self) -> None:
        """The final figures (unless already drawn: the rate is the work's, not the time
        since), then a newline so later output starts on its own line; once."""
        if self.enabled and not self._closed:
            if self._drawn != (self.done, self.total):
                self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
        self._closed = True

    def _draw(self, now: float) -> None:
        self._drawn_at = now
        self._drawn = (self.done, self.total)
        if self.enabled and not self._closed:
            line = progress_line(self.label, self.done, self.total, now - self.started)
            self.stream.write("\r" + line.ljust(self._width))  # blanks a longer last line
            self._width = len(line)
            self.stream.flush()


def progress_wanted(asked: bool, stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return asked or (hasattr(stream, "isatty") and stream.isatty())
