"""Records larger than a transform's payload limit: found in one streaming read, replaced in a re-staged copy.

SageMaker batch transform fails a whole input object when one record (line) is larger than the job's
``MaxPayloadInMB``. The batch trigger therefore reads each file that could hold such a record (:func:`needs_scan`)
once, start to end, with :func:`scan_and_stage`. Only when the file holds one does it write a copy (the job reads
the copy: ``zstc_contract.layout.staged_prefix``) in which each oversized line is replaced by a one-line rejection
record (:func:`rejection_line`, keyed by the handler's ``REJECTED_RECORD_FIELD``). The handler answers a rejection
with ``{"id": <id>, "error": <message>}``, so every input line still ends as exactly one output line, in order, and
the rest of the file runs.

The copy is byte for byte the original with each oversized line replaced:

- a record's size is its line with its trailing newline (``zstc_contract.sizing.record_limit_bytes``); a line of
  exactly the limit is kept; ``\\r`` of CRLF endings is part of the line's bytes; empty lines are kept;
- a rejection always ends in ``\\n``: an oversized last line without a newline becomes a rejection with one (the
  line count is unchanged: a last line without newline counts as a line). A kept last line keeps its ending.

Memory stays bounded whatever the file or line size: at most the file's first ``MIN_PART_BYTES`` (kept until the
first oversized line, or until a line starts past them), or once the copy has started the part being filled
(``PART_BYTES``; while a long line is undecided, also up to ``MIN_PART_BYTES`` of the bytes before it), plus the
first ``ID_PREFIX_BYTES`` of the current line and about one read chunk. No line is ever held whole: bytes of the
original the copy keeps unchanged are copied server-side (``UploadPartCopy``) where they are long, and an oversized
line's bytes are dropped as soon as it passes the limit.

Standard library and botocore only: shipped to the batch functions in the contract layer; ``s3`` is an injected
boto3 client.
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from zstc_contract.sizing import record_limit_bytes

SCAN_CHUNK_BYTES: Final = 1024 * 1024  # read size of the streaming GET
ID_PREFIX_BYTES: Final = 64 * 1024  # bytes of a line kept to find its "id"
PART_BYTES: Final = 8 * 1024 * 1024  # multipart part size of the staged copy
MIN_PART_BYTES: Final = 5 * 1024 * 1024  # S3's smallest part but the last
MAX_COPY_PART_BYTES: Final = 5 * 1024**3  # S3's largest UploadPartCopy range
MAX_LISTED: Final = 100  # oversized records listed in a ScanResult (all are counted)
# SageMaker's largest MaxPayloadInMB (the stack's `batch_max_payload_mb` accepts 1-100).
_MAX_PAYLOAD_MB: Final = 100
_SCAN_FORMAT: Final = 1  # the "scan" field of an encoded ScanResult
_UTF8_BOM: Final = codecs.BOM_UTF8
# Reads whose lines average fewer bytes are measured line by line (see _Stager._whole_lines).
_MIN_AVERAGE_LINE: Final = 32


def needs_scan(size: int) -> bool:
    """Whether a file of ``size`` bytes may hold an oversized record: a file no larger than the smallest payload
    limit (``MaxPayloadInMB`` = 1) cannot hold a record over any job's limit, so it is never read."""
    return size > record_limit_bytes(1)


@dataclass(frozen=True)
class OversizedRecord:
    """A line larger than the payload limit, where it is and, when it could be read exactly, its ``id``."""

    line: int  # 1-based line number in the file
    offset: int  # byte offset of the line's start
    size: int  # bytes, newline included
    has_id: bool = False
    id: Any = None  # the record's top-level "id" when it could be read exactly (see top_level_id)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"line": self.line, "offset": self.offset, "size": self.size, "has_id": self.has_id}
        if self.has_id:
            data["id"] = self.id
        return data

    @classmethod
    def from_json(cls, data: Any) -> OversizedRecord:
        if not isinstance(data, dict):
            raise ValueError(f"an oversized record is a JSON object, not {type(data).__name__}")
        has_id = data.get("has_id", False)
        if not isinstance(has_id, bool):
            raise ValueError(f"an oversized record's 'has_id' is a boolean, not {has_id!r}")
        return cls(
            line=_count(data, "line"),
            offset=_count(data, "offset"),
            size=_count(data, "size"),
            has_id=has_id,
            id=data.get("id") if has_id else None,
        )


