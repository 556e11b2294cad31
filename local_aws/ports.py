"""Loopback ports that stay what a test needs while other test processes run beside it.

A port chosen by binding and releasing it can be taken by another process before
it is used. So servers bind port 0 themselves and report the port they got
(:mod:`local_aws.server_process`, :mod:`local_aws.http_thread`), and a port meant to
refuse connections is held bound, never listening, for as long as it is needed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on, and nothing else can bind, while the block
    runs: connecting to it is refused (the socket is bound but never listens)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
