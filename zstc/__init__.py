"""zstc: the Python API and command line of the zero-shot classification app on SageMaker (what ``pip install .``
ships, with ``zstc_contract``). The offline emulation (``zstc demo``, ``zstc serve``, ``Classifier.local``) is
``zstc_local``, which runs from a checkout: it is imported only inside those commands (see :mod:`zstc.checkout`).

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
