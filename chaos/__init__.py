"""``make chaos``: the kit's fault-injection run (issue 11).

N tasks (10,000 by default) are published, paced, to a fresh fauxqs while at
least three real ``celery worker`` processes (prefork and threads) consume them
through the bundled transport, and a seeded schedule breaks things at random
moments: workers killed with SIGKILL mid-task or warm-stopped with SIGTERM
(each replaced at once), prefork pool processes killed, connections reset
after SQS acted, answers stalled past the read timeout, 500/503 and throttling
bursts, long polls that never return, the container-credentials endpoint down
for longer than a token lives, and bad inputs (poison bodies, unknown task
names). Then the queue is drained and every task reconciled: sent, completed,
lost (must be 0), duplicate executions with the fault behind each, bad inputs
found in the DLQ. The outcome goes to ``bench/chaos.json``.

Modules: ``workload`` and ``schedule`` (seeded, pure: the same seed gives the
same tasks and faults), ``reconcile`` (pure), ``tasks`` (the recording task),
``publish`` (the publisher process), ``workers`` (the fleet of slots),
``faults`` (applying each fault), ``run`` (the stage and the drain), ``report``.
"""
