"""Is the bundled transport (``runtime.transport:Transport``) a drop-in for stock kombu
5.7's SQS transport (``kombu.transport.SQS:Transport``)?

Every scenario is one function run once per transport, through kombu's public API
only (``Connection``, ``Producer``, ``Consumer``, ``SimpleQueue``, ``Queue``, and
kombu's event loop, the ``Hub``, where Celery's way of consuming matters), against
moto on loopback with a recording proxy in between. Each builds an *observation*:
what was delivered and in what order, how acks, rejects and requeues ended, what is
left in the queues (read with plain boto3), which credentials signed the requests
and which SQS actions were called. The observation must equal the expected one:
stock's, or, where the bundled transport's manual (its module docstring) documents
an intended difference, what the manual says, with the difference named in
``DOCUMENTED`` and in the expectation.

Messages are consumed two ways where it matters: by ``Connection.drain_events`` (the
plain kombu way) and on the ``Hub`` (Celery's). The two take different paths through
both transports (stock receives synchronously in one and through its asynchronous
client in the other; the bundled overrides the hub path), so the scenarios about
receiving, holding and giving back messages run in both.

Two stock behaviours shape the scenarios:

* A ``no_ack=True`` consumer driven by ``Connection.drain_events`` fails on stock with
  ``AttributeError: 'NoneType' object has no attribute '_current_http_client'``:
  stock deletes no-ack messages through its asynchronous client, which needs a hub.
  The no-ack scenario therefore runs on the hub, as Celery does.
* ``session_token`` in the transport options is documented by stock but never read:
  neither transport sends a token; the scenario records that.
"""

from __future__ import annotations

import json
import os
import time
import traceback

import pytest
from kombu import Exchange, Producer, Queue
from kombu.asynchronous import Hub, set_event_loop

from local_aws.fleet import sqs_client
from local_aws.moto_server import ACCOUNT_ID
from tests.integration.drop_in import (
    BAD_KEY, BUNDLED, ENV_KEY, ENV_SECRET, STOCK, URL_KEY, URL_SECRET, Receiving,
    RecordingProxy, connect, counts, describe, drain_raw, failure, kombu_body, predefined,
    queue_names, unique, wait_counts, wire,
)

pytestmark = [pytest.mark.integration,
              # stock's asynchronous client on pycurl (the hub scenarios)
              pytest.mark.filterwarnings("ignore::DeprecationWarning:kombu.asynchronous.http.curl")]

DOCUMENTED = {
    "session token": "session_token in the transport options is sent with the broker URL's "
                     "keys (stock documents it but never reads it)",
    "basic_get without ack": "basic_get(no_ack=True) deletes the message (stock leaves it "
                             "in flight, to come back after its visibility timeout)",
    "batched deletes": "acks (and no-ack deletes) are DeleteMessageBatch calls, sent "
                       "ack_flush_delay (0.1 s) after the first ack or on close",
    "no redrive lookup": "whether a queue has a DLQ comes from predefined_queues[q]"
                         "['dead_letter_queue'], so no GetQueueAttributes call",
    "reject to DLQ": "a message rejected without requeue goes to the queue's DLQ at once "
                     "(SendMessageBatch; attributes kit_reason, kit_source_queue) and is "
                     "deleted",
    "rejected, no DLQ": "without a DLQ a rejected message is left for SQS to redeliver "
                        "(stock deletes it when the queue has no redrive policy)",
    "poison to DLQ": "a message that is not a kombu message is sent to the DLQ with a "
                     "reason and deleted, never delivered",
    "release at once": "requeued messages, and unacked ones at shutdown, are made visible "
                       "at once (ChangeMessageVisibilityBatch, 0) instead of after "
                       "wait_time_seconds",
    "visibility heartbeat": "held messages are kept invisible past the visibility timeout",
    "round-trip window": "on Celery's event loop a consumer acking fast may hold its "
                         "prefetch_count plus what it runs in one receive round trip, at "
                         "most prefetch_count again (runtime.receive_window): how much "
                         "depends on the measured round trip, so on the machine's load",
    "typed errors": "a missing queue, access denied and bad credentials become "
                    "QueueNotFound, QueueAccessDenied, CredentialsError when publishing",
}

def both():
    """Parametrize ``transport`` over stock and bundled."""
    return pytest.mark.parametrize("transport", [STOCK, BUNDLED], ids=["stock", "bundled"])


def cases(argname: str, values: list[str]):
    """Parametrize (``argname``, ``transport``) over values x transports."""
    return pytest.mark.parametrize(
        f"{argname},transport", [(v, t) for v in values for t in (STOCK, BUNDLED)],
        ids=[f"{v}-{'stock' if t == STOCK else 'bundled'}" for v in values
             for t in (STOCK, BUNDLED)])


def expect(transport: str, stock: dict, **documented) -> dict:
    """Stock's observation; for the bundled, with the keys the manual changes."""
    return stock if transport == STOCK else {**stock, **documented}


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    """No AWS configuration but the URL's keys, also in the environment (the bundled
    transport reads the default chain); no hub unless a test makes one."""
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", URL_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", URL_SECRET)
    set_event_loop(None)
    yield
    set_event_loop(None)


