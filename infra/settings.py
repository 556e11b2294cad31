"""The fleet spec: one typed, frozen description of the queues and the workers.

A user edits one block of ``cdk.json`` context, ``"celery_sqs_kit"``; every
field is optional except the queue names, and every default is listed below.
Durations are in seconds (as in Celery's own settings).

Fleet fields (``KitSpec``):

=============================  ==================  ==========================================
field                          default             meaning
=============================  ==================  ==========================================
``stack_name``                 ``CelerySqsKit``    CloudFormation stack name
``transport``                  ``bundled``         what consumes the queues: ``bundled``
                                                   (``runtime.transport``) or ``stock``
                                                   (kombu's own); the visibility rules
                                                   and defaults follow it (below)
``queues``                     one ``celery``      list of queue specs (below)
``default_queue``              first queue         Celery's ``task_default_queue``
``producer_role``              ``true``            an ECS task role for the application tier
                                                   that may only send tasks and read results
``sts``                        see ``StsSpec``     the STS-assumable broker-access role
``result_backend``             see ``ResultSpec``  the DynamoDB result table
``endpoint_url``               ``null``            SQS endpoint for workers (VPC endpoint);
                                                   ``null`` lets boto3 choose
``config_parameter_name``      ``/celery-sqs-kit/  SSM parameter holding the worker config
                               <stack_name>/
                               worker-config``
``extra_trusted_principals``   ``[]``              IAM user or role ARNs of the stack's own
                                                   account also trusted by the worker and
                                                   producer roles. Refused unless
                                                   ``-c celery_sqs_kit:local_stage=true``:
                                                   the local stage sets it to its operator
                                                   user, because the emulator cannot
                                                   assume a role as a service
``workers``                    no fleet            the worker fleets (``WorkersSpec``, below)
=============================  ==================  ==========================================

Queue fields (``QueueSpec``):

===============================  ===========  ===============================================
field                            default      meaning
===============================  ===========  ===============================================
``name``                         (required)   Celery queue name; also the SQS queue name
``fifo``                         ``false``    FIFO queue (name must end in ``.fifo``)
``content_based_deduplication``  ``false``    FIFO only: dedupe on the body's SHA-256
``visibility_timeout``           derived      seconds a received message stays invisible
                                              (see Visibility, below)
``receive_wait_time``            ``20``       long-poll seconds, 0..20, queue and runtime
``retention_period``             ``345600``   seconds SQS keeps a message (4 days)
``max_message_size_bytes``       ``262144``   the largest message, bytes: 1024..1048576
                                              (see Message size, below)
``dead_letter_queue``            ``true``     create ``<name>-dlq`` and a redrive policy
``max_receive_count``            ``5``        receives before SQS moves a message to the DLQ
``dead_letter_retention_period`` ``1209600``  DLQ retention (14 days, the maximum)
``backoff_policy``               ``{}``       kombu backoff: {attempt: delay seconds}
``backoff_tasks``                ``[]``       task names the backoff policy applies to
``task_time_limit``              ``1500``     Celery hard time limit for this queue's tasks
``max_countdown``                ``0``        longest ETA/countdown planned on this queue
``routes``                       ``[]``       task name globs routed to this queue
``workers_send``                 ``true``     the workers that consume this queue may
                                              SendMessage here (retry(), chains, parking
                                              ETAs beyond 11 h); false = consume-only,
                                              and ``max_countdown`` at most 39600 with
                                              the bundled transport
``dedicated_role``               ``false``    a per-queue STS role that alone can use the
                                              queue, assumable only by the fleets that
                                              consume it (needs ``sts.enabled``)
``max_message_age``              derived      seconds: alarm when the oldest message is
                                              older (see Alarms, below); 60 ..
                                              ``retention_period`` - 1
===============================  ===========  ===============================================

Visibility: how long a received message stays hidden is also how long a killed
worker's tasks wait before another worker runs them, so it follows the transport:

- ``bundled`` (default): ``60``, at least 30. The transport's heartbeat keeps a held
  message invisible however long its task runs (extended when half the window is
  left, up to SQS's 12-hour cap from receipt), so the window only bounds recovery: a
  killed worker's tasks run again within a minute. A message is held for its
  countdown (up to 11 h: a later ETA is parked on a standard queue and refused at
  publish on a FIFO one, so there ``max_countdown`` is at most 39600), then its run:
  ``min(max_countdown, 39600) + task_time_limit`` must fit in the cap less 60 s
  (``task_time_limit`` at most 43140 without a countdown). The window itself bounds
  neither.
- ``stock``: ``task_time_limit + max_countdown + 60``, and at least that. kombu never
  extends visibility: a shorter window hands running tasks to a second worker.

Message size: SQS takes messages (and batches) of up to 1 MiB since 2025, and bills
each 64 KB of a payload as one request. A queue's ``max_message_size_bytes`` goes to
the queue (``MaximumMessageSize``) and, through the worker configuration, to the
bundled transport, which refuses a larger task at publish (``MessageTooLarge``, before
any request). The default stays 262144 (256 KiB), knowingly: a task message is its
arguments, and arguments that large are nearly always data that belongs in S3 with
the task carrying its key; a larger limit would let them through silently, each
costing up to 16 billed requests to send and again to receive, and a worker holds its
prefetch window of them in memory (four times as much at 1 MiB). A queue whose
tasks need more says so with a value up to 1048576; its DLQ takes 1 MiB whatever the
queue's limit, so a message moved there with the kit's reason attributes always fits.

The rendered ``celeryconfig.py`` and the import-time configuration select the
spec's transport unless told otherwise (``--transport``,
``CELERY_SQS_KIT_TRANSPORT``).

Worker fleets (``WorkersSpec``): ``ecs`` (a Fargate service) and ``ec2`` (an Auto
Scaling group running the worker image with docker), each absent (no fleet) or a
mapping of the fields below; ``{}`` is a fleet with every default. Both run the
worker image as uid:gid 10001:10001 with the bundled transport (whatever
``transport`` says: the bundled one keeps any queue's timing), reading the
configuration from the stack's SSM parameter, in a VPC the stack makes.

=============================  ===================  =========================================
field                          default              meaning
=============================  ===================  =========================================
``queues``                     every queue          the queues this fleet consumes (``-Q``)
                                                    and scales on; its identity reaches
                                                    these alone (below)
``min_capacity``               ``0``                fewest workers; 0 lets an idle fleet
                                                    cost nothing
``max_capacity``               ``2``                most workers, >= ``min_capacity``, >= 1
``concurrency``                ``2``                ``celery worker --concurrency``, 1..256
``target_backlog_per_worker``  concurrency x 10     messages per running worker that scaling
                                                    holds (see below), 1..100000
``image_uri``                  ``null``             an image reference to run as it is (no
                                                    build, no push): the local stage's tag,
                                                    or your registry's
``image_directory``            ``.``                with no ``image_uri``: a directory with a
                                                    Dockerfile (this repository's), built and
                                                    pushed to the CDK asset repository on
                                                    deploy (build the wheels it copies
                                                    first: ``pip wheel -w .build/wheels
                                                    -r requirements-worker.txt``)
``stop_timeout``               ECS ``120``; EC2     seconds ``docker stop``/ECS waits for the
                               the longest          warm shutdown before SIGKILL. ECS 2..120
                               ``task_time_limit``  (Fargate's cap: longer tasks are killed
                               of its queues        on scale-in and run again once their
                                                    visibility timeout ends, within a
                                                    minute at the bundled default); EC2
                                                    1..7140, and the termination hook
                                                    waits 60 s longer
``cpu``, ``memory``            ``512``, ``1024``    ECS only: a Fargate CPU/memory pair
``instance_type``              ``t3.small``         EC2 only: the instance type (arm64 types
                                                    need an arm64 image)
=============================  ===================  =========================================

``workers.scaling`` (default ``true``): each fleet scales on its backlog (below), and the
EC2 fleet has its termination hook; ``false`` leaves out the scaling resources and the
hook, for an emulator without those types (as ``-c celery_sqs_kit:scaling=false`` does).

``workers.deployed`` (default ``true``): ``false`` leaves both fleets' resources out (as
``-c celery_sqs_kit:fleets=false`` does) while their ``queues`` still decide what each
worker identity may reach: the local stage's emulator lacks the scaling types.

The scaling target, derived: one worker holds at most ``concurrency x prefetch
multiplier`` messages at once (its pool's processes, each with its prefetched
messages; the fleets run the bundled transport, whose multiplier is
``runtime.celery_settings.BUNDLED_PREFETCH`` = 10). Each fleet scales so that
``(visible + in-flight messages over its queues) / running workers`` stays near
that number, and from zero to one worker as soon as a message waits
(:mod:`infra.backlog`). Set ``target_backlog_per_worker`` lower for latency,
higher for fewer workers.

Alarms (``AlarmsSpec``, the ``alarms`` block), on an SNS topic encrypted with the
stack's key (TLS-only), and a dashboard of every queue:

=========================  ===========  ==================================================
field                      default      meaning
=========================  ===========  ==================================================
``enabled``                ``true``     the topic, the alarms and the dashboard
``email``                  ``null``     an address subscribed to the topic (it must
                                        confirm); ``null``: subscribe yourself
``no_consumer_minutes``    ``15``       5..1440: alarm when messages wait and none is
                                        received for this many consecutive minutes
``receive_errors``         ``5``        0..100000: alarm when workers report more failed
                                        ReceiveMessage calls in 5 minutes (EMF metric
                                        ``CelerySqsKit/ReceiveErrors``, :mod:`runtime.metrics`)
=========================  ===========  ==================================================

Per queue: its DLQ is not empty (any visible message, at once); its oldest message
is older than ``max_message_age``; workers report receive errors; no consumer.
``max_message_age`` defaults to the oldest a healthy message gets,
``max_countdown + sum(backoff_policy delays) + visibility_timeout +
task_time_limit`` (:func:`infra.rules.message_age_threshold`): its countdown, its
backoff delays, one redelivery after a lost worker, then its run. The shipped
``celery`` queue (bundled, so a 60 s visibility timeout): 0 + 70 + 60 + 1500 =
1630 s.

Who reaches which queue: a fleet's identity (the ECS task role, the EC2 instance role)
may consume exactly the queues its ``queues`` names, move their poison messages to
their DLQs, and send to those of them with ``workers_send``; nothing on any other
queue (a task that publishes to another fleet's queue is refused: route it through
the producer). With ``sts.enabled`` that access sits on a broker role per set of
fleets sharing queues (``BrokerRole`` for queues both fleets consume,
``BrokerRoleEcs``/``BrokerRoleEc2`` for one fleet's own), each assumable only by those
fleets' identities, and each queue's entry in the worker configuration names its
role. With no fleet in the spec (workers of your own), both identities reach every
queue.

``-c celery_sqs_kit:fleets=false`` leaves both fleets' resources out whatever the spec
says (the local stage deploys to an emulator without the scaling resource types); their
``queues`` still decide the identities' access.
``-c celery_sqs_kit:scaling=false`` keeps the fleets but leaves out their scaling
(target tracking, step policies, alarms) and the EC2 termination hook, the types
the emulator lacks: a local stage that runs the deployed task definition.

Everything is validated on load (:func:`load_spec`) by :mod:`infra.rules`;
the first broken rule raises :class:`runtime.errors.SpecError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from infra import rules
from infra.backlog import target_backlog_per_worker
from runtime.celery_settings import BUNDLED_PREFETCH
from runtime.errors import SpecError
from runtime.limits import (CLASSIC_MESSAGE_SIZE, HTTP_URL, MAX_EXTERNAL_ID, MAX_RESULT_TTL,
                            MIN_EXTERNAL_ID, MIN_RESULT_TTL)
from runtime.schema import BUNDLED

CONTEXT_KEY = "celery_sqs_kit"
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9_./-]{1,1011}$")
EXTRA_PRINCIPALS_CONTEXT_KEY = "celery_sqs_kit:extra_trusted_principals"
"""A ``-c`` override so a local run can add its operator without editing cdk.json."""
FLEETS_CONTEXT_KEY = "celery_sqs_kit:fleets"
"""``-c celery_sqs_kit:fleets=false`` leaves the worker fleets out (the local stage)."""
LOCAL_STAGE_CONTEXT_KEY = "celery_sqs_kit:local_stage"
"""``-c celery_sqs_kit:local_stage=true``: the emulator stage (:mod:`local_aws.stage`), the
only place ``extra_trusted_principals`` are admitted. Never set it for AWS."""
SCALING_CONTEXT_KEY = "celery_sqs_kit:scaling"
"""``-c celery_sqs_kit:scaling=false`` keeps the fleets without their scaling resources."""
_IMAGE_URI = re.compile(r"^[a-z0-9][A-Za-z0-9._/:@-]{0,511}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


@dataclass(frozen=True)
class QueueSpec:
    name: str
    fifo: bool = False
    content_based_deduplication: bool = False
    visibility_timeout: int = 0
    """Resolved by :func:`load_spec`: the spec's value, else the transport's default."""
    receive_wait_time: int = 20
    retention_period: int = 345_600
    max_message_size_bytes: int = CLASSIC_MESSAGE_SIZE
    dead_letter_queue: bool = True
    max_receive_count: int = 5
    dead_letter_retention_period: int = 1_209_600
    backoff_policy: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    backoff_tasks: tuple[str, ...] = ()
    task_time_limit: int = 1500
    max_countdown: int = 0
    routes: tuple[str, ...] = ()
    workers_send: bool = True
    dedicated_role: bool = False
    max_message_age: int = 0
    """Resolved by :func:`load_spec`: the spec's value, else the derived threshold."""