@dataclass(frozen=True)
class ScanResult:
    """What one read of an object version found; kept as the scan record ``manifests/_scans/<hash>.json``
    (``zstc_contract.layout.scan_key``) so a retry of the same version never reads the file again."""

    size: int  # bytes read
    lines: int  # lines (a last line without newline counts)
    largest_record: int  # size of the largest line that is NOT oversized (bytes, newline included)
    oversized_count: int
    oversized: tuple[OversizedRecord, ...]  # the first MAX_LISTED
    staged_key: str | None  # the copy written (None: nothing oversized, nothing written)
    limit_bytes: int

    def encode(self) -> bytes:
        """The scan record's body (JSON)."""
        data = {
            "scan": _SCAN_FORMAT,
            "size": self.size,
            "lines": self.lines,
            "largest_record": self.largest_record,
            "oversized_count": self.oversized_count,
            "oversized": [record.to_json() for record in self.oversized],
            "staged_key": self.staged_key,
            "limit_bytes": self.limit_bytes,
        }
        return json.dumps(data, ensure_ascii=True, allow_nan=False).encode("utf-8")

    @classmethod
    def decode(cls, body: bytes | str) -> ScanResult:
        """The result a scan record holds; ValueError when ``body`` is not one (it is then read again)."""
        data = json.loads(body)
        if not isinstance(data, dict) or data.get("scan") != _SCAN_FORMAT:
            raise ValueError(f'not a scan record: expected a JSON object with "scan": {_SCAN_FORMAT}')
        staged_key = data.get("staged_key")
        if staged_key is not None and not isinstance(staged_key, str):
            raise ValueError(f"a scan record's 'staged_key' is a string or null, not {staged_key!r}")
        oversized = data.get("oversized")
        if not isinstance(oversized, list):
            raise ValueError("a scan record's 'oversized' is a list")
        return cls(
            size=_count(data, "size"),
            lines=_count(data, "lines"),
            largest_record=_count(data, "largest_record"),
            oversized_count=_count(data, "oversized_count"),
            oversized=tuple(OversizedRecord.from_json(item) for item in oversized),
            staged_key=staged_key,
            limit_bytes=_count(data, "limit_bytes"),
        )


def _count(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name!r} is a count (an integer, at least 0), not {value!r}")
    return value


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # NaN / Infinity are not JSON: a rejection could not carry them
    return value is None or isinstance(value, str | int | bool)


