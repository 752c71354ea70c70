"""Session fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

# jsii (aws-cdk-lib) prints a banner on Node 20 unless told it is known; set before aws_cdk is first imported.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# The CLI's Rich consoles are created at import and read the width then: give every test the same wide terminal,
# whatever the machine (CI has none: Rich would use 80 columns and wrap table cells that tests look for).
os.environ.setdefault("COLUMNS", "250")

import pytest

from zstc_local.tiny_model import cached_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random-weight BART NLI model (built once per machine, see zstc_local.tiny_model)."""
    return cached_tiny_model()