@dataclass(frozen=True)
class StsSpec:
    """The broker-access role workers assume (off by default: ECS task roles and
    instance profiles already hand out short-lived, rotated credentials)."""

    enabled: bool = False
    token_timeout: int = 900
    max_session_duration: int = 3600
    external_id: str | None = None


@dataclass(frozen=True)
class ResultSpec:
    """Celery's ``dynamodb`` result backend table."""

    enabled: bool = True
    ttl_seconds: int = 86_400


@dataclass(frozen=True, kw_only=True)
class FleetSpec:
    """What both worker fleets are given; values as resolved by :func:`load_spec`."""

    queues: tuple[str, ...]
    target_backlog_per_worker: int
    min_capacity: int = 0
    max_capacity: int = 2
    concurrency: int = 2
    image_uri: str | None = None
    image_directory: str = "."


@dataclass(frozen=True, kw_only=True)
class EcsFleetSpec(FleetSpec):
    """A Fargate service of workers."""

    stop_timeout: int = 120
    cpu: int = 512
    memory: int = 1024


@dataclass(frozen=True, kw_only=True)
class Ec2FleetSpec(FleetSpec):
    """An Auto Scaling group, one worker container per instance."""

    stop_timeout: int
    instance_type: str = "t3.small"


FLEET_NAMES = ("ecs", "ec2")
"""The fleets, in the order their identities are listed (task role, instance role)."""


