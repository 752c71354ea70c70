"""zstc: the Python API, command line and local tooling of the zero-shot classification app on SageMaker.

``from zstc import Classifier`` (see :mod:`zstc.client`). The names are imported on first use, so ``import zstc``
(and the ``zstc`` command) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zstc.client import (
        PAYLOAD_LIMITS,
        PROVISIONED_PAYLOAD_LIMIT,
        SERVERLESS_PAYLOAD_LIMIT,
        Classification,
        Classifier,
        Results,
        results_frame,
    )

__all__ = [
    "PAYLOAD_LIMITS",
    "PROVISIONED_PAYLOAD_LIMIT",
    "SERVERLESS_PAYLOAD_LIMIT",
    "Classification",
    "Classifier",
    "Results",
    "results_frame",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zstc import client

        return getattr(client, name)
    raise AttributeError(f"module 'zstc' has no attribute {name!r}")
