#!/usr/bin/env python3
"""The CDK app: `cdk deploy BaseStack --parameters myPublicIP=<ip>/32`, then `cdk deploy AuroraStack`.

Run from this folder with the npm CLI (`npx aws-cdk@2 synth`); `cdk.json` says how to start this file.
"""

from __future__ import annotations

import aws_cdk as cdk

from stacks.aurora_stack import AuroraStack
from stacks.base_stack import BaseStack


def build(app: cdk.App) -> tuple[BaseStack, AuroraStack]:
    """Add both stacks to `app` (the tests call this too)."""
    description = "txoutbox flight-booking reference system"
    base = BaseStack(app, "BaseStack", description=f"{description}: network, WAF, queues, ECS cluster")
    aurora = AuroraStack(
        app, "AuroraStack", base=base, description=f"{description}: Aurora PostgreSQL and the services"
    )
    cdk.Tags.of(app).add("project", "txoutbox")
    return base, aurora


if __name__ == "__main__":
    app = cdk.App()
    build(app)
    app.synth()