@dataclass(frozen=True)
class WorkersSpec:
    ecs: EcsFleetSpec | None = None
    ec2: Ec2FleetSpec | None = None
    scaling: bool = True
    deployed: bool = True
    """False (``-c celery_sqs_kit:fleets=false``): the fleets' resources are left out, but
    their ``queues`` still decide what each worker identity may reach (:meth:`consumers`)."""

    def consumers(self, queue_name: str) -> tuple[str, ...]:
        """The fleets (of :data:`FLEET_NAMES`) whose identity consumes ``queue_name``: those
        whose ``queues`` list it. With no fleet in the spec, both: workers of your own run
        as the task role or the instance role, and the spec does not say on which queues."""
        fleets = {"ecs": self.ecs, "ec2": self.ec2}
        if all(fleet is None for fleet in fleets.values()):
            return FLEET_NAMES
        return tuple(name for name, fleet in fleets.items()
                     if fleet is not None and queue_name in fleet.queues)


@dataclass(frozen=True)
class AlarmsSpec:
    """The alarm topic, the per-queue alarms and the dashboard."""

    enabled: bool = True
    email: str | None = None
    no_consumer_minutes: int = 15
    receive_errors: int = 5


@dataclass(frozen=True)
class KitSpec:
    queues: tuple[QueueSpec, ...]
    stack_name: str = "CelerySqsKit"
    transport: str = BUNDLED
    default_queue: str = ""
    producer_role: bool = True
    sts: StsSpec = StsSpec()
    result_backend: ResultSpec = ResultSpec()
    endpoint_url: str | None = None
    config_parameter_name: str = ""
    extra_trusted_principals: tuple[str, ...] = ()
    workers: WorkersSpec = WorkersSpec()
    alarms: AlarmsSpec = AlarmsSpec()

    def queue(self, name: str) -> QueueSpec:
        return next(q for q in self.queues if q.name == name)


