"""The chaos run's outcome as ``bench/chaos.json`` and as a table for people."""

from __future__ import annotations

from collections import Counter
from typing import Any

from chaos.run import Outcome
from chaos.schedule import FAULT_KINDS, digest

DUPLICATES_LISTED = 200
"""Duplicate tasks listed one by one in the JSON (all are counted)."""


def as_json(outcome: Outcome, *, command: str, date: str) -> dict[str, Any]:
    c, r = outcome.config, outcome.reconciliation
    sent = outcome.sent_ids
    applied = Counter(f.kind for f in outcome.applied)
    return {
        "date": date,
        "command": command,
        "seed": c.seed,
        "schedule_digest": digest(outcome.schedule),
        "tasks": c.tasks,
        "sent": r.sent,
        "completed": r.completed,
        "lost": len(r.lost),
        "lost_tasks": r.lost,
        "duplicates": r.duplicates,
        "duplicate_rate": round(r.duplicate_rate, 5),
        "duplicates_by_cause": r.duplicates_by_cause,
        "completed_twice": r.completed_twice,
        "extra_copies_published": r.extra_copies,
        "duplicate_tasks": [
            {"id": d.task_id, "executions": d.executions, "workers": list(d.workers),
             "completed": d.completed, "causes": list(d.causes)}
            for d in r.duplicate_tasks[:DUPLICATES_LISTED]],
        "publishes_raised": len(outcome.publish_failed),
        "publish_failures": dict(sorted(outcome.publish_failed.items())[:50]),
        "publish_gave_up": sorted(set(outcome.publish_failed) - sent),
        "executed_unsent": r.executed_unsent,
        "bad_inputs": {"sent": r.bad_inputs_sent, "in_dlq": r.bad_inputs_in_dlq,
                       "executed": r.bad_inputs_executed},
        "dead_letters": len(outcome.dead_letters),
        "faults": {kind: applied[kind] for kind in FAULT_KINDS if applied[kind]},
        "faults_applied": [f.label for f in outcome.applied],
        "requests_faulted": outcome.faulted_requests,
        "requests": outcome.requests,
        "credentials": {"token_lifetime_s": c.token_lifetime,
                        "outage_s": c.outage_seconds, "tokens_minted": outcome.tokens_minted,
                        "fetches_refused_while_down": outcome.credential_fetches_refused},
        "workers": c.workers,
        "pools": list(c.pools),
        "concurrency": c.concurrency,
        "worker_processes_started": outcome.worker_processes_started,
        "unexpected_exits": [{"worker": e.worker, "returncode": e.returncode,
                              "log_tail": e.log_tail[-600:]} for e in outcome.unexpected_exits],
        "visibility_timeout_s": c.visibility_timeout,
        "max_receive_count": c.max_receive_count,
        "fault_window_s": c.window,
        "publish_seconds": c.publish_seconds,
        "drain": outcome.drain,
        "wall_s": round(outcome.wall_s, 1),
        "worker_log_findings": outcome.log_findings,
    }


def table(report: dict[str, Any]) -> str:
    rows = [
        ("seed", f"{report['seed']} (schedule {report['schedule_digest']})"),
        ("workers", f"{report['workers']} ({', '.join(report['pools'])}; -c "
                    f"{report['concurrency']}), {report['worker_processes_started']} "
                    f"started in all, {len(report['unexpected_exits'])} exited on their own"),
        ("sent", f"{report['sent']} of {report['tasks']} ({report['publishes_raised']} "
                 f"raised at first and were published again, "
                 f"{len(report['publish_gave_up'])} given up)"),
        ("completed", str(report["completed"])),
        ("lost", str(report["lost"])),
        ("duplicates", f"{report['duplicates']} ({report['duplicate_rate']:.3%}), "
                       f"{report['completed_twice']} completed twice; "
                       f"{report['extra_copies_published']} extra copies published"),
        ("  by cause", ", ".join(f"{k} {v}" for k, v in report["duplicates_by_cause"].items())
         or "-"),
        ("executed unsent", str(len(report["executed_unsent"]))),
        ("bad inputs", "sent " + _pairs(report["bad_inputs"]["sent"]) + "; in the DLQ " +
                       _pairs(report["bad_inputs"]["in_dlq"]) + "; executed " +
                       str(len(report["bad_inputs"]["executed"]))),
        ("faults", _pairs(report["faults"])),
        ("requests faulted", _pairs(report["requests_faulted"])),
        ("drain", report["drain"]),
        ("wall", f"{report['wall_s']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"
