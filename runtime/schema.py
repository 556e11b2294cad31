"""Names shared by the stack and the runtime: the identity of the emitted worker
configuration document, the transports it may be written for, and the shape of the
revocations table."""

SCHEMA = "celery-sqs-kit/worker-config"
VERSION = 1
OUTPUT_KEY = "WorkerConfig"
"""The CloudFormation output (and so the ``cdk deploy --outputs-file`` key) holding it."""

REVOCATION_SHARD_ATTRIBUTE = "shard"
REVOCATION_TASK_ATTRIBUTE = "task_id"
REVOCATION_EXPIRES_ATTRIBUTE = "expires"
"""The revocations table (``runtime.revocation``): one item per revoked task, keyed by
``shard`` (partition, string) and ``task_id`` (sort, string); ``expires`` (number, epoch
seconds) is its TTL attribute and the sort key of :data:`REVOCATIONS_LIVE_INDEX`. These
three are the only attributes the producer role may write."""
REVOCATION_SHARD = "revoked"
"""The one partition every revocation is written to: the producer role may write items
of this partition only (``dynamodb:LeadingKeys``)."""
REVOCATIONS_LIVE_INDEX = "live"
"""The local secondary index (``shard``, ``expires``, keys only) that workers query for
the revocations not yet expired: a read returns live entries only, whatever expired ones
TTL has not removed yet."""

BUNDLED, STOCK = "bundled", "stock"
TRANSPORT_NAMES = (BUNDLED, STOCK)
"""Which transport consumes the queues: the spec's ``transport`` (its timing rules depend
on it), carried in the document as ``transport`` and rendered as ``broker_transport``.
``bundled`` is ``runtime.transport``, whose heartbeat keeps held messages invisible;
``stock`` is kombu's own SQS transport, which does not."""
