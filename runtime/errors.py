"""The kit's one exception hierarchy.

Every error the kit raises on purpose derives from :class:`KitError`, so a
caller can catch exactly what it means::

    KitError
    ├── SpecError            the fleet spec (cdk.json context) breaks a rule; at synth
    ├── ConfigError          the emitted worker configuration is missing or invalid;
    │                        at worker start
    ├── TransportError       an SQS call of the bundled transport (or of an operator
    │   │                    command) failed for good
    │   ├── QueueAccessDenied    the role may not do this action on this queue
    │   ├── QueueNotFound        the URL names no queue (deleted? other region?)
    │   ├── EndpointUnreachable  SQS did not answer at all (endpoint, DNS, network)
    │   ├── MessageTooLarge      a task's message is over SQS's size limit; not sent
    │   ├── EtaTooFar            a task's ETA is beyond 30 days, or a FIFO task's beyond what
    │   │                        a worker may hold; not sent
    │   └── CredentialsError     credentials expired or the role cannot be assumed
    ├── PublishError         tasks SQS did not accept: an apply_async after the publish
    │                        retry policy, or tasks of a batched publish; also kombu's
    │                        OperationalError, as Celery documents for apply_async
    └── UsageError           an operator command (python -m runtime.ops) was asked for
                             something it cannot do: an unknown queue, a queue without
                             a DLQ, options that do not go together

Each message says what was wrong, where (the field or file), and the value
given, so that it can be shown to a user as it is, without a traceback.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError


class KitError(Exception):
    """Base class of every error celery-sqs-kit raises on purpose."""


class SpecError(KitError):
    """The fleet specification breaks a rule.

    ``field`` is the spec path (``queues[reports].visibility_timeout``),
    ``rule`` the allowed range or rule, ``value`` what was given.
    """

    def __init__(self, field: str, rule: str, value: object) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        super().__init__(f"{field} {rule}, got {value!r}")


class ConfigError(KitError):
    """The emitted worker configuration cannot be used.

    ``source`` names the file, environment variable or SSM parameter read,
    ``field`` the offending field (empty when the whole document is at fault).
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem}")


class TransportError(KitError):
    """An SQS call failed in a way retrying will not fix.

    ``queue`` is the Celery queue name, ``action`` the SQS action, ``code`` the
    AWS error code; the message says what to check: the class's ``hint`` (written
    for a worker), or ``hint`` when the caller knows better (an operator command).
    """

    hint = "check the worker's role policy, the region and the queue URL"

    def __init__(self, queue: str, action: str, code: str, detail: str = "", *,
                 hint: str | None = None) -> None:
        self.queue = queue
        self.action = action
        self.code = code
        self.detail = detail
        suffix = f" ({detail})" if detail else ""
        super().__init__(f"{action} on queue {queue!r} failed: {code}{suffix}; "
                         f"{hint or self.hint}")


class QueueAccessDenied(TransportError):
    hint = ("the worker's role (or the queue's STS role) lacks this action on this queue: "
            "check the role policy the stack granted and that the worker runs as that role")


class QueueNotFound(TransportError):
    hint = ("no queue at that URL: check the region, that the stack is deployed, and that "
            "the worker configuration is the one the stack emitted")


class EndpointUnreachable(TransportError):
    hint = ("SQS did not answer (after the client's retries): check the region and the "
            "endpoint URL (AWS_ENDPOINT_URL, a VPC endpoint), DNS, and that the network "
            "(security groups, NAT, a proxy) lets the worker reach SQS")


class MessageTooLarge(TransportError):
    hint = ("send a reference to the data (an S3 key, a table row) instead of the data itself; "
            "nothing was sent")


class EtaTooFar(TransportError):
    hint = ("a FIFO queue takes no per-message delay, and a worker holds a message for at "
            "most the transport option eta_hold_limit: publish nearer the ETA (celery beat), "
            "use a standard queue (far ETAs are parked there), or raise eta_hold_limit (at "
            "most 39600 s); nothing was sent")
    beyond_maximum_hint = (
        "the bundled transport keeps a task for at most 30 days before its ETA "
        "(runtime.limits.MAX_ETA_SECONDS), and a worker sends a task due later to the DLQ: "
        "publish nearer the ETA (celery beat), or keep the date in a store of your own; "
        "nothing was sent")
    """The hint when the ETA is beyond ``MAX_ETA_SECONDS``, on any queue."""


class CredentialsError(TransportError):
    hint = ("credentials expired or could not be obtained: check the task role or instance "
            "profile, the STS role's trust policy (and ExternalId), and the clock")


class PublishError(KitError, OperationalError):
    """SQS did not accept tasks: one ``apply_async`` (throttled or failing after the
    publish client's attempts, or no answer at all), or some of a ``batch_publish``
    block (``runtime.publishing``).

    ``failed`` maps each task id to why (the AWS code, or what stopped it); every
    task id not in it was accepted. Also kombu's ``OperationalError``, which Celery
    documents ``apply_async`` raises when it cannot reach the broker.
    """

    def __init__(self, failed: dict[str, str]) -> None:
        self.failed = failed
        shown = ", ".join(f"{task_id} ({why})" for task_id, why in list(failed.items())[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        super().__init__(f"{len(failed)} task(s) were not published: {shown}{more}; "
                         "publish them again")

    def __reduce__(self) -> tuple[type, tuple[dict[str, str]]]:
        return type(self), (self.failed,)


class UsageError(KitError):
    """An operator command cannot do what it was asked; the message says what to pass."""
