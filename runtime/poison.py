"""Whether a received SQS message can be handed to kombu, and if not, why.

A message's body is whatever its sender wrote. Before the transport reads a field of
it, or hands it to kombu (whose ``Message`` reads more of it on Celery's event loop),
every field either of them reads is checked here, so a message of any shape ends in
one of two places: delivered, or sent to the DLQ with the reason this module gives.
The fields, and what kombu and the transport do with each:

============================  ===============================================================
``Body``                      text; JSON, optionally base64-encoded as a whole (kombu's
                              ``sqs_base64_encoding``), of an object (the *envelope*)
``properties``                an object; the transport adds its ``delivery_tag`` and
                              ``delivery_info``
``properties.delivery_info``  absent or an object; the transport adds the SQS message to it;
                              ``exchange``, ``routing_key``, ``consumer_tag`` (kombu's and
                              Celery's lookups) absent, null or text
``properties.body_encoding``  absent, null, ``utf-8`` or ``base64`` (kombu's only codec); a
                              base64 ``body`` must decode
``body``                      with ``base64``: text (kombu decodes it before any consumer)
``headers``                   an object (Celery's protocol 2 task fields)
``headers.eta``, ``.expires`` absent, null, text or a datetime (kombu's JSON encodes one):
                              the transport parks on the first and honours the second
``headers.compression``       absent, null or text (kombu looks the decompressor up by it)
``content-type``,             absent, null or text (kombu's deserializer registry keys)
``content-encoding``
============================  ===============================================================

What passes may still be refused by its consumer (an unregistered task, a body Celery
cannot decode): the channel contains that too (``runtime.transport``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any

POISON = "undecodable: not a kombu message"
"""Starts every reason given here (``kit_reason`` on the DLQ copy)."""

_TEXT_OR_NULL = (str, type(None))
_DELIVERY_INFO_KEYS = ("exchange", "routing_key", "consumer_tag")
_TIME_OR_NULL = (str, datetime, type(None))


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for reasons."""
    return {dict: "an object", list: "an array", str: "text", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                        type(value).__name__)


def envelope_defect(payload: Any) -> str | None:
    """Why kombu or the transport cannot use this decoded body, or ``None``."""
    if not isinstance(payload, Mapping):
        return f"{POISON} (the body is {_kind(payload)}, not a JSON object)"
    properties = payload.get("properties")
    if not isinstance(properties, Mapping):
        return f"{POISON} (properties is {_missing_or(properties, payload, 'properties')}, " \
               "not an object)"
    info = properties.get("delivery_info")
    if info is not None and not isinstance(info, Mapping):
        return f"{POISON} (properties.delivery_info is {_kind(info)}, not an object)"
    for key in _DELIVERY_INFO_KEYS:
        if info is not None and not isinstance(info.get(key), _TEXT_OR_NULL):
            return f"{POISON} (properties.delivery_info.{key} is {_kind(info[key])}, not text)"
    headers = payload.get("headers")
    if not isinstance(headers, Mapping):
        return f"{POISON} (headers is {_missing_or(headers, payload, 'headers')}, " \
               "not an object)"
    for key, types in (("eta", _TIME_OR_NULL), ("expires", _TIME_OR_NULL),
                       ("compression", _TEXT_OR_NULL)):
        if not isinstance(headers.get(key), types):
            return f"{POISON} (headers.{key} is {_kind(headers[key])}, not text)"
    for key in ("content-type", "content-encoding"):
        if not isinstance(payload.get(key), _TEXT_OR_NULL):
            return f"{POISON} ({key} is {_kind(payload[key])}, not text)"
    return _body_defect(payload.get("body"), properties.get("body_encoding"))


def _missing_or(value: Any, payload: Mapping[str, Any], key: str) -> str:
    return _kind(value) if key in payload else "missing"


def _body_defect(body: Any, encoding: Any) -> str | None:
    """Why kombu cannot decode the envelope's ``body`` with its ``body_encoding``: kombu
    does so while it makes the message, before any consumer could refuse it."""
    if not isinstance(encoding, _TEXT_OR_NULL):
        return f"{POISON} (properties.body_encoding is {_kind(encoding)}, not text)"
    if not encoding or not body or encoding.lower() == "utf-8":
        return None
    if encoding != "base64":
        return f"{POISON} (properties.body_encoding {encoding!r} is not base64 or utf-8)"
    if not isinstance(body, str):
        return f"{POISON} (a base64 body is {_kind(body)}, not text)"
    try:
        base64.b64decode(body.encode())  # as kombu's codec does
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return f"{POISON} (the body is not base64, as properties.body_encoding says)"
    return None
