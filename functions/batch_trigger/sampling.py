"""Reading the first bytes of a job's input files, to size its mini-batches (``zstc_contract.sizing``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from botocore.exceptions import ClientError

from zstc_contract.sizing import SAMPLE_BYTES, SAMPLE_FILES, FileSample, sample_lines


class _Object(Protocol):
    @property
    def bucket(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def size(self) -> int: ...


def read_heads(s3: Any, objects: Sequence[_Object], logger: Any) -> list[tuple[bytes, bool]]:
    """(first bytes, whole file?) of up to ``SAMPLE_FILES`` of ``objects``: one ranged GET each, of the version the
    event named where the bucket is versioned. A file that cannot be read is left out (logged): the job is sized
    from the others, or keeps the configured payload when none could be read."""
    heads: list[tuple[bytes, bool]] = []
    for obj in objects[:SAMPLE_FILES]:
        request: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, "Range": f"bytes=0-{SAMPLE_BYTES - 1}"}
        if obj.revision.startswith("v-"):
            request["VersionId"] = obj.revision[2:]
        try:
            body = s3.get_object(**request)["Body"].read()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            logger.warning("Could not sample an input file", extra={"key": obj.key, "error_code": code})
            continue
        heads.append((body, len(body) < SAMPLE_BYTES or 0 < obj.size <= SAMPLE_BYTES))
    return heads


def samples_of(heads: Sequence[tuple[bytes, bool]], *, tokens_per_pair: float) -> list[FileSample]:
    return [sample_lines(head, complete=complete, tokens_per_pair=tokens_per_pair) for head, complete in heads]