def load_spec(context: Mapping[str, Any] | None,
              extra_trusted_principals: str | list[str] | None = None,
              fleets: str | bool | None = None,
              scaling: str | bool | None = None,
              local_stage: str | bool | None = None) -> KitSpec:
    """Build and validate the spec from the ``celery_sqs_kit`` context block.

    ``extra_trusted_principals`` is the raw override: comma-separated ARNs from ``-c``,
    or a list from a cdk.json context entry. ``fleets`` is the raw
    ``celery_sqs_kit:fleets`` value: ``false`` (or ``"false"``) leaves the fleets out;
    ``scaling``, the raw ``celery_sqs_kit:scaling`` value, likewise their scaling.
    ``local_stage``, the raw ``celery_sqs_kit:local_stage`` value, ``true`` admits
    ``extra_trusted_principals`` (refused otherwise).
    """
    if context is not None and not isinstance(context, Mapping):
        raise SpecError(CONTEXT_KEY, "must be a mapping of spec fields", context)
    raw = dict(context or {})
    if extra_trusted_principals:
        # -c passes a comma-separated string; a cdk.json context entry may be a list.
        given = extra_trusted_principals.split(",") \
            if isinstance(extra_trusted_principals, str) else extra_trusted_principals
        if not isinstance(given, list):
            raise SpecError(EXTRA_PRINCIPALS_CONTEXT_KEY,
                            "must be comma-separated IAM ARNs or a list of them",
                            extra_trusted_principals)
        raw["extra_trusted_principals"] = [
            arn.strip() if isinstance(arn, str) else arn for arn in given
            if not isinstance(arn, str) or arn.strip()]
    _reject_unknown(CONTEXT_KEY, raw, KitSpec)
    raw_queues = raw.get("queues", [{"name": "celery"}])
    if not isinstance(raw_queues, list) or not raw_queues:
        raise SpecError(f"{CONTEXT_KEY}.queues", "must be a non-empty list of queue specs",
                        raw_queues)
    transport = _typed(CONTEXT_KEY, raw, "transport", str, BUNDLED)
    rules.check_transport(f"{CONTEXT_KEY}.transport", transport)
    queues = tuple(_queue(i, q, transport) for i, q in enumerate(raw_queues))
    names = [q.name for q in queues]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{CONTEXT_KEY}.queues", "must have unique names", duplicates)
    dead_letter_names = {rules.dead_letter_queue_name(q.name) for q in queues
                         if q.dead_letter_queue}
    clashing = sorted(dead_letter_names & set(names))
    if clashing:
        raise SpecError(f"{CONTEXT_KEY}.queues",
                        "must not name a queue like another queue's dead-letter queue", clashing)

    first = queues[0]
    for q in queues[1:]:
        if q.receive_wait_time != first.receive_wait_time:
            raise SpecError(f"queues[{q.name}].receive_wait_time",
                            f"must equal queues[{first.name}].receive_wait_time "
                            f"({first.receive_wait_time}): the runtime long-polls every queue "
                            "with one wait_time_seconds", q.receive_wait_time)
    stack_name = _typed(CONTEXT_KEY, raw, "stack_name", str, "CelerySqsKit")
    if not _STACK_NAME.match(stack_name):
        raise SpecError(f"{CONTEXT_KEY}.stack_name", "must start with a letter and contain only "
                        "letters, digits and '-', at most 128 characters (CloudFormation rule)",
                        stack_name)
    default_queue = _typed(CONTEXT_KEY, raw, "default_queue", str, queues[0].name)
    if default_queue not in names:
        raise SpecError(f"{CONTEXT_KEY}.default_queue", f"must name one of the queues {names}",
                        default_queue)
    sts = _sts(raw.get("sts", {}))
    if not sts.enabled:
        for q in queues:
            if q.dedicated_role:
                raise SpecError(f"queues[{q.name}].dedicated_role",
                                "needs sts.enabled (a dedicated role is assumed through STS)",
                                True)
    parameter_name = _typed(CONTEXT_KEY, raw, "config_parameter_name", str,
                            f"/celery-sqs-kit/{stack_name}/worker-config")
    if not _PARAMETER_NAME.match(parameter_name) or \
            parameter_name.lstrip("/").lower().startswith(("aws", "ssm")):
        raise SpecError(f"{CONTEXT_KEY}.config_parameter_name",
                        "must be an SSM parameter name: letters, digits and _.-/ only, at most "
                        "1011 characters, not starting with 'aws' or 'ssm' (SSM rule)",
                        parameter_name)
    principals = _typed(CONTEXT_KEY, raw, "extra_trusted_principals", list, [])
    rules.check_trusted_principal_arns(f"{CONTEXT_KEY}.extra_trusted_principals", principals)
    if principals and _off(LOCAL_STAGE_CONTEXT_KEY, local_stage, default=True):
        raise SpecError(f"{CONTEXT_KEY}.extra_trusted_principals",
                        "is refused outside the local stage: the worker and producer roles "
                        "would trust these principals beside their AWS service, without an "
                        f"ExternalId (only -c {LOCAL_STAGE_CONTEXT_KEY}=true, which "
                        "local_aws.stage sets for the emulator, admits them)", principals)
    endpoint_url = _typed(CONTEXT_KEY, raw, "endpoint_url", (str, type(None)), None)
    if endpoint_url is not None and not HTTP_URL.match(endpoint_url):
        raise SpecError(f"{CONTEXT_KEY}.endpoint_url", "must be an http:// or https:// URL "
                        "(a VPC endpoint's, or an emulator's) or null", endpoint_url)
    workers = _workers(raw.get("workers", {}), queues)
    if _off(FLEETS_CONTEXT_KEY, fleets):
        workers = WorkersSpec(ecs=workers.ecs, ec2=workers.ec2, scaling=workers.scaling,
                              deployed=False)
    elif _off(SCALING_CONTEXT_KEY, scaling):
        workers = WorkersSpec(ecs=workers.ecs, ec2=workers.ec2, scaling=False)
    for q in queues:
        if q.dedicated_role and not workers.consumers(q.name):
            raise SpecError(f"queues[{q.name}].dedicated_role", "needs a fleet that consumes "
                            "the queue (workers.ecs.queues or workers.ec2.queues): only the "
                            "fleets that use a queue may assume its role", True)
    return KitSpec(
        queues=queues,
        stack_name=stack_name,
        transport=transport,
        default_queue=default_queue,
        producer_role=_typed(CONTEXT_KEY, raw, "producer_role", bool, True),
        sts=sts,
        result_backend=_result(raw.get("result_backend", {})),
        endpoint_url=endpoint_url,
        config_parameter_name=parameter_name,
        extra_trusted_principals=tuple(principals),
        workers=workers,
        alarms=_alarms(raw.get("alarms", {})),
    )


