#!/usr/bin/env python3
"""CDK entry point: reads the context (cdk.json defaults, ``-c key=value`` overrides) once, then builds the stack."""

import sys

import aws_cdk as cdk

from stacks.application import build_stack
from stacks.config import ConfigError, Settings

app = cdk.App()
try:
    settings = Settings.from_context(app.node.get_all_context())
except ConfigError as error:
    sys.exit(f"Configuration error: {error}")
build_stack(app, settings)
app.synth()
