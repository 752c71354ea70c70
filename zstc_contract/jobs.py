"""Transform jobs of a stack: how they are named, how to recognise them, and which states are final."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Final, Protocol

DIGEST_CHARS: Final = 24  # 96 bits of SHA-256: collision-free in practice for any number of jobs a stack will run
JOB_NAME: Final = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's pattern
# The job-name prefix is lower case: SageMaker lowercases names in resource ARNs, so the IAM policy
# (`transform-job/<prefix>-*`) only matches names whose prefix is already lower case.
JOB_PREFIX: Final = re.compile(r"^[a-z0-9](-?[a-z0-9]){0,37}$")
MAX_JOB_PREFIX: Final = 63 - 1 - DIGEST_CHARS  # 38

# Transform-job states (TransformJobStatus) the batch path acts on.
IN_PROGRESS: Final = "InProgress"
COMPLETED: Final = "Completed"
FAILED: Final = "Failed"
STOPPED: Final = "Stopped"
FAILED_JOB_STATES: Final = (FAILED, STOPPED)
TERMINAL_JOB_STATES: Final = (COMPLETED, *FAILED_JOB_STATES)  # the job-outcome rule's and function's filter


class Claimable(Protocol):
    @property
    def claim_id(self) -> str: ...  # one object version: bucket, key and revision


def job_name(prefix: str, objects: Iterable[Claimable], generation: int = 0) -> str:
    """Deterministic transform-job name for a set of object versions.

    Same set (in any order, with duplicates) → same name; any other set, another version of a key or another
    generation → another name. ``<prefix>-<24 hex digits of SHA-256>`` always matches SageMaker's pattern.
    """
    digest = hashlib.sha256()
    for claim_id in sorted({o.claim_id for o in objects}):
        digest.update(claim_id.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    digest.update(f"generation={generation}".encode())
    return f"{prefix}-{digest.hexdigest()[:DIGEST_CHARS]}"


def is_stack_job(name: str, prefix: str) -> bool:
    """True for names this stack derives (another stack's prefix may start with ours)."""
    return re.fullmatch(re.escape(prefix) + rf"-[0-9a-f]{{{DIGEST_CHARS}}}", name) is not None