def _queue(index: int, raw: Any, transport: str) -> QueueSpec:
    if not isinstance(raw, Mapping):
        raise SpecError(f"queues[{index}]", "must be a mapping with at least a name", raw)
    name = raw.get("name")
    where = f"queues[{name if isinstance(name, str) and name else index}]"
    _reject_unknown(where, raw, QueueSpec)
    defaults = {f.name: f.default for f in fields(QueueSpec) if f.name != "name"}
    values: dict[str, Any] = {}
    for key, default in defaults.items():
        if key == "backoff_policy":
            values[key] = _backoff_policy(where, raw.get(key, {}))
        elif key in ("backoff_tasks", "routes"):
            values[key] = tuple(_string_list(where, raw, key))
        elif key in ("visibility_timeout", "max_message_age"):
            values[key] = _typed(where, raw, key, (int, type(None)), None)
        else:
            values[key] = _typed(where, raw, key, type(default), default)
    if values["content_based_deduplication"] and not values["fifo"]:
        raise SpecError(f"{where}.content_based_deduplication", "applies to FIFO queues only",
                        True)
    if values["visibility_timeout"] is None:
        values["visibility_timeout"] = rules.default_visibility_timeout(
            transport=transport, **{k: values[k] for k in ("task_time_limit", "max_countdown")})
    rules.check_queue(f"{where}.", transport=transport, name=name, **{
        k: v for k, v in values.items()
        if k not in ("content_based_deduplication", "backoff_tasks", "routes", "workers_send",
                     "dedicated_role", "max_message_age")})
    rules.check_far_countdowns_can_park(
        f"{where}.", transport=transport, fifo=values["fifo"],
        workers_send=values["workers_send"], max_countdown=values["max_countdown"])
    if values["max_message_age"] is None:
        values["max_message_age"] = rules.message_age_threshold(**{k: values[k] for k in (
            "visibility_timeout", "task_time_limit", "max_countdown", "backoff_policy")})
    rules.check_message_age(f"{where}.max_message_age", values["max_message_age"],
                            retention_period=values["retention_period"])
    return QueueSpec(name=name, **values)