@pytest.fixture
def proxy(moto, request):
    """A proxy of the test's own, so no late call of an earlier test is counted; the
    actions the test called are kept as its ``wire`` property (``--junitxml``)."""
    with RecordingProxy(moto.endpoint_url) as recording:
        yield recording
        request.node.user_properties.append(("wire", wire(recording, exact=True)))


@pytest.fixture
def sqs(moto):
    return sqs_client(moto.endpoint_url)


@pytest.fixture
def hub():
    """kombu's event loop, made current before any channel exists (channels take it then)."""
    loop = Hub()
    set_event_loop(loop)
    yield loop
    loop.close()


def make_queue(sqs, *, fifo: bool = False, visibility: int = 30, redrive: bool = False,
               name: str | None = None) -> dict:
    """A queue (and with ``redrive`` a DLQ and redrive policy, maxReceiveCount 3)."""
    name = name or unique("q") + (".fifo" if fifo else "")
    attrs = {"VisibilityTimeout": str(visibility)}
    if fifo:
        attrs["FifoQueue"] = "true"
    entry = {"name": name}
    if redrive:
        dlq = sqs.create_queue(QueueName=name.replace(".fifo", "") + "-dlq" +
                               (".fifo" if fifo else ""),
                               Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})
        entry["dlq"] = dlq
    entry["url"] = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
    return entry


def direct(name: str) -> Queue:
    return Queue(name, Exchange(name, "direct"), routing_key=name)


def publish(conn, queue: Queue, *bodies, **properties) -> None:
    with Producer(conn) as producer:
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], **properties)


def dead_letters(sqs, url: str) -> list[dict]:
    return [{"payload": _payload(m["Body"]),
             **{k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}}
            for m in drain_raw(sqs, url, attributes=True)]


def _payload(body: str):
    try:
        return kombu_body(body)
    except (ValueError, KeyError):
        return body


def hub_or_none(request, mode: str):
    return request.getfixturevalue("hub") if mode == "hub" else None


# -- (1) queues not predefined ---------------------------------------------------------------

@both()
def test_undeclared_queues_are_created_with_the_transport_options(transport, proxy, sqs):
    name, simple = unique("c"), unique("s")
    queue = direct(name)
    with connect(proxy.port, transport, visibility_timeout=7, queue_tags={"team": "drop-in"},
                 **{"sqs-creation-attributes": {"MessageRetentionPeriod": "3600"}}) as conn:
        declared = queue(conn.default_channel).declare()
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        publish(conn, queue, *({"n": i} for i in range(3)))
        receiving = Receiving(conn, [queue], auto_ack=True)
        delivered = [describe(m) for m in receiving.until(3)]
        receiving.cancel()
        with conn.SimpleQueue(simple) as simple_queue:
            simple_queue.put({"s": 1})
            simple_queue.put({"s": 2})
            got = []
            for _ in range(2):
                message = simple_queue.get(timeout=3)
                got.append(message.payload)
                message.ack()
            try:
                simple_queue.get(block=False)
                empty = False
            except simple_queue.Empty:
                empty = True
    simple_url = sqs.get_queue_url(QueueName=simple)["QueueUrl"]
    observed = {
        "declared": declared,
        "attributes": sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "VisibilityTimeout", "MessageRetentionPeriod"])["Attributes"],
        "tags": sqs.list_queue_tags(QueueUrl=url).get("Tags", {}),
        "delivered": delivered, "simple": got, "simple_empty_after": empty,
        "left": [wait_counts(sqs, url, (0, 0)), wait_counts(sqs, simple_url, (0, 0))],
        "wire": wire(proxy),
    }
    stock_wire = {"CreateQueue": 2, "DeleteMessage": 5, "GetQueueAttributes": 4,
                  "ListQueues": 3, "ReceiveMessage": 1, "SendMessage": 5}
    assert observed == expect(transport, {
        "declared": name, "attributes": {"VisibilityTimeout": "7",
                                           "MessageRetentionPeriod": "3600"},
        "tags": {"team": "drop-in"}, "delivered": [{"n": 0}, {"n": 1}, {"n": 2}],
        "simple": [{"s": 1}, {"s": 2}], "simple_empty_after": True,
        "left": [(0, 0), (0, 0)], "wire": stock_wire,
    }, wire=_batched(stock_wire))  # DOCUMENTED["batched deletes"]


def _batched(stock_wire: dict) -> dict:
    """Stock's calls with its DeleteMessage calls made as DeleteMessageBatch calls."""
    calls = {k: v for k, v in stock_wire.items() if k != "DeleteMessage"}
    return dict(sorted({**calls, "DeleteMessageBatch": 1}.items()))


# -- (2) queue_name_prefix ------------------------------------------------------------------------

@both()
def test_queue_name_prefix(transport, proxy, sqs):
    prefix = unique("p") + "-"
    with connect(proxy.port, transport, queue_name_prefix=prefix) as conn:
        with conn.SimpleQueue("jobs") as simple_queue:
            simple_queue.put({"p": 1})
            message = simple_queue.get(timeout=3)
            payload = message.payload
            message.ack()
    observed = {"queues": queue_names(sqs, prefix), "delivered": payload,
                "list_prefixes": sorted({r["params"].get("QueueNamePrefix")
                                         for r in proxy.of("ListQueues")})}
    assert observed == {"queues": [f"{prefix}jobs"], "delivered": {"p": 1},
                        "list_prefixes": [prefix, f"{prefix}jobs"]}


