"""How long the trigger defers a file it cannot start yet, and the DLQ's ``maxReceiveCount`` that gives it patience.

The trigger computes each deferral; synthesis computes ``maxReceiveCount`` from the same arithmetic.
"""

from __future__ import annotations

from typing import Final

MAX_VISIBILITY_SECONDS: Final = 43_200  # SQS maximum (12 hours)


def backoff_seconds(receive_count: int, *, base: int, maximum: int) -> int:
    """Visibility timeout for a deferred message: base × 2^(n-1), capped (and never above SQS's 12 hours)."""
    exponent = max(0, min(receive_count - 1, 30))
    return int(min(base * 2**exponent, maximum, MAX_VISIBILITY_SECONDS))


def backoff_max_seconds(patience_seconds: int) -> int:
    """Largest backoff step: 15 minutes, longer for long patience so that maxReceiveCount stays near 100."""
    return min(MAX_VISIBILITY_SECONDS - 600, max(900, patience_seconds // 100))


def receives_for_patience(patience_seconds: int, *, base: int, maximum: int) -> int:
    """The ``maxReceiveCount`` that keeps a deferred message in the queue for at least ``patience_seconds``."""
    waited, receives = 0, 0
    while waited < patience_seconds:
        receives += 1
        waited += backoff_seconds(receives, base=base, maximum=maximum)
    return max(receives + 1, 2)