def _sts(raw: Any) -> StsSpec:
    where = f"{CONTEXT_KEY}.sts"
    if not isinstance(raw, Mapping):
        raise SpecError(where, "must be a mapping", raw)
    _reject_unknown(where, raw, StsSpec)
    spec = StsSpec(
        enabled=_typed(where, raw, "enabled", bool, False),
        token_timeout=_typed(where, raw, "token_timeout", int, 900),
        max_session_duration=_typed(where, raw, "max_session_duration", int, 3600),
        external_id=_typed(where, raw, "external_id", (str, type(None)), None),
    )
    rules.check_sts_session(f"{where}.", token_timeout=spec.token_timeout,
                            max_session_duration=spec.max_session_duration)
    if spec.external_id is not None and \
            not MIN_EXTERNAL_ID <= len(spec.external_id) <= MAX_EXTERNAL_ID:
        raise SpecError(f"{where}.external_id", f"must be {MIN_EXTERNAL_ID}..{MAX_EXTERNAL_ID} "
                        "characters (STS rule)", spec.external_id)
    return spec


def _result(raw: Any) -> ResultSpec:
    where = f"{CONTEXT_KEY}.result_backend"
    if not isinstance(raw, Mapping):
        raise SpecError(where, "must be a mapping", raw)
    _reject_unknown(where, raw, ResultSpec)
    spec = ResultSpec(enabled=_typed(where, raw, "enabled", bool, True),
                      ttl_seconds=_typed(where, raw, "ttl_seconds", int, 86_400))
    rules.check_range(f"{where}.ttl_seconds", spec.ttl_seconds, MIN_RESULT_TTL, MAX_RESULT_TTL,
                      "seconds")
    return spec