# -- (3) names rewritten as stock's entity_name does ---------------------------------------------

@both()
def test_queue_names_are_rewritten_as_stock_does(transport, proxy, sqs):
    base = unique("n")
    names = [f"{base}.app@jobs-1", f"{base}.orders.fifo"]
    delivered = {}
    with connect(proxy.port, transport) as conn:
        for name in names:
            with conn.SimpleQueue(name) as simple_queue:
                simple_queue.put({"to": name})
                message = simple_queue.get(timeout=3)
                delivered[name] = message.payload
                message.ack()
    fifo_url = sqs.get_queue_url(QueueName=f"{base}-orders.fifo")["QueueUrl"]
    observed = {"queues": queue_names(sqs, base), "delivered": delivered,
                "fifo": sqs.get_queue_attributes(QueueUrl=fifo_url, AttributeNames=[
                    "FifoQueue"])["Attributes"]}
    assert observed == {"queues": [f"{base}-app_jobs-1", f"{base}-orders.fifo"],
                        "delivered": {name: {"to": name} for name in names},
                        "fifo": {"FifoQueue": "true"}}


# -- (4) credentials ---------------------------------------------------------------------------

@cases("source", ["url", "env", "url_over_env", "session_token"])
def test_credentials(source, transport, proxy, sqs, monkeypatch):
    """Keys in the URL (none in the environment), none in the URL (the environment's,
    the default chain), both (stock prefers the URL's), and ``session_token`` in the
    transport options (documented by stock but never read by it; the bundled sends it
    with the URL's keys: DOCUMENTED["session token"])."""
    q = make_queue(sqs)
    keys, options = (URL_KEY, URL_SECRET), {}
    if source == "url":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    if source in ("env", "url_over_env"):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ENV_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
    if source == "env":
        keys = None
    if source == "session_token":
        options["session_token"] = "FwoGZXIvYXdzEXAMPLETOKEN"
    queue = direct(q["name"])
    with connect(proxy.port, transport, keys=keys,
                 predefined_queues=predefined((q["name"], q["url"])), **options) as conn:
        publish(conn, queue, {"via": source})
        receiving = Receiving(conn, [queue], auto_ack=True)
        delivered = [describe(m) for m in receiving.until(1)]
    observed = {"delivered": delivered, "keys": proxy.keys(), "token_sent": proxy.tokens(),
                "left": wait_counts(sqs, q["url"], (0, 0))}
    assert observed == {"delivered": [{"via": source}],
                        "keys": {ENV_KEY if source == "env" else URL_KEY},
                        "token_sent": {source == "session_token" and transport == BUNDLED},
                        "left": (0, 0)}


# -- (5) predefined queues -----------------------------------------------------------------------

@cases("mode", ["drain", "hub"])
def test_predefined_queues_round_trip_without_control_plane_calls(mode, transport, proxy, sqs,
                                                                   request):
    hub = hub_or_none(request, mode)
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport, predefined_queues=predefined((q["name"], q["url"]))) \
            as conn:
        publish(conn, queue, *({"n": i} for i in range(4)))
        receiving = Receiving(conn, [queue], hub=hub, auto_ack=True)
        delivered = [describe(m) for m in receiving.until(4)]
        receiving.run(0.3)
        receiving.cancel()
    observed = {"delivered": delivered, "left": wait_counts(sqs, q["url"], (0, 0)),
                "wire": wire(proxy)}
    # GetQueueAttributes: kombu's queue_declare (the producer's, the consumer's) asks for
    # the queue's size
    stock_wire = {"DeleteMessage": 4, "GetQueueAttributes": 2, "ReceiveMessage": 1,
                  "SendMessage": 4}
    assert observed == expect(transport, {
        "delivered": [{"n": i} for i in range(4)], "left": (0, 0), "wire": stock_wire,
    }, wire=_batched(stock_wire))  # DOCUMENTED["batched deletes"]


# -- (6) wait_time_seconds -----------------------------------------------------------------------

@cases("wait", ["0", "1"])
def test_wait_time_seconds(wait, transport, proxy, sqs):
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport, wait_time_seconds=int(wait),
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        receiving = Receiving(conn, [queue], auto_ack=True)
        receiving.run(1.0)  # an empty queue first
        publish(conn, queue, {"w": wait})
        delivered = [describe(m) for m in receiving.until(1, timeout=4)]
    observed = {"delivered": delivered,
                "WaitTimeSeconds": sorted({r["params"].get("WaitTimeSeconds")
                                           for r in proxy.of("ReceiveMessage")})}
    assert observed == {"delivered": [{"w": wait}], "WaitTimeSeconds": [int(wait)]}


# -- (7) acknowledgements ------------------------------------------------------------------------

SETTLEMENTS = ["ack", "reject", "reject_with_redrive", "reject_to_dlq", "requeue",
               "reject_requeue"]


