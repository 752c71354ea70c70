"""Fixtures shared by the integration areas: the fake Hugging Face Hub (tests/integration/fake_hub.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.fake_hub import FakeHub, running_hub


@pytest.fixture(scope="module")
def hub_server() -> Iterator[FakeHub]:
    with running_hub() as hub:
        yield hub


@pytest.fixture
def hub(hub_server: FakeHub) -> FakeHub:
    """The module's fake Hub, reset for each test."""
    hub_server.reset()
    return hub_server
