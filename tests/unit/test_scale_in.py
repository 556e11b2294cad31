"""Scale-in protection's decisions: set while busy, renewed before expiry, cleared after
a debounced idle spell, and an agent failure logged and retried later, never raised."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from local_aws.http_thread import LoopbackHttpServer
from runtime.scale_in import ScaleInProtection, agent_put


class Agent:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[bool] = []
        self.fail = fail

    def __call__(self, enabled: bool) -> None:
        self.calls.append(enabled)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("agent down")


def test_set_once_while_busy_and_cleared_only_after_the_idle_spell():
    agent = Agent()
    p = ScaleInProtection(agent, expires_minutes=60, idle_seconds=10)
    for t in range(5):
        p.tick(True, float(t))
    p.tick(False, 5.0)
    p.tick(True, 8.0)  # a task again inside the spell: no flip
    p.tick(False, 9.0)
    p.tick(False, 18.0)
    assert agent.calls == [True]
    p.tick(False, 19.0)
    assert agent.calls == [True, False]
    p.tick(False, 40.0)
    assert agent.calls == [True, False]


def test_renewed_before_it_expires():
    agent = Agent()
    p = ScaleInProtection(agent, expires_minutes=20, renew_before=600)
    p.tick(True, 0.0)
    p.tick(True, 599.0)
    assert agent.calls == [True]
    p.tick(True, 600.0)
    assert agent.calls == [True, True]


def test_failure_is_logged_and_retried_later(caplog):
    agent = Agent(fail=1)
    p = ScaleInProtection(agent, retry_seconds=30)
    p.tick(True, 0.0)
    p.tick(True, 10.0)
    assert agent.calls == [True]
    assert "scale-in protection set failed" in caplog.text
    p.tick(True, 30.0)
    assert agent.calls == [True, True]
    assert p.state.protected_until is not None


def test_agent_put_sends_the_agent_request_and_rejects_a_failure_answer():
    seen: list[tuple[str, dict]] = []
    answers = iter([{"protection": {"ProtectionEnabled": True}},
                    {"failure": {"Reason": "TASK_NOT_VALID"}}])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append((self.path, body))
                data = json.dumps(next(answers)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = LoopbackHttpServer(Handler)
    server.start()
    try:
        put = agent_put(f"http://127.0.0.1:{server.port}/api/t1", expires_minutes=15)
        put(True)
        with pytest.raises(RuntimeError, match="TASK_NOT_VALID"):
            put(False)
    finally:
        server.stop()
    assert seen == [("/api/t1/task-protection/v1/state",
                     {"ProtectionEnabled": True, "ExpiresInMinutes": 15}),
                    ("/api/t1/task-protection/v1/state", {"ProtectionEnabled": False})]