def settlement_expected(how: str, transport: str, q: dict) -> dict:
    body = {"how": how}
    stock = {
        "ack": {"left": (0, 0), "dlq": None, "wire": {"DeleteMessage": 1}},
        # deleted: no redrive policy (read with GetQueueAttributes)
        "reject": {"right_after": (0, 0), "left": (0, 0), "dlq": None,
                   "wire": {"DeleteMessage": 1, "GetQueueAttributes": 1}},
        # left in flight: SQS moves it to the DLQ after maxReceiveCount receives
        "reject_with_redrive": {"right_after": (0, 1), "left": (0, 1), "dlq": [],
                                "wire": {"GetQueueAttributes": 1}},
        "reject_to_dlq": {"left": (0, 1), "dlq": [], "wire": {"GetQueueAttributes": 1}},
        # hidden for wait_time_seconds, then delivered again
        "requeue": {"right_after": (0, 1), "redelivered": [body], "left": (0, 0),
                    "dlq": None, "visibility_set": [1],
                    "wire": {"ChangeMessageVisibility": 1, "DeleteMessage": 1,
                             "ReceiveMessage": 1}},
    }
    stock["reject_requeue"] = stock["requeue"]
    bundled = {
        "ack": {"wire": {"DeleteMessageBatch": 1}},  # DOCUMENTED["batched deletes"]
        # DOCUMENTED["rejected, no DLQ"], DOCUMENTED["no redrive lookup"]
        "reject": {"right_after": (0, 1), "left": (0, 1), "wire": {}},
        "reject_with_redrive": {"wire": {}},  # DOCUMENTED["no redrive lookup"]
        # DOCUMENTED["reject to DLQ"]
        "reject_to_dlq": {"left": (0, 0), "dlq": [{
            "payload": body, "kit_reason": "rejected without requeue",
            "kit_source_queue": q["name"]}], "wire": {"DeleteMessageBatch": 1,
                                                      "SendMessageBatch": 1}},
        # DOCUMENTED["release at once"], DOCUMENTED["batched deletes"]
        "requeue": {"right_after": (1, 0), "visibility_set": [0],
                    "wire": {"ChangeMessageVisibilityBatch": 1,
                                                    "DeleteMessageBatch": 1,
                                                    "ReceiveMessage": 1}},
    }
    bundled["reject_requeue"] = bundled["requeue"]
    return expect(transport, stock[how], **bundled[how])


@cases("how", SETTLEMENTS)
def test_settlement(how, transport, proxy, sqs):
    """ack, reject(requeue=False) without and with a redrive policy (and with the DLQ also
    named in predefined_queues, as the kit's configuration does), requeue(), and
    reject(requeue=True); wait_time_seconds=1, which stock uses as a requeue's delay.
    ``right_after`` is read once it is what is expected (within a generous deadline:
    not for acks and DLQ moves, which the bundled sends up to ack_flush_delay later);
    that a requeue is visible at once, not after wait_time_seconds, is the visibility
    the transport set (``visibility_set``), not a race against the clock."""
    q = make_queue(sqs, redrive=how in ("reject_with_redrive", "reject_to_dlq"))
    expected = settlement_expected(how, transport, q)
    extra = {"dead_letter_queue": q["dlq"]} if how == "reject_to_dlq" else {}
    queue = direct(q["name"])
    observed = {}
    with connect(proxy.port, transport, wait_time_seconds=1,
                 predefined_queues=predefined((q["name"], q["url"]), **extra)) as conn:
        publish(conn, queue, {"how": how})
        receiving = Receiving(conn, [queue], prefetch_count=1)
        (message,) = receiving.until(1)
        proxy.reset()
        {"ack": message.ack, "reject": message.reject,
         "reject_with_redrive": message.reject, "reject_to_dlq": message.reject,
         "requeue": message.requeue,
         "reject_requeue": lambda: message.reject(requeue=True)}[how]()
        if "right_after" in expected:
            observed["right_after"] = wait_counts(sqs, q["url"], expected["right_after"],
                                                  timeout=10)
        if how.endswith("requeue"):
            again = receiving.until(2, timeout=10)[1:]
            observed["visibility_set"] = visibility_changes(proxy)
            observed["redelivered"] = [describe(m) for m in again]
            for m in again:
                m.ack()
        receiving.cancel()
    observed.update(left=wait_counts(sqs, q["url"], expected["left"], timeout=1),
                    dlq=dead_letters(sqs, q["dlq"]) if "dlq" in q else None, wire=wire(proxy))
    assert observed == expected