def _alarms(raw: Any) -> AlarmsSpec:
    where = f"{CONTEXT_KEY}.alarms"
    if not isinstance(raw, Mapping):
        raise SpecError(where, "must be a mapping", raw)
    _reject_unknown(where, raw, AlarmsSpec)
    spec = AlarmsSpec(enabled=_typed(where, raw, "enabled", bool, True),
                      email=_typed(where, raw, "email", (str, type(None)), None),
                      no_consumer_minutes=_typed(where, raw, "no_consumer_minutes", int, 15),
                      receive_errors=_typed(where, raw, "receive_errors", int, 5))
    if spec.email is not None and not _EMAIL.match(spec.email):
        raise SpecError(f"{where}.email", "must be one email address (name@domain)", spec.email)
    rules.check_alarms(f"{where}.", no_consumer_minutes=spec.no_consumer_minutes,
                       receive_errors=spec.receive_errors)
    return spec


def _off(key: str, raw: str | bool | None, default: bool = False) -> bool:
    """Whether a ``true``/``false`` context value says false; ``default`` when absent."""
    if raw is None:
        return default
    if raw is True or raw == "true":
        return False
    if raw is False or raw == "false":
        return True
    raise SpecError(key, "must be true or false", raw)


def _workers(raw: Any, queues: tuple[QueueSpec, ...]) -> WorkersSpec:
    where = f"{CONTEXT_KEY}.workers"
    if not isinstance(raw, Mapping):
        raise SpecError(where, "must be a mapping with optional ecs and ec2 fleets", raw)
    _reject_unknown(where, raw, WorkersSpec)
    ecs = raw.get("ecs")
    ec2 = raw.get("ec2")
    return WorkersSpec(
        ecs=None if ecs is None else _ecs_fleet(f"{where}.ecs", ecs, queues),
        ec2=None if ec2 is None else _ec2_fleet(f"{where}.ec2", ec2, queues),
        scaling=_typed(where, raw, "scaling", bool, True),
        deployed=_typed(where, raw, "deployed", bool, True))


def _ecs_fleet(where: str, raw: Any, queues: tuple[QueueSpec, ...]) -> EcsFleetSpec:
    common = _fleet(where, raw, queues, EcsFleetSpec)
    spec = EcsFleetSpec(**common,
                        stop_timeout=_typed(where, raw, "stop_timeout", int, 120),
                        cpu=_typed(where, raw, "cpu", int, 512),
                        memory=_typed(where, raw, "memory", int, 1024))
    rules.check_ecs_stop_timeout(f"{where}.stop_timeout", spec.stop_timeout)
    rules.check_fargate_size(f"{where}.", cpu=spec.cpu, memory=spec.memory)
    return spec


