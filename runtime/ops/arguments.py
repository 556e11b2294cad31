"""Options every operator command takes, and argument types they share."""

from __future__ import annotations

import argparse

from runtime.config import ENV_DOCUMENT, ENV_SOURCE


def common_options() -> argparse.ArgumentParser:
    """``--config`` and ``--json``, as a parent parser of each command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", metavar="SOURCE",
                        help=f"the worker-config document: PATH, outputs.json[#Stack] or "
                             f"ssm:NAME (default: ${ENV_DOCUMENT}, then ${ENV_SOURCE})")
    parent.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout instead of tables")
    return parent


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value
