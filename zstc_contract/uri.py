"""``s3://bucket/key`` URIs: the one builder and the one parser."""

from __future__ import annotations

from typing import Final

SCHEME: Final = "s3://"


def s3_uri(bucket: str, key: str = "") -> str:
    return f"{SCHEME}{bucket}/{key}"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); the key may be empty (``s3://bucket/`` or ``s3://bucket``)."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI (no bucket): {uri!r}")
    return bucket, key