def _ec2_fleet(where: str, raw: Any, queues: tuple[QueueSpec, ...]) -> Ec2FleetSpec:
    common = _fleet(where, raw, queues, Ec2FleetSpec)
    # A warm shutdown lets running tasks finish: the longest may run its whole limit.
    longest_task = max(q.task_time_limit for q in queues if q.name in common["queues"])
    spec = Ec2FleetSpec(**common,
                        stop_timeout=_typed(where, raw, "stop_timeout", int, longest_task),
                        instance_type=_typed(where, raw, "instance_type", str, "t3.small"))
    rules.check_ec2_stop_timeout(f"{where}.stop_timeout", spec.stop_timeout)
    if not _INSTANCE_TYPE.match(spec.instance_type):
        raise SpecError(f"{where}.instance_type", "must be an EC2 instance type such as "
                        "t3.small", spec.instance_type)
    return spec


def _fleet(where: str, raw: Any, queues: tuple[QueueSpec, ...],
           spec_type: type[FleetSpec]) -> dict[str, Any]:
    """The fields every fleet has, typed, defaulted and checked."""
    if not isinstance(raw, Mapping):
        raise SpecError(where, "must be a mapping of fleet fields ({} for every default)", raw)
    _reject_unknown(where, raw, spec_type)
    names = [q.name for q in queues]
    fleet_queues = _string_list(where, raw, "queues") if "queues" in raw else names
    unknown = [n for n in fleet_queues if n not in names]
    if not fleet_queues or unknown or len(set(fleet_queues)) != len(fleet_queues):
        raise SpecError(f"{where}.queues", f"must name one or more of the queues {names}, "
                        "each once", fleet_queues)
    concurrency = _typed(where, raw, "concurrency", int, 2)
    explicit_target = _typed(where, raw, "target_backlog_per_worker", (int, type(None)), None)
    common = {
        "queues": tuple(fleet_queues),
        "min_capacity": _typed(where, raw, "min_capacity", int, 0),
        "max_capacity": _typed(where, raw, "max_capacity", int, 2),
        "concurrency": concurrency,
        "target_backlog_per_worker": target_backlog_per_worker(
            concurrency=concurrency, prefetch_multiplier=BUNDLED_PREFETCH,
            explicit=explicit_target),
        "image_uri": _typed(where, raw, "image_uri", (str, type(None)), None),
        "image_directory": _typed(where, raw, "image_directory", str, "."),
    }
    rules.check_fleet(f"{where}.", **{k: common[k] for k in (
        "min_capacity", "max_capacity", "concurrency", "target_backlog_per_worker")})
    if common["image_uri"] is not None and "image_directory" in raw:
        raise SpecError(f"{where}.image_directory", "must not be set with image_uri (the "
                        "image is either run as it is or built)", common["image_directory"])
    if common["image_uri"] is not None and not _IMAGE_URI.match(common["image_uri"]):
        raise SpecError(f"{where}.image_uri", "must be an image reference "
                        "(REGISTRY/REPOSITORY:TAG or @sha256:DIGEST), no spaces", common["image_uri"])
    if common["image_uri"] is None and \
            not (Path(common["image_directory"]) / "Dockerfile").is_file():
        raise SpecError(f"{where}.image_directory", "must be a directory holding a Dockerfile "
                        "(or set image_uri)", common["image_directory"])
    return common


def _backoff_policy(where: str, raw: Any) -> Mapping[int, int]:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{where}.backoff_policy",
                        "must be a mapping of attempt number to delay seconds", raw)
    policy: dict[int, int] = {}
    for key, delay in raw.items():
        try:
            attempt = int(key)
        except (TypeError, ValueError):
            raise SpecError(f"{where}.backoff_policy", "keys must be attempt numbers", key) from None
        if attempt in policy:
            raise SpecError(f"{where}.backoff_policy", "names an attempt twice", key)
        policy[attempt] = delay
    return MappingProxyType(policy)


def _string_list(where: str, raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where}.{key}", "must be a list of non-empty strings", value)
    return value


def _typed(where: str, raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
           default: Any) -> Any:
    value = raw.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int in Python; a spec that says "visibility_timeout": true is a mistake
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise SpecError(f"{where}.{key}", f"must be of type {names}", value)
    return value


def _reject_unknown(where: str, raw: Mapping[str, Any], spec_type: type) -> None:
    known = {f.name for f in fields(spec_type)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpecError(where, f"has unknown field(s); known fields are {sorted(known)}", unknown)
