"""Stand-ins for the operator CLI's AWS clients (unit tests only)."""

from __future__ import annotations

from botocore.exceptions import ClientError


class Fake:
    """A client whose methods return (or raise) what the test set; an answer may be a
    list, handed out one call at a time (the last one repeats)."""

    def __init__(self, **answers) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name):
        if name not in self.answers:
            raise AttributeError(name)

        def method(**kwargs):
            self.calls.append((name, kwargs))
            answer = self.answers[name]
            if isinstance(answer, list):
                answer = answer.pop(0) if len(answer) > 1 else answer[0]
            if isinstance(answer, Exception):
                raise answer
            return answer(**kwargs) if callable(answer) else answer
        return method

    def called(self, name: str) -> list[dict]:
        return [kwargs for called, kwargs in self.calls if called == name]


class FakeAws:
    """``runtime.ops.aws.Aws`` with one fake per service, for both kinds of client."""

    def __init__(self, **clients) -> None:
        self.clients = clients

    def once(self, service):
        return self.clients[service]

    client = once


def aws_error(code: str, status: int, operation: str, message: str = "m") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)
