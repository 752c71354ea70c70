"""Builds the CDK app from context: used by ``app.py`` and by the tests (in-process synthesis)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk

from stacks.checks import add_compliance_checks
from stacks.config import Settings
from stacks.endpoint_stack import DESCRIPTION as ENDPOINT_DESCRIPTION
from stacks.endpoint_stack import EndpointStack, endpoint_stack_name
from stacks.zero_shot_stack import ZeroShotStack

DESCRIPTION = "Zero-shot text classification on Amazon SageMaker (Hugging Face NLI model): batch path and storage"
TAG = ("project", "zero-shot-classification")


def build_stacks(app: cdk.App, settings: Settings) -> tuple[ZeroShotStack, EndpointStack | None]:
    """Add the stacks and the compliance checks (every stack of ``app``) to ``app``: the main stack
    ``stack_name`` and, unless ``endpoint_mode=none``, the endpoint's stack ``<stack_name>-Endpoint`` that depends on
    it (``cdk deploy --all`` deploys the main stack first; a failed endpoint rolls back only its own stack).

    With ``region`` set the stacks are bound to it (the account stays the CLI's); otherwise they are region-agnostic
    and resolve region-specific values (the container image) in the template.
    """
    env = cdk.Environment(region=settings.region) if settings.region else None
    main = ZeroShotStack(app, settings.stack_name, settings=settings, env=env, description=DESCRIPTION)
    endpoint = None
    if settings.has_endpoint:
        name = endpoint_stack_name(settings)
        endpoint = EndpointStack(app, name, main=main, env=env, description=ENDPOINT_DESCRIPTION)
    for stack in (main, endpoint):
        if stack is not None:
            cdk.Tags.of(stack).add(*TAG)
    add_compliance_checks(app)
    return main, endpoint


def build_stack(app: cdk.App, settings: Settings) -> ZeroShotStack:
    """:func:`build_stacks`, returning the main stack."""
    return build_stacks(app, settings)[0]


def build_app(context: Mapping[str, Any], *, outdir: str | None = None) -> tuple[cdk.App, ZeroShotStack]:
    """An app with ``context`` (the ``cdk.json`` context plus overrides) and the stacks in it; returns the main one."""
    app = cdk.App(context=dict(context), outdir=outdir)
    settings = Settings.from_context(app.node.get_all_context())
    return app, build_stack(app, settings)