def top_level_id(prefix: bytes) -> tuple[bool, Any]:
    """(found, value) of the top-level "id" key of the JSON object whose first bytes are `prefix`: found only when
    the key and its whole value lie inside `prefix` AND the value is a JSON scalar (string, number, true/false/null).
    Exact or nothing: never a value from a nested object, never a guess. Parse key by key with
    json.JSONDecoder().raw_decode (skip each other value; give up when a value runs past the prefix).

    Read as the handler's ``json.loads`` reads the record: escaped keys are decoded (``"\\u0069d"`` is ``"id"``),
    and a value must be followed (inside the prefix) by ``,`` or ``}`` so that a number cut by the prefix's end
    (``"id": 12`` of ``"id": 123``) is never taken. The first "id" is taken (JSON objects should not repeat a key;
    a repeat past the prefix could not be seen anyway). Non-finite numbers (``NaN``) are not ids. A prefix that is
    not UTF-8 (but for a character cut at its end) has no id. The caller strips a byte-order mark.
    """
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(prefix, final=False)
    except UnicodeDecodeError:
        return False, None
    decoder = json.JSONDecoder()
    end = len(text)

    def skip(index: int) -> int:
        while index < end and text[index] in " \t\r\n":
            index += 1
        return index

    index = skip(0)
    if index >= end or text[index] != "{":
        return False, None
    index = skip(index + 1)
    try:
        while index < end and text[index] == '"':
            key, index = decoder.raw_decode(text, index)
            index = skip(index)
            if index >= end or text[index] != ":":
                return False, None
            index = skip(index + 1)
            value, index = decoder.raw_decode(text, index)
            index = skip(index)
            if index >= end or text[index] not in ",}":
                return False, None  # cut (or not JSON): the value may go on past the prefix
            if key == "id":
                return (True, value) if _is_scalar(value) else (False, None)
            if text[index] == "}":
                return False, None  # the whole object, without an id
            index = skip(index + 1)
    except (ValueError, RecursionError):
        pass  # a value runs past the prefix (or is not JSON, or is nested too deeply to skip)
    return False, None


