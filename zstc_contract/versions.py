"""The versions sidecar of a job's manifest (``manifests/J.versions.json``, :func:`zstc_contract.layout.versions_key`).

A SageMaker manifest lists keys, not versions. The trigger writes, next to it and before it, the object version each
entry was claimed at (``{"job_name": J, "files": {"a/b.jsonl": {"revision": "v-…", "version_id": "…"}}}``); the
job-outcome function reads it to put the input's version id in the status record and to see an input overwritten
while its job ran. ``version_id`` is S3's ``VersionId`` (None where the event named none: an unversioned bucket).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

VERSION_REVISION: Final = "v-"  # the trigger's revision of an object version: "v-" + S3 VersionId


@dataclass(frozen=True)
class EntryVersion:
    revision: str  # the trigger's revision string (zstc_contract.jobs.Claimable)
    version_id: str | None  # S3 VersionId, when the revision is one


def version_id_of(revision: str) -> str | None:
    if not revision.startswith(VERSION_REVISION):
        return None
    return revision[len(VERSION_REVISION) :] or None


def encode_versions(job_name: str, entries: Iterable[tuple[str, str]]) -> bytes:
    """The sidecar of ``job_name``: ``entries`` are (relative key, revision) pairs."""
    files = {relative: {"revision": revision, "version_id": version_id_of(revision)} for relative, revision in entries}
    return json.dumps({"job_name": job_name, "files": files}, ensure_ascii=False).encode("utf-8")


def decode_versions(body: bytes | str) -> dict[str, EntryVersion]:
    """Relative key → its version; ValueError when ``body`` is not a sidecar."""
    data = json.loads(body)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise ValueError("not a versions sidecar: no 'files' object")
    found: dict[str, EntryVersion] = {}
    for relative, item in files.items():
        revision = item.get("revision") if isinstance(item, dict) else None
        if isinstance(revision, str):
            found[str(relative)] = EntryVersion(revision, version_id_of(revision))
    return found
