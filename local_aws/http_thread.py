"""A threaded HTTP server on a loopback port of its own, served from a daemon thread."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self



class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """Clients dropping connections at shutdown are not errors here."""


class LoopbackHttpServer:
    """``tls``: serve HTTPS with this context instead of plain HTTP."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], *,
                 tls: ssl.SSLContext | None = None) -> None:
        self._server = QuietServer(("127.0.0.1", 0), handler)  # port 0: the kernel's choice
        self.port = self._server.server_address[1]
        if tls is not None:  # each accepted connection does its handshake on accept
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        # polled every 20 ms, so that stopping it (after every test) costs nothing
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LoopbackService:
    """A stand-in served on its own loopback port: ``with Service(...) as s: s.port``.
    A subclass builds its handler and calls :meth:`_serve`; it may refuse to start by
    raising from :meth:`_check_ready`."""

    _http: LoopbackHttpServer
    port: int

    def _serve(self, handler: type[BaseHTTPRequestHandler], *,
               tls: ssl.SSLContext | None = None) -> None:
        self._http = LoopbackHttpServer(handler, tls=tls)
        self.port = self._http.port

    def _check_ready(self) -> None:
        """Fail here, loudly, before serving, if the service has nothing to serve."""

    def start(self) -> Self:
        self._check_ready()
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def reset_connection(connection: socket.socket) -> None:
    """Close a handler's connection with a TCP reset, unanswered (the peer sees
    ECONNRESET, not an orderly end). The handler must then set ``close_connection``."""
    raw = socket.socket(fileno=connection.detach())
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()
