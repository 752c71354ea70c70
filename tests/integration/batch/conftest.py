"""Fixtures of the batch path's integration tests (moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.batch.batch_moto import Env


@pytest.fixture
def aws(mocked_aws: None) -> Iterator[None]:
    yield


@pytest.fixture
def env(aws: None) -> Env:
    return Env()