def rejection_line(record: OversizedRecord, *, limit_bytes: int, max_payload_mb: int, field: str) -> bytes:
    """One JSON line ending in b"\\n": {"id": <id>} only when has_id, and {field: <message>} where the message
    names the line number, the record's size in bytes, the limit (bytes and MaxPayloadInMB) and the fix: split its
    texts over several records (one text per line), or raise the stack's `batch_max_payload_mb` (at most 100).

    The id is written as it was read (the handler echoes it only when it is a valid id); ASCII-escaped, so an id
    with a lone surrogate round-trips instead of failing to encode. Only the fix that can help is offered: at
    ``MaxPayloadInMB`` = 100 raising it cannot."""
    fix = "split its texts over several records (one text per line)"
    if max_payload_mb < _MAX_PAYLOAD_MB:
        fix += f", or raise the stack's `batch_max_payload_mb` (at most {_MAX_PAYLOAD_MB}, now {max_payload_mb})"
    message = (
        f"Line {record.line} of the input file is {record.size:,} bytes (a record counts with its newline), over the "
        f"{limit_bytes:,}-byte limit of a record in a job of MaxPayloadInMB={max_payload_mb}: it was not sent to "
        f"the model; {fix}."
    )
    answer: dict[str, Any] = {"id": record.id} if record.has_id else {}
    answer[field] = message
    return json.dumps(answer, ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"


def _copy_ranges(start: int, end: int) -> Iterator[tuple[int, int]]:
    """[start, end) as inclusive byte ranges of at most MAX_COPY_PART_BYTES, all of nearly equal size (so each is
    at least MIN_PART_BYTES when the whole is)."""
    total = end - start
    count = max(1, -(-total // MAX_COPY_PART_BYTES))
    for i in range(count):
        a = start + total * i // count
        b = start + total * (i + 1) // count
        yield a, b - 1


class _Stager:
    """The state of one streaming read: the current line, the kept head, and the staged copy once started.

    While a copy is being written, ``buf`` holds its bytes not yet uploaded: everything before ``line_in_buf`` is
    decided (earlier lines, rejections); from there on the current line's bytes, kept tentatively until the line
    ends (kept) or passes the limit (dropped). A long undecided line never stays whole in memory: when ``buf``
    fills, the decided bytes go as a part when S3 takes them as one (at least MIN_PART_BYTES); otherwise they go in
    a *tentative* part with the line's first bytes (remembered, under MIN_PART_BYTES, to redo that part should the
    line turn out oversized: S3 overwrites a part re-uploaded under its number); and a buffer of nothing but the
    line's bytes is dropped and left *pending* on S3, copied server-side if the line is kept.
    """

    def __init__(
        self,
        s3: Any,
        *,
        bucket: str,
        key: str,
        version_id: str | None,
        etag: str | None,
        limit_bytes: int,
        max_payload_mb: int,
        staged_key: str,
        field: str,
        extra_args: Mapping[str, str] | None,
    ) -> None:
        self.s3, self.bucket, self.key, self.version_id, self.etag = s3, bucket, key, version_id, etag
        self.limit, self.max_payload_mb, self.staged_key, self.field = limit_bytes, max_payload_mb, staged_key, field
        self.extra_args = dict(extra_args or {})
        # the scan
        self.offset = 0  # bytes read
        self.lines = 0  # lines ended
        self.largest = 0
        self.oversized_count = 0
        self.listed: list[OversizedRecord] = []
        # the current line
        self.line_start = 0
        self.line_size = 0
        self.id_prefix = bytearray()
        self.over = False
        # the file's first bytes, while the first oversized line may still start inside them
        self.head: bytearray | None = bytearray()
        # the staged copy
        self.upload_id: str | None = None
        self.etags: dict[int, str] = {}  # part number → ETag of the parts the copy is made of
        self.next_part = 1
        self.buf = bytearray()
        self.line_in_buf = 0
        self.tentative: tuple[int, bytearray] | None = None  # (part number, its decided bytes before the line)
        self.pending_from: int | None = None  # where the current line's bytes left on S3 begin

    # --- reading ----------------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        first = chunk.find(b"\n")
        if first < 0:
            self._segment(chunk, 0, len(chunk), ended=False)
            return
        self._segment(chunk, 0, first + 1, ended=True)
        last = chunk.rfind(b"\n")
        if last > first:
            self._whole_lines(chunk, first + 1, last + 1)
        if last + 1 < len(chunk):
            self._segment(chunk, last + 1, len(chunk), ended=False)

    def _whole_lines(self, chunk: bytes, a: int, b: int) -> None:
        """Bytes [a, b) of ``chunk``: whole lines (the previous one ended at ``a``, ``b`` ends one)."""
        count = chunk.count(b"\n", a, b)
        # Most files have no oversized line: their lines are measured in C, a read at a time. Lines of a few bytes
        # go one by one instead (split would make a list far larger than the read).
        if (b - a) >= _MIN_AVERAGE_LINE * count:
            pieces = chunk.split(b"\n")  # the first and last belong to the lines around [a, b)
            longest = max(map(len, itertools.islice(pieces, 1, len(pieces) - 1))) + 1
            del pieces
            if longest <= self.limit:
                self._clean_lines(chunk, a, b, count, longest)
                return
        pos = a
        while pos < b:
            end = chunk.index(b"\n", pos) + 1
            self._segment(chunk, pos, end, ended=True)
            pos = end

    def _clean_lines(self, chunk: bytes, a: int, b: int, count: int, longest: int) -> None:
        """Bytes [a, b) of ``chunk``: ``count`` whole lines, none oversized, the longest of ``longest`` bytes."""
        length = b - a
        self.lines += count
        self.largest = max(self.largest, longest)
        self.offset += length
        if self.head is not None and len(self.head) < MIN_PART_BYTES:
            self.head += memoryview(chunk)[a : a + min(length, MIN_PART_BYTES - len(self.head))]
        if self.upload_id is not None:
            self.buf += memoryview(chunk)[a:b]
            self.line_in_buf = len(self.buf)
        self.line_start = self.offset
        if self.head is not None and self.line_start >= MIN_PART_BYTES:
            self.head = None
        if self.upload_id is not None:
            self._relieve()

    def _segment(self, chunk: bytes, a: int, b: int, *, ended: bool) -> None:
        """Bytes [a, b) of ``chunk``: the next piece of the current line (its end when ``ended``)."""
        length = b - a
        started_here = self.line_size == 0
        self.line_size += length
        self.offset += length
        if not self.over and self.line_size > self.limit:
            self._oversized()
        # the line's first bytes, for its id: only where they may be needed (a short line ending in this chunk and
        # not oversized never needs them)
        if len(self.id_prefix) < ID_PREFIX_BYTES and (self.over or not ended or not started_here):
            self.id_prefix += chunk[a : a + min(length, ID_PREFIX_BYTES - len(self.id_prefix))]
        if self.head is not None and len(self.head) < MIN_PART_BYTES:
            self.head += memoryview(chunk)[a : a + min(length, MIN_PART_BYTES - len(self.head))]
        if self.upload_id is not None and not self.over and self.pending_from is None:
            self.buf += memoryview(chunk)[a:b]
        if ended:
            self._end_line()
        if self.upload_id is not None:
            self._relieve()

    def finish(self) -> None:
        if self.line_size:
            self._end_line()  # a last line without newline
        if self.upload_id is not None and self.buf:
            self._upload(self.buf)
            self.buf = bytearray()

    def _end_line(self) -> None:
        self.lines += 1
        if self.over:
            prefix = bytes(self.id_prefix)
            if self.line_start == 0 and prefix.startswith(_UTF8_BOM):
                prefix = prefix[len(_UTF8_BOM) :]  # the handler reads a body's start as utf-8-sig
            has_id, value = top_level_id(prefix)
            record = OversizedRecord(self.lines, self.line_start, self.line_size, has_id, value if has_id else None)
            self.oversized_count += 1
            if len(self.listed) < MAX_LISTED:
                self.listed.append(record)
            self.buf += rejection_line(
                record, limit_bytes=self.limit, max_payload_mb=self.max_payload_mb, field=self.field
            )
        else:
            self.largest = max(self.largest, self.line_size)
            if self.pending_from is not None:
                self._copy(self.pending_from, self.offset)
                self.pending_from = None
            self.tentative = None  # the line is kept: its tentative part stands
        self.line_in_buf = len(self.buf)
        self.line_start, self.line_size, self.over = self.offset, 0, False
        self.id_prefix = bytearray()
        if self.head is not None and self.line_start >= MIN_PART_BYTES:
            self.head = None  # no oversized line can start inside the head any more: copied server-side if needed

    # --- the staged copy --------------------------------------------------------------------------------------

    def _oversized(self) -> None:
        """The current line just passed the limit: drop what the copy holds of it, start the copy if first."""
        self.over = True
        if self.upload_id is None:
            self._start()
            return
        del self.buf[self.line_in_buf :]
        self.pending_from = None
        if self.tentative is not None:
            part, before = self.tentative
            self.tentative = None
            self.etags.pop(part, None)
            self.next_part = part  # redone: the decided bytes are uploaded again under the same number
            self.buf = before
            self.line_in_buf = len(self.buf)

    def _start(self) -> None:
        """The first oversized line starts at ``line_start``: the copy begins with the file's bytes before it."""
        response = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.staged_key, **self.extra_args)
        self.upload_id = response["UploadId"]
        clean = self.line_start
        if self.head is not None:  # the line starts inside the head (under MIN_PART_BYTES): the part begins with it
            del self.head[clean:]
            self.buf, self.head = self.head, None
        elif clean:
            self._copy(0, clean)
        self.line_in_buf = len(self.buf)

    def _relieve(self) -> None:
        """Keep ``buf`` under about PART_BYTES (see the class docstring)."""
        while len(self.buf) >= PART_BYTES:
            decided = min(self.line_in_buf, len(self.buf))
            if decided >= MIN_PART_BYTES:
                take = min(decided, PART_BYTES)
                part = self.buf
                self.buf = part[take:]
                del part[take:]
                self._upload(part)
                self.line_in_buf -= take
            elif decided > 0:
                self.tentative = (self.next_part, self.buf[:decided])
                self._upload(self.buf)
                self.buf, self.line_in_buf = bytearray(), 0
            else:  # nothing but the current line's bytes: left on S3 from here, copied if the line is kept
                self.pending_from = self.offset - len(self.buf)
                self.buf = bytearray()

    def _upload(self, body: bytearray | bytes) -> None:
        number = self.next_part
        self.next_part += 1
        response = self.s3.upload_part(
            Bucket=self.bucket, Key=self.staged_key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.etags[number] = response["ETag"]

    def _copy(self, start: int, end: int) -> None:
        """Bytes [start, end) of the version being read, copied server-side as parts."""
        source = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            source["VersionId"] = self.version_id
        condition = {"CopySourceIfMatch": self.etag} if self.etag else {}  # the object read, even unversioned
        for a, b in _copy_ranges(start, end):
            number = self.next_part
            self.next_part += 1
            response = self.s3.upload_part_copy(
                Bucket=self.bucket,
                Key=self.staged_key,
                UploadId=self.upload_id,
                PartNumber=number,
                CopySource=source,
                CopySourceRange=f"bytes={a}-{b}",
                **condition,
            )
            self.etags[number] = response["CopyPartResult"]["ETag"]

    def complete(self) -> None:
        parts = [{"PartNumber": number, "ETag": self.etags[number]} for number in sorted(self.etags)]
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.staged_key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
        )

    def abort(self) -> None:
        if self.upload_id is None:
            return
        # The error that stopped the copy is the one to report; an abort that fails too leaves the upload to the
        # bucket's lifecycle rule for incomplete uploads.
        with contextlib.suppress(ClientError, BotoCoreError):
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.staged_key, UploadId=self.upload_id)

    def result(self) -> ScanResult:
        return ScanResult(
            size=self.offset,
            lines=self.lines,
            largest_record=self.largest,
            oversized_count=self.oversized_count,
            oversized=tuple(self.listed),
            staged_key=self.staged_key if self.upload_id is not None else None,
            limit_bytes=self.limit,
        )


def scan_and_stage(
    s3: Any,
    *,
    bucket: str,
    key: str,
    version_id: str | None,
    limit_bytes: int,
    max_payload_mb: int,
    staged_key: str,
    field: str,
    chunk_bytes: int = SCAN_CHUNK_BYTES,
    extra_args: Mapping[str, str] | None = None,
) -> ScanResult:
    """Read ``key`` (the version ``version_id`` when given) once and, only when a line is over ``limit_bytes``, write
    ``staged_key`` in the same bucket: the file with each such line replaced by its :func:`rejection_line` (see the
    module docstring for the exact bytes and the memory bound).

    ``limit_bytes``: ``record_limit_bytes(max_payload_mb)`` of the job. ``field``: the handler's
    ``REJECTED_RECORD_FIELD``. ``extra_args`` go to ``create_multipart_upload`` (none by default: the bucket's
    default encryption applies). The copy's server-side parts name the version read and its ETag, so an object
    overwritten during the read (unversioned bucket) fails the copy instead of mixing two versions. Any error after
    the copy started aborts its multipart upload, then propagates; nothing is written for a file with no oversized
    line (``staged_key`` is None in the result).
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, not {chunk_bytes}")
    if staged_key == key:
        raise ValueError(f"the staged copy of {key!r} cannot replace it: give another staged_key")
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        request["VersionId"] = version_id
    response = s3.get_object(**request)
    stager = _Stager(
        s3,
        bucket=bucket,
        key=key,
        version_id=version_id or response.get("VersionId"),
        etag=response.get("ETag"),
        limit_bytes=limit_bytes,
        max_payload_mb=max_payload_mb,
        staged_key=staged_key,
        field=field,
        extra_args=extra_args,
    )
    body = response["Body"]
    try:
        while chunk := body.read(chunk_bytes):
            stager.feed(chunk)
        stager.finish()
        if stager.upload_id is not None:
            stager.complete()
    except BaseException:
        stager.abort()
        raise
    finally:
        body.close()
    return stager.result()
