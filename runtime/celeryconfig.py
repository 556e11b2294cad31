"""Import-time Celery configuration: ``app.config_from_object("runtime.celeryconfig")``.

The alternative to a rendered ``celeryconfig.py``: the worker image carries no
generated file and reads the emitted configuration when it starts, from
``CELERY_SQS_KIT_CONFIG`` (a path, ``path#Stack`` or ``ssm:NAME``) or
``CELERY_SQS_KIT_CONFIG_JSON``. It uses the transport the spec names (the
document's ``transport``) unless ``CELERY_SQS_KIT_TRANSPORT`` (``bundled`` or
``stock``) says otherwise. A missing or invalid document stops the worker with a
:class:`runtime.errors.ConfigError` naming the source and the field.

Importing it also installs the kit's worker hooks (:mod:`runtime.hooks`): the
health state file, EMF metrics, ECS scale-in protection and revocation through the
revocations table.
"""

import os

from runtime import hooks
from runtime.celery_settings import TRANSPORTS, celery_settings
from runtime.config import load_config
from runtime.errors import ConfigError

TRANSPORT_ENV = "CELERY_SQS_KIT_TRANSPORT"

try:
    _config = load_config()
    _chosen = os.environ.get(TRANSPORT_ENV) or _config.transport
    if _chosen not in TRANSPORTS:
        raise ConfigError(f"${TRANSPORT_ENV}", "", f"must be one of {sorted(TRANSPORTS)}, "
                          f"got {_chosen!r}")
    hooks.install()
except ConfigError as error:
    # One line, not a traceback through Celery's lazy settings loader.
    raise SystemExit(f"celery-sqs-kit: {error}") from None

globals().update(celery_settings(_config, transport=TRANSPORTS[_chosen]))
