"""Builds the CDK app from context: used by ``app.py`` and by the tests (in-process synthesis)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk

from stacks.checks import add_compliance_checks
from stacks.config import Settings
from stacks.zero_shot_stack import ZeroShotStack

DESCRIPTION = "Zero-shot text classification on Amazon SageMaker (Hugging Face NLI model): endpoint and batch path"


def build_stack(app: cdk.App, settings: Settings) -> ZeroShotStack:
    """Add the stack and the compliance checks to ``app``.

    With ``region`` set the stack is bound to it (the account stays the CLI's); otherwise it is region-agnostic and
    resolves region-specific values (the container image) in the template.
    """
    env = cdk.Environment(region=settings.region) if settings.region else None
    stack = ZeroShotStack(app, settings.stack_name, settings=settings, env=env, description=DESCRIPTION)
    cdk.Tags.of(stack).add("project", "zero-shot-classification")
    add_compliance_checks(app)
    return stack


def build_app(context: Mapping[str, Any], *, outdir: str | None = None) -> tuple[cdk.App, ZeroShotStack]:
    """An app with ``context`` (the ``cdk.json`` context plus overrides) and the stack in it."""
    app = cdk.App(context=dict(context), outdir=outdir)
    settings = Settings.from_context(app.node.get_all_context())
    return app, build_stack(app, settings)
