"""The kit's one exception hierarchy.

Every error the kit raises on purpose derives from :class:`KitError`, so a
caller can catch exactly what it means::

    KitError
    ├── SpecError      the fleet spec (cdk.json context) breaks a rule; raised at synth
    └── ConfigError    the emitted worker configuration is missing or invalid;
                       raised at worker start

Each message says what was wrong, where (the field or file), and the value
given, so that it can be shown to a user as it is, without a traceback.
"""

from __future__ import annotations


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
