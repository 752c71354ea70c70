"""What the batch trigger and the job-outcome function must agree on, in one place.

Shipped to both functions as a Lambda layer (``zstc_contract`` under ``/opt/python``, see ``stacks/code_assets.py``):
the manifest format (written by the trigger, read by the outcome function), job names of this stack, status-record
keys and the parsing of the environment both functions are configured with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

DIGEST_CHARS: Final = 24  # 96 bits of SHA-256: collision-free in practice for any number of jobs a stack will run


class SettingsError(ValueError):
    """An environment variable is missing or invalid; the message names it, the bad value and the fix."""


def required_env(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise SettingsError(f"{name} is not set: the batch stack sets it on the function; redeploy the stack")
    return value


def prefix_env(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not value or not value.endswith("/") or value.startswith("/"):
        raise SettingsError(f"{name}={value!r}: expected an S3 key prefix ending in '/', e.g. {default!r}")
    return value


def is_stack_job(name: str, prefix: str) -> bool:
    """True for names this stack derives (another stack's prefix may start with ours)."""
    return re.fullmatch(re.escape(prefix) + rf"-[0-9a-f]{{{DIGEST_CHARS}}}", name) is not None


def encode_manifest(prefix_uri: str, relative_keys: Sequence[str]) -> bytes:
    """A SageMaker manifest: a prefix entry, then keys relative to it."""
    entries: list[Any] = [{"prefix": prefix_uri}, *relative_keys]
    return json.dumps(entries, ensure_ascii=False).encode("utf-8")


def manifest_entries(body: bytes) -> tuple[str, list[str]]:
    """(prefix URI, relative keys) of a manifest written by :func:`encode_manifest`."""
    data = json.loads(body)
    return str(data[0]["prefix"]), [str(e) for e in data[1:]]


def status_key(prefix: str, relative: str) -> str:
    """Key of a file's status record: ``<output or errors prefix><key below input/>.status.json``."""
    return f"{prefix}{relative}.status.json"
