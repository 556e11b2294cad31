"""``python -m runtime.ops``: parse the command line, run one command, map errors to
exit statuses (see :mod:`runtime.ops`)."""

from __future__ import annotations

import argparse
import sys

from runtime.config import load_config
from runtime.errors import ConfigError, KitError, TransportError, UsageError
from runtime.ops import doctor, peek, redrive, status
from runtime.ops.arguments import common_options

OK, PROBLEMS, USAGE, AWS, INTERRUPTED = 0, 1, 2, 3, 130

DESCRIPTION = """\
Operate a celery-sqs-kit fleet: queue depths and drift from the emitted config, the
caller's permissions, and dead letters. Each command has --help, prints a table, or
one JSON document with --json.

The config: --config (a path, outputs.json#Stack or ssm:NAME), else
$CELERY_SQS_KIT_CONFIG_JSON, else $CELERY_SQS_KIT_CONFIG. Credentials: the default
chain. Region: the document's. Endpoint: the document's, else $AWS_ENDPOINT_URL.

exit status: 0 success; 1 a check found problems; 2 usage or config error; 3 AWS
error (access denied, no such queue, expired credentials, unreachable); 130
interrupted. Errors are one line on stderr naming what to fix."""


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(prog="python -m runtime.ops", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status.add_parser(commands, common)
    doctor.add_parser(commands, common)
    dlq = commands.add_parser("dlq", help="dead-letter queues: peek, redrive",
                              description="Look at and move dead letters.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    peek.add_parser(dlq_commands, common)
    redrive.add_parser(dlq_commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, load_config(args.config))
    except (ConfigError, UsageError) as error:
        return _fail(error, USAGE)
    except TransportError as error:
        return _fail(error, AWS)
    except KitError as error:
        return _fail(error, PROBLEMS)
    except KeyboardInterrupt:
        print("celery-sqs-kit: interrupted: run the same command again to resume",
              file=sys.stderr)
        return INTERRUPTED


def _fail(error: KitError, status: int) -> int:
    print(f"celery-sqs-kit: {error}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
