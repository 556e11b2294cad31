#!/usr/bin/env python3
"""The CDK app: reads the fleet spec from cdk.json context and composes the stack."""

import os
import sys

import aws_cdk as cdk

from infra.compliance import acknowledge_findings, add_compliance_checks
from infra.settings import (CONTEXT_KEY, EXTRA_PRINCIPALS_CONTEXT_KEY, FLEETS_CONTEXT_KEY,
                            LOCAL_STAGE_CONTEXT_KEY, SCALING_CONTEXT_KEY, load_spec)
from infra.stacks import CeleryKitStack
from runtime.errors import SpecError


def main() -> None:
    app = cdk.App()
    try:
        spec = load_spec(app.node.try_get_context(CONTEXT_KEY),
                         app.node.try_get_context(EXTRA_PRINCIPALS_CONTEXT_KEY),
                         app.node.try_get_context(FLEETS_CONTEXT_KEY),
                         app.node.try_get_context(SCALING_CONTEXT_KEY),
                         app.node.try_get_context(LOCAL_STAGE_CONTEXT_KEY))
        stack = CeleryKitStack(app, spec.stack_name, spec=spec, env=cdk.Environment(
            account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
            region=os.environ.get("CDK_DEFAULT_REGION")))
    except SpecError as error:
        print(f"celery-sqs-kit: invalid spec: {error}", file=sys.stderr)
        sys.exit(2)
    add_compliance_checks(app)
    acknowledge_findings(stack)
    app.synth()


if __name__ == "__main__":
    main()
