# celery-sqs-kit worker image: a `celery worker` with the bundled transport, configured at
# start from the stack's emitted document. Build it with `make image`
# (local_aws/worker_image.py), or by hand:
#
#   pip wheel -w .build/wheels -r requirements-worker.txt        # on the host
#   docker build --network none -t celery-sqs-kit-worker .
#
# Wheel-first: the wheels are built on the host from the pinned requirements-worker.txt and
# installed here with --no-index, so the build needs no network (and no registry
# credentials, CA or index settings inside it) and installs exactly the pins.
#
# Run it with CELERY_SQS_KIT_CONFIG (ssm:NAME, or a path) or CELERY_SQS_KIT_CONFIG_JSON (the
# document); credentials come from the ECS task role or instance profile. Arguments after
# the image name are `celery worker` options (default --loglevel=INFO). Give it a stop
# timeout (ECS stopTimeout, `docker run --stop-timeout`) that covers the longest task: on
# SIGTERM the worker stops receiving, finishes what runs and gives unstarted messages back.

# Any image with python3 (3.11, as the wheels) and its venv module: the official
# python:3.11-slim, or Debian bookworm with python3-venv (celery-sqs-kit-base:bookworm).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY requirements-worker.txt /tmp/requirements-worker.txt
COPY .build/wheels /tmp/wheels
# pip and setuptools leave with the build: the final image can run, not install.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        --requirement /tmp/requirements-worker.txt \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools
# The tasks module keeps its path, so its tasks keep their names (demo/tasks.py: demo.tasks.add).
ARG TASKS_SOURCE=demo/tasks.py
COPY runtime /app/runtime
# Tasks modules written for a rendered celeryconfig.py (config_from_object("celeryconfig"))
# get the import-time configuration instead: the image carries no generated file.
COPY runtime/celeryconfig.py /app/celeryconfig.py
COPY ${TASKS_SOURCE} /app/${TASKS_SOURCE}
RUN python3 -m compileall -q /app

FROM ${BASE_IMAGE}
# checkov:skip=CKV_DOCKER_7: the base is a build argument; its default names a version (3.11)
ARG TASKS_MODULE=demo.tasks
# A fixed non-root uid:gid (with its own group: a bare uid would run with gid 0).
RUN groupadd --system --gid 10001 worker \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin worker
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
# CELERY_APP is celery's own variable for -A; the module comes from the build argument.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    CELERY_APP=${TASKS_MODULE} \
    CELERY_SQS_KIT_TRANSPORT=bundled \
    CELERY_SQS_KIT_HEALTH_FILE=/tmp/celery-sqs-kit-health.json
USER 10001:10001
# The worker is PID 1 and handles SIGTERM itself as a warm shutdown.
STOPSIGNAL SIGTERM
# Asks the worker process (a state file its event loop refreshes), never the broker.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "runtime.health"]
ENTRYPOINT ["celery", "worker"]
CMD ["--loglevel=INFO"]