@cases("how", ["requeue", "reject_requeue"])
def test_a_requeued_message_is_back_when_requeue_returns(how, transport, proxy, sqs):
    """Issue 18 item 9, after kombu's own ``t/integration/test_sqs.py``: put, get,
    ``requeue()`` (or ``reject(requeue=True)``), and get again at once (no wait, no
    long poll), several times over: the message is back when the call returns."""
    q = make_queue(sqs)
    queue = direct(q["name"])
    got = []
    with connect(proxy.port, transport,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        with conn.SimpleQueue(queue) as simple_queue:
            for n in range(5):
                simple_queue.put({"n": n})
                message = simple_queue.get(timeout=5)
                message.requeue() if how == "requeue" else message.reject(requeue=True)
                again = simple_queue.get(block=False)
                got.append(again.payload)
                again.ack()
    assert got == [{"n": n} for n in range(5)]
    assert wait_counts(sqs, q["url"], (0, 0)) == (0, 0)


@both()
def test_basic_get(transport, proxy, sqs):
    """SimpleQueue.get(block=False) and Queue.get() (basic_get), with and without ack."""
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        publish(conn, queue, *({"g": i} for i in range(3)))
        got = []
        with conn.SimpleQueue(queue) as simple_queue:
            message = simple_queue.get(block=False)
            got.append(message.payload)
            message.ack()
            bound = queue(conn.default_channel)
            message = bound.get()
            got.append(message.payload)
            message.ack()
            message = bound.get(no_ack=True)
            got.append(message.payload)
            got.append(bound.get())
            try:
                simple_queue.get(block=False)
                got.append("not empty")
            except simple_queue.Empty:
                got.append("Empty")
    # basic_get(no_ack=True) never deletes on stock: the message stays in flight (and
    # comes back); the bundled deletes it (DOCUMENTED["basic_get without ack"])
    left = (0, 1) if transport == STOCK else (0, 0)
    observed = {"got": got, "left": wait_counts(sqs, q["url"], left)}
    assert observed == {"got": [{"g": 0}, {"g": 1}, {"g": 2}, None, "Empty"], "left": left}


@both()
def test_purge(transport, proxy, sqs):
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        publish(conn, queue, *({"p": i} for i in range(3)))
        purged = queue(conn.default_channel).purge()
    # stock's _purge returns the sum of ten size reads (3 messages: 30), a stock quirk
    assert {"purged": purged, "left": counts(sqs, q["url"])} == {"purged": 30, "left": (0, 0)}


@cases("queues", ["created", "predefined"])
def test_queue_delete(queues, transport, proxy, sqs):
    """Queue.delete() deletes a queue the transport created; predefined queues are kept."""
    if queues == "predefined":
        q = make_queue(sqs)
        options = {"predefined_queues": predefined((q["name"], q["url"]))}
    else:
        q, options = {"name": unique("x")}, {}
    queue = direct(q["name"])
    with connect(proxy.port, transport, **options) as conn:
        bound = queue(conn.default_channel)
        bound.declare()
        before = queue_names(sqs, q["name"])
        bound.delete()
        after = queue_names(sqs, q["name"])
    assert {"before": before, "after": after} == {
        "before": [q["name"]], "after": [q["name"]] if queues == "predefined" else []}


@both()
def test_no_ack_consumer(transport, proxy, sqs, hub):
    """On the hub: with drain_events stock cannot delete no-ack messages (see module doc)."""
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        publish(conn, queue, *({"a": i} for i in range(3)))
        receiving = Receiving(conn, [queue], hub=hub, no_ack=True)
        delivered = [describe(m) for m in receiving.until(3)]
        receiving.run(0.5)  # stock's deletes run on the hub
        receiving.cancel()
    observed = {"delivered": delivered, "left": wait_counts(sqs, q["url"], (0, 0)),
                "wire": {k: v for k, v in wire(proxy).items() if k.startswith("Delete")}}
    assert observed == expect(transport, {
        "delivered": [{"a": i} for i in range(3)], "left": (0, 0),
        "wire": {"DeleteMessage": 3}},
        wire={"DeleteMessageBatch": 1})  # DOCUMENTED["batched deletes"]


@cases("mode", ["drain", "hub"])
def test_prefetch_count_limits_deliveries(mode, transport, proxy, sqs, request):
    """Consumer(prefetch_count=2), then basic_qos(prefetch_count=1) via Consumer.qos."""
    hub = hub_or_none(request, mode)
    q = make_queue(sqs)
    queue = direct(q["name"])
    stages = []
    with connect(proxy.port, transport,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        publish(conn, queue, *({"q": i} for i in range(6)))
        receiving = Receiving(conn, [queue], hub=hub, prefetch_count=2)

        def stage(expected: int) -> None:
            receiving.until(expected)
            receiving.run(0.4)  # time for more than allowed to arrive
            stages.append({"delivered": len(receiving.messages),
                           "in_flight": wait_counts(sqs, q["url"], (6 - expected, expected -
                                                                   acked[0]))[1]})

        acked = [0]
        stage(2)
        for m in receiving.messages[:2]:
            m.ack()
        acked[0] = 2
        stage(4)
        receiving.consumer.qos(prefetch_count=1)
        for m in receiving.messages[2:4]:
            m.ack()
        acked[0] = 4
        stage(5)
        for m in receiving.messages[4:]:
            m.ack()
        receiving.cancel()
    if transport == BUNDLED and mode == "hub":  # DOCUMENTED["round-trip window"]
        for reached, window, seen in zip((2, 4, 5), (2, 2, 1), stages):
            assert reached <= seen["delivered"] and seen["in_flight"] <= 2 * window, stages
        return
    assert stages == [{"delivered": 2, "in_flight": 2}, {"delivered": 4, "in_flight": 2},
                      {"delivered": 5, "in_flight": 1}]


# -- (8) FIFO -----------------------------------------------------------------------------------

@both()
def test_fifo_group_and_deduplication_ids(transport, proxy, sqs):
    q = make_queue(sqs, fifo=True)
    queue = direct(q["name"])
    with connect(proxy.port, transport,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        with Producer(conn) as producer:
            for n, group, dedup in [(0, "g1", "d0"), (1, "g1", "d1"), (2, "g1", "d1"),
                                    (3, None, "d3")]:
                properties = {"MessageDeduplicationId": dedup}
                if group:
                    properties["MessageGroupId"] = group
                producer.publish({"n": n}, exchange=queue.exchange,
                                 routing_key=queue.routing_key, declare=[queue], **properties)
        raw = sorted(((kombu_body(m["Body"])["n"], m["Attributes"]["MessageGroupId"],
                       m["Attributes"]["MessageDeduplicationId"])
                      for m in drain_raw(sqs, q["url"], attributes=True)))
        publish(conn, queue, *({"n": n} for n in range(6)), MessageGroupId="g2")
        receiving = Receiving(conn, [queue], auto_ack=True)
        order = [describe(m)["n"] for m in receiving.until(6)]
    observed = {"raw": raw, "order": order, "left": wait_counts(sqs, q["url"], (0, 0))}
    assert observed == {"raw": [(0, "g1", "d0"), (1, "g1", "d1"), (3, "default", "d3")],
                        "order": list(range(6)), "left": (0, 0)}


# -- (9) exchanges ------------------------------------------------------------------------------

@cases("kind", ["direct", "topic"])
def test_direct_and_topic_routing(kind, transport, proxy, sqs):
    qa, qb = make_queue(sqs), make_queue(sqs)
    exchange = Exchange(unique("x"), kind)
    keys = {"direct": ("a", "b", ["a", "b", "c"]),
            "topic": ("jobs.*", "logs.#", ["jobs.x", "logs.a.b", "jobs.x.y"])}[kind]
    bound_a, bound_b = Queue(qa["name"], exchange, routing_key=keys[0]), \
        Queue(qb["name"], exchange, routing_key=keys[1])
    with connect(proxy.port, transport, predefined_queues=predefined(
            (qa["name"], qa["url"]), (qb["name"], qb["url"]))) as conn:
        with Producer(conn) as producer:
            for key in keys[2]:
                producer.publish({"key": key}, exchange=exchange, routing_key=key,
                                 declare=[bound_a, bound_b])
    observed = {"a": [kombu_body(m["Body"]) for m in drain_raw(sqs, qa["url"])],
                "b": [kombu_body(m["Body"]) for m in drain_raw(sqs, qb["url"])]}
    assert observed == {"a": [{"key": keys[2][0]}], "b": [{"key": keys[2][1]}]}


@both()
def test_fanout_through_sns(transport, proxy, sqs):
    """supports_fanout: the exchange is an SNS topic, each consuming queue subscribed (moto
    implements SNS and its delivery to SQS)."""
    exchange = Exchange(unique("fx"), "fanout")
    queues = [Queue(unique("fa"), exchange), Queue(unique("fb"), exchange)]
    with connect(proxy.port, transport, supports_fanout=True) as conn:
        for q in queues:
            q(conn.default_channel).declare()
        receiving = Receiving(conn, queues, auto_ack=True)
        with Producer(conn) as producer:
            producer.publish({"fan": 1}, exchange=exchange, routing_key="")
        receiving.until(2, timeout=4)
        got = sorted((m.delivery_info["routing_key"] or "", describe(m)["fan"])
                     for m in receiving.messages)
        receiving.cancel()
    observed = {"deliveries": len(got), "payloads": [g[1] for g in got],
                "sns": sorted(k for k in wire(proxy) if k in {"CreateTopic", "Subscribe",
                                                              "Publish"})}
    assert observed == {"deliveries": 2, "payloads": [1, 1],
                        "sns": ["CreateTopic", "Publish", "Subscribe"]}


# -- (10) bad input -----------------------------------------------------------------------------

def _code(error_type: str, message: str) -> str:
    for code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
                 "InvalidClientTokenId", "must be defined in 'predefined_queues'"):
        if code in message:
            return code
    return message


BAD = ["missing_url", "undefined_queue", "wrong_region", "bad_credentials"]


@cases("bad", BAD)
def test_bad_input_fails_fast(bad, transport, proxy, sqs, moto, monkeypatch, request):
    """Publishing to a predefined URL with no queue, to a queue not among the predefined
    ones, with the wrong region, and with keys AWS does not know: what is raised, and
    that it comes within seconds."""
    q = make_queue(sqs)
    name, url, keys, options = q["name"], q["url"], (URL_KEY, URL_SECRET), {}
    target = name
    if bad == "missing_url":
        url = f"http://localhost:{moto.port}/{ACCOUNT_ID}/{unique('gone')}"
    elif bad == "undefined_queue":
        target = unique("undefined")
    elif bad == "wrong_region":
        options["region"] = "eu-west-1"
    elif bad == "bad_credentials":
        keys = (BAD_KEY, "badsecret")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", BAD_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "badsecret")
    with connect(proxy.port, transport, keys=keys, predefined_queues=predefined((name, url)),
                 **options) as conn:
        with Producer(conn) as producer:
            failed = failure(lambda: producer.publish({"bad": bad}, routing_key=target))
    request.node.user_properties.append(("failure", failed))
    observed = {"type": failed["type"], "code": _code(failed["type"], failed["message"]),
                "is_client_error": failed["client_error"], "within_5s": failed["seconds"] < 5,
                "send_attempts": proxy.actions()["SendMessage"]}
    stock = {
        "missing_url": ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", True),
        "undefined_queue": ("UndefinedQueueException", "must be defined in 'predefined_queues'",
                            False),
        "wrong_region": ("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", True),
        "bad_credentials": ("ClientError", "InvalidClientTokenId", True),
    }[bad]
    # DOCUMENTED["typed errors"]: the kit's errors, which are not botocore ClientErrors
    bundled = {"missing_url": ("QueueNotFound", False), "wrong_region": ("QueueNotFound", False),
               "bad_credentials": ("CredentialsError", False),
               "undefined_queue": ("UndefinedQueueException", False)}[bad]
    assert observed == {"type": stock[0] if transport == STOCK else bundled[0],
                        "code": stock[1],
                        "is_client_error": stock[2] if transport == STOCK else bundled[1],
                        "within_5s": True,  # and without retrying:
                        "send_attempts": 0 if bad == "undefined_queue" else 1}


# -- (11) backoff_policy / backoff_tasks ---------------------------------------------------------

@both()
def test_backoff_policy_and_tasks(transport, proxy, sqs):
    """A rejected task listed in backoff_tasks stays in the queue, hidden for
    backoff_policy[receive count] seconds, then comes again (another task is acked)."""
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport, predefined_queues=predefined(
            (q["name"], q["url"]), backoff_policy={1: 1, 2: 1},
            backoff_tasks=["tasks.backoff"])) as conn:
        with Producer(conn) as producer:
            for task in ("tasks.backoff", "tasks.other"):
                producer.publish({"task": task}, exchange=queue.exchange,
                                 routing_key=queue.routing_key, declare=[queue],
                                 headers={"task": task})
        receiving = Receiving(conn, [queue], prefetch_count=2)
        first = {describe(m)["task"]: m for m in receiving.until(2)}
        proxy.reset()
        first["tasks.backoff"].reject()
        first["tasks.other"].ack()
        right_after = wait_counts(sqs, q["url"], (0, 1))
        again = receiving.until(3, timeout=4)[2:]
        observed = {
            "delivered": sorted(first), "right_after": right_after,
            "visibility_set": visibility_changes(proxy),
            "again": [(describe(m)["task"],
                       m.delivery_info["sqs_message"]["Attributes"]["ApproximateReceiveCount"])
                      for m in again],
        }
        for m in again:
            m.ack()
    observed["left"] = wait_counts(sqs, q["url"], (0, 0))
    assert observed == {"delivered": ["tasks.backoff", "tasks.other"], "right_after": (0, 1),
                        "visibility_set": [1], "again": [("tasks.backoff", "2")],
                        "left": (0, 0)}


def visibility_changes(proxy) -> list[int]:
    """The visibility timeouts set, by ChangeMessageVisibility or its batch form."""
    found = []
    for r in proxy.requests:
        if r["action"] == "ChangeMessageVisibility":
            found.append(r["params"].get("VisibilityTimeout"))
        elif r["action"] == "ChangeMessageVisibilityBatch":
            found.extend(e.get("VisibilityTimeout") for e in r["params"].get("Entries", []))
    return found


# -- documented differences that need the receive path -------------------------------------------

@cases("mode", ["drain", "hub"])
def test_held_message_past_its_visibility_timeout(mode, transport, proxy, sqs, request):
    """A message held unacked for longer than the queue's 2 s visibility timeout: stock
    lets it become visible again; the bundled keeps it invisible
    (DOCUMENTED["visibility heartbeat"])."""
    hub = hub_or_none(request, mode)
    q = make_queue(sqs, visibility=2)
    queue = direct(q["name"])
    with connect(proxy.port, transport, visibility_timeout=2, predefined_queues=predefined(
            (q["name"], q["url"]), visibility_timeout=2)) as conn:
        publish(conn, queue, {"held": True})
        receiving = Receiving(conn, [queue], hub=hub, prefetch_count=1)
        receiving.until(1)
        receiving.run(3.2)
        held = counts(sqs, q["url"])
        deliveries = len(receiving.messages)
        calls = sorted(k for k in wire(proxy) if "Visibility" in k)  # before close releases
        receiving.cancel()
    observed = {"deliveries": deliveries, "after_3s": held, "visibility_calls": calls}
    assert observed == expect(transport, {"deliveries": 1, "after_3s": (1, 0),
                                          "visibility_calls": []},
                              after_3s=(0, 1), visibility_calls=["ChangeMessageVisibilityBatch"])


@cases("mode", ["drain", "hub"])
def test_poison_message(mode, transport, proxy, sqs, request):
    """A message that is not a kombu message, next to a good one, consumed with auto-ack:
    stock delivers it (and the ack loses it); the bundled moves it to the DLQ
    (DOCUMENTED["poison to DLQ"])."""
    hub = hub_or_none(request, mode)
    q = make_queue(sqs, redrive=True)
    queue = direct(q["name"])
    sqs.send_message(QueueUrl=q["url"], MessageBody="{not json: poison")
    expected = expect(transport, {
        "delivered": ["{not json: poison", {"good": True}], "left": (0, 0), "dlq": []},
        delivered=[{"good": True}], dlq=[{
            "payload": "{not json: poison", "kit_reason": "undecodable: not a kombu message "
            "(the body is not JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1))",
            "kit_source_queue": q["name"]}])
    with connect(proxy.port, transport, predefined_queues=predefined(
            (q["name"], q["url"]), dead_letter_queue=q["dlq"])) as conn:
        publish(conn, queue, {"good": True})
        receiving = Receiving(conn, [queue], hub=hub, auto_ack=True)
        receiving.until(len(expected["delivered"]))
        receiving.run(0.3)  # time for anything more
        delivered = [describe(m) for m in receiving.messages]
        receiving.cancel()
    observed = {"delivered": delivered, "left": wait_counts(sqs, q["url"], (0, 0)),
                "dlq": dead_letters(sqs, q["dlq"])}
    assert observed == expected


@cases("mode", ["drain", "hub"])
def test_unacked_messages_at_close(mode, transport, proxy, sqs, request):
    """Four prefetched, one acked, then the connection closes: stock hides the other three
    for wait_time_seconds (1 s) more; the bundled makes them visible at once
    (DOCUMENTED["release at once"]). Either way all three come back."""
    hub = hub_or_none(request, mode)
    q = make_queue(sqs)
    queue = direct(q["name"])
    with connect(proxy.port, transport, wait_time_seconds=1,
                 predefined_queues=predefined((q["name"], q["url"]))) as conn:
        publish(conn, queue, *({"u": i} for i in range(4)))
        receiving = Receiving(conn, [queue], hub=hub, prefetch_count=4)
        receiving.until(4)
        receiving.messages[0].ack()
    at_close = counts(sqs, q["url"])
    later = wait_counts(sqs, q["url"], (3, 0), timeout=3)
    observed = {"at_close": at_close, "later": later}
    assert observed == expect(transport, {"at_close": (0, 3), "later": (3, 0)},
                              at_close=(3, 0))


@cases("stop", ["cancel", "close"])
def test_receive_in_flight_when_the_consumer_stops(stop, transport, proxy, sqs, hub):
    """On the hub, a long poll is in flight when the consumer is cancelled or the
    connection closed, and a message arrives in it; the event loop runs on, as a worker's
    does. After a cancel both give the message back at once (stock 5.7's release of late
    messages). After a close stock cannot (its late callback fails: the channel has no
    connection any more), so the message stays hidden for the visibility timeout; the
    bundled gives it back (DOCUMENTED["release at once"]). The long poll (5 s) outlasts
    the steps between its start and the message; the message's receive count then shows
    the poll took it (and gave it back) before the test received it."""
    q = make_queue(sqs)
    queue = direct(q["name"])
    conn = connect(proxy.port, transport, wait_time_seconds=5,
                   predefined_queues=predefined((q["name"], q["url"])))
    late_callback_failed: list[AttributeError] = []

    def step() -> None:
        try:
            hub.run_once()
        except AttributeError as error:
            # Only stock's late callback after close may fail, and only as it does.
            if not (transport == STOCK and stop == "close" and stocks_late_callback(error)):
                raise
            late_callback_failed.append(error)
    try:
        receiving = Receiving(conn, [queue], hub=hub)
        receiving.run_until(lambda: proxy.of("ReceiveMessage"), 10, "a long poll on the wire")
        receiving.cancel()
        if stop == "close":
            conn.close()
        sqs.send_message(QueueUrl=q["url"], MessageBody="late")
        deadline = time.monotonic() + 15
        while not (proxy.all_answered("ReceiveMessage") and (
                late_callback_failed or counts(sqs, q["url"]) == (1, 0))):
            assert time.monotonic() < deadline, "the late message was neither given back " \
                                                "nor did stock's late callback run"
            step()
        observed = {"delivered": len(receiving.messages), "after": counts(sqs, q["url"]),
                    "late_callback_failed": bool(late_callback_failed)}
    finally:
        conn.close()
    if observed["after"] == (1, 0):
        (late,) = sqs.receive_message(QueueUrl=q["url"], WaitTimeSeconds=0,
                                      MessageSystemAttributeNames=["ApproximateReceiveCount"]
                                      )["Messages"]
        observed["receives"] = int(late["Attributes"]["ApproximateReceiveCount"])
    given_back = {"delivered": 0, "after": (1, 0), "late_callback_failed": False,
                  "receives": 2}  # the poll's and the test's own
    assert observed == expect(transport, given_back if stop == "cancel" else {
        "delivered": 0, "after": (0, 1), "late_callback_failed": True}, **given_back)


def stocks_late_callback(error: AttributeError) -> bool:
    """Stock's callback for a receive that returns after the connection closed
    (``Channel._on_messages_ready`` in kombu 5.7's SQS transport): the channel's
    ``connection`` is gone."""
    innermost = traceback.extract_tb(error.__traceback__)[-1]
    return str(error) == "'NoneType' object has no attribute '_callbacks'" and \
        innermost.name == "_on_messages_ready" and \
        innermost.filename.endswith(os.path.join("kombu", "transport", "SQS", "__init__.py"))
