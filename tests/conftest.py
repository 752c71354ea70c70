"""Session fixtures shared by every test area."""

from __future__ import annotations

import os
from pathlib import Path

# jsii (aws-cdk-lib) prints a banner on Node 20 unless told it is known; set before aws_cdk is first imported.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# The CLI's Rich consoles are created at import and read the width then: give every test the same wide terminal,
# whatever the machine (CI has none: Rich would use 80 columns and wrap table cells that tests look for).
os.environ.setdefault("COLUMNS", "250")

from collections.abc import Iterator

import pytest
from moto import mock_aws

from zstc_local.tiny_model import cached_tiny_model

MOTO_REGION = "us-east-1"


@pytest.fixture
def mocked_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process AWS for one test, with fake credentials and region (no real account is ever reached)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": MOTO_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random-weight BART NLI model (built once per machine, see zstc_local.tiny_model)."""
    return cached_tiny_model()
