"""The parts of ``zstc`` that need a checkout of the repository: the offline emulation (``zstc_local``).

``pip install .`` ships the client (``zstc``, ``zstc_contract``) only. ``zstc demo``, ``zstc serve`` and
``Classifier.local`` also need ``zstc_local`` (with the functions, the stack's declarations and the model handler of
the checkout) and the ``local`` extras: they import it inside :func:`emulation`, which says so when it is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from zstc.errors import ZstcError


@contextlib.contextmanager
def emulation(needed_by: str) -> Iterator[None]:
    """Around the imports of ``zstc_local``: a missing module becomes one line saying where ``needed_by`` runs."""
    try:
        yield
    except ModuleNotFoundError as error:
        raise ZstcError(
            f"{needed_by} runs the offline emulation, which is not available here ({error.name} is missing): run it "
            "from a checkout of the repository, after `make install` (pip install '.[local]' alone does not ship it)"
        ) from error
