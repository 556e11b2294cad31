"""A threaded HTTP server on a free loopback port, served from a daemon thread."""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from local_aws.ports import free_port


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients dropping connections at shutdown are not errors here."""


class LoopbackHttpServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.port = free_port()
        self._server = QuietServer(("127.0.0.1", self.port), handler)
        # polled every 20 ms, so that stopping it (after every test) costs nothing
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def reset_connection(connection: socket.socket) -> None:
    """Close a handler's connection with a TCP reset, unanswered (the peer sees
    ECONNRESET, not an orderly end). The handler must then set ``close_connection``."""
    raw = socket.socket(fileno=connection.detach())
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
