"""The SageMaker manifest the trigger writes for each job and the job-outcome function, ``zstc`` and the local
runner read: a JSON list of a ``{"prefix": "s3://bucket/input/"}`` entry, then keys relative to that prefix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Manifest:
    prefix: str  # an s3:// URI ending in "/"
    entries: tuple[str, ...]  # keys relative to the prefix

    def uris(self) -> list[str]:
        """The full s3:// URI of every entry."""
        return [self.prefix + entry for entry in self.entries]


def encode_manifest(prefix_uri: str, relative_keys: Sequence[str]) -> bytes:
    """A SageMaker manifest: a prefix entry, then keys relative to it."""
    entries: list[Any] = [{"prefix": prefix_uri}, *relative_keys]
    return json.dumps(entries, ensure_ascii=False).encode("utf-8")


def decode_manifest(body: bytes | str) -> Manifest:
    """The manifest in ``body``; ValueError when it is not one (not JSON, or no leading ``{"prefix": ...}``)."""
    data = json.loads(body)
    if not isinstance(data, list) or not data or not isinstance(data[0], dict) or "prefix" not in data[0]:
        raise ValueError("not a manifest: it does not start with a {'prefix': ...} element")
    return Manifest(str(data[0]["prefix"]), tuple(str(entry) for entry in data[1:]))
