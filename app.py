#!/usr/bin/env python3
"""CDK entry point: reads the context (cdk.json defaults, ``-c key=value`` overrides) once, then builds the stacks
(the main stack and, unless ``endpoint_mode=none``, ``<stack_name>-Endpoint``: see stacks/endpoint_stack.py)."""

import sys

import aws_cdk as cdk

from stacks.application import build_stacks
from stacks.config import ConfigError, Settings

app = cdk.App()
try:
    build_stacks(app, Settings.from_context(app.node.get_all_context()))
except ConfigError as error:
    sys.exit(f"Configuration error: {error}")
app.synth()
