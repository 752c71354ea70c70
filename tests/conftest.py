"""Session fixtures shared by every test area."""

from __future__ import annotations

from pathlib import Path

import pytest

from zstc.tiny_model import cached_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random-weight BART NLI model (built once per machine, see zstc.tiny_model)."""
    return cached_tiny_model()
