"""Fixtures of the Python API tests: the tiny model's handler in-process (the reference answers)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_handler(tiny_model_dir):
    from zstc_local.inprocess import InProcessHandler

    with InProcessHandler(tiny_model_dir) as handler:
        yield handler
