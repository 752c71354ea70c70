"""Oversized records (zstc_contract.oversize): one streaming read finds them, a re-staged copy replaces each by a
rejection line, byte for byte; nothing is written for a clean file; a failure aborts the copy; memory stays bounded.

The staged copies are checked against bytes the test builds itself: the original split into lines, each line over
the limit replaced by its rejection (its id read with ``json.loads`` of the whole line, not with the module's
prefix parser). moto enforces S3's 5 MiB minimum for every part but the last, so a copy that completes in moto has
parts S3 takes.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import tracemalloc
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zstc_contract import oversize
from zstc_contract.oversize import (
    ID_PREFIX_BYTES,
    MAX_LISTED,
    MIN_PART_BYTES,
    PART_BYTES,
    SCAN_CHUNK_BYTES,
    OversizedRecord,
    ScanResult,
    needs_scan,
    rejection_line,
    scan_and_stage,
    top_level_id,
)
from zstc_contract.sizing import record_limit_bytes

REGION = "us-east-1"
BUCKET = "zstc-oversize-test"
KEY = "input/a/b.jsonl"
STAGED = "manifests/_staged/job-1/a/b.jsonl"
FIELD = "zstc_rejected"
LIMIT = 2_000  # small, so most files stay small
MB = 1  # the MaxPayloadInMB the messages name
MiB = 1024 * 1024


# --- building files and what their staged copy must be -------------------------------------------------------------


def line(record_id: Any, size: int, *, end: bytes = b"\n") -> bytes:
    """A JSON record with ``"id": record_id`` first, of exactly ``size`` bytes with its ``end``."""
    head = b'{"id": ' + json.dumps(record_id).encode() + b', "inputs": "'
    tail = b'"}' + end
    pad = size - len(head) - len(tail)
    assert pad >= 0, f"a line of {size} bytes cannot hold id {record_id!r}"
    return head + b"t" * pad + tail


def small_lines(count: int, *, size: int = 100, start: int = 0) -> bytes:
    return b"".join(line(f"s{start + i}", size) for i in range(count))


def lines_of(data: bytes) -> list[bytes]:
    """The lines of ``data`` with their endings (a last line without newline too)."""
    return re.findall(rb"[^\n]*\n|[^\n]+\Z", data)


def expected_copy(data: bytes, limit: int, mb: int = MB) -> bytes:
    out, offset = [], 0
    for number, text in enumerate(lines_of(data), start=1):
        if len(text) > limit:
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            has_id = isinstance(value, dict) and "id" in value
            record_id = value["id"] if has_id and isinstance(value, dict) else None
            record = OversizedRecord(number, offset, len(text), has_id, record_id)
            out.append(rejection_line(record, limit_bytes=limit, max_payload_mb=mb, field=FIELD))
        else:
            out.append(text)
        offset += len(text)
    return b"".join(out)


# --- moto --------------------------------------------------------------------------------------------------------


@pytest.fixture
def s3(mocked_aws: None) -> Iterator[Any]:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    yield client


class CountingBody:
    """A response body that counts the bytes read through it."""

    def __init__(self, body: Any) -> None:
        self.body, self.read_bytes, self.reads = body, 0, 0

    def read(self, amount: int | None = None) -> bytes:
        data = self.body.read(amount)
        self.read_bytes += len(data)
        self.reads += 1
        return data

    def close(self) -> None:
        self.body.close()


class Recorder:
    """An S3 client that records the calls of the staged copy, and can fail the n-th upload_part."""

    def __init__(self, client: Any, *, fail_upload_part: int | None = None) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.bodies: list[CountingBody] = []
        self.fail_upload_part = fail_upload_part

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("get_object", kwargs))
        response = self.client.get_object(**kwargs)
        response["Body"] = CountingBody(response["Body"])
        self.bodies.append(response["Body"])
        return response

    def upload_part(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(
            ("upload_part", {**{k: v for k, v in kwargs.items() if k != "Body"}, "size": len(kwargs["Body"])})
        )
        if self.fail_upload_part is not None and self.names().count("upload_part") == self.fail_upload_part:
            raise ConnectionError("injected: the connection dropped during upload_part")
        return self.client.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return method(**kwargs)

        return call


def put(s3: Any, data: bytes, key: str = KEY) -> str:
    return s3.put_object(Bucket=BUCKET, Key=key, Body=data)["VersionId"]


def scan(s3: Any, version_id: str | None, *, limit: int = LIMIT, **kwargs: Any) -> ScanResult:
    return scan_and_stage(
        s3,
        bucket=BUCKET,
        key=KEY,
        version_id=version_id,
        limit_bytes=limit,
        max_payload_mb=MB,
        staged_key=STAGED,
        field=FIELD,
        **kwargs,
    )


def staged(s3: Any) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=STAGED)["Body"].read()


def no_upload_left(s3: Any) -> bool:
    return not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def assert_staged(s3: Any, data: bytes, result: ScanResult, limit: int = LIMIT) -> bytes:
    copy = staged(s3)
    assert copy == expected_copy(data, limit)
    assert len(lines_of(copy)) == len(lines_of(data)) == result.lines
    assert result.staged_key == STAGED
    assert no_upload_left(s3)
    return copy


# --- needs_scan, top_level_id, rejection_line ----------------------------------------------------------------------


def test_only_a_file_over_the_smallest_limit_is_scanned() -> None:
    assert not needs_scan(record_limit_bytes(1))
    assert needs_scan(record_limit_bytes(1) + 1)
    assert not needs_scan(0)


@pytest.mark.parametrize(
    ("prefix", "found"),
    [
        (b'{"id": "a-1", "inputs": "x"', (True, "a-1")),
        (b'  {  "id" : 17 , "x": 1', (True, 17)),
        (b'{"id": -1.5e3}', (True, -1500.0)),
        (b'{"id": true,', (True, True)),
        (b'{"id": null}', (True, None)),
        (b'{"inputs": "' + b"y" * 30_000 + b'", "parameters": {"id": "inner"}, "id": "after"}', (True, "after")),
        (b'{"\\u0069d": "escaped"}', (True, "escaped")),  # decoded as json.loads decodes it: the handler's "id"
        (b'{"id": "\xc3\xa9t\xc3\xa9"}', (True, "été")),
        (b'{"id": "first", "id": "second"}', (True, "first")),
    ],
)
def test_the_top_level_id_is_read_when_it_lies_whole_in_the_prefix(prefix: bytes, found: tuple[bool, Any]) -> None:
    assert top_level_id(prefix) == found


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(b'{"inputs": "' + b"y" * 1000, id="a value runs past the prefix"),
        pytest.param(b'{"parameters": {"id": "inner", "candidate_labels": ["a"', id="nested id only"),
        pytest.param(b'{"parameters": {"id": "inner"}}', id="nested id, object ends"),
        pytest.param(b'{"id": {"a": 1}, "inputs": "x"}', id="object id"),
        pytest.param(b'{"id": [1, 2], "inputs": "x"}', id="list id"),
        pytest.param(b'{"id": 12', id="number cut by the prefix end"),
        pytest.param(b'{"id": "abc', id="string cut"),
        pytest.param(b'{"id": NaN, "x": 1}', id="NaN"),
        pytest.param(b'{"i', id="key cut"),
        pytest.param(b'{"id" "x"}', id="no colon"),
        pytest.param(b'["id", 1]', id="not an object"),
        pytest.param(b'{"id": "\xff"}', id="not UTF-8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{" + b'"a": ' + b"[" * 50_000, id="nested too deeply to skip"),
        pytest.param(b'{"inputs": "x"}', id="no id"),
    ],
)
def test_no_id_is_guessed(prefix: bytes) -> None:
    assert top_level_id(prefix) == (False, None)


def test_a_character_cut_at_the_prefix_end_does_not_hide_an_earlier_id() -> None:
    prefix = '{"id": 7, "inputs": "é'.encode()[:-1]  # the prefix ends inside a two-byte character
    assert top_level_id(prefix) == (True, 7)


def test_a_rejection_is_one_json_line_with_the_id_and_what_to_do() -> None:
    record = OversizedRecord(line=12, offset=4096, size=3_500_000, has_id=True, id="tweet-9")
    text = rejection_line(record, limit_bytes=record_limit_bytes(2), max_payload_mb=2, field=FIELD)

    assert text.endswith(b"\n") and text.count(b"\n") == 1
    value = json.loads(text)
    assert list(value) == ["id", FIELD]
    assert value["id"] == "tweet-9"
    message = value[FIELD]
    for part in ("Line 12", "3,500,000 bytes", "2,000,000-byte limit", "MaxPayloadInMB=2", "split its texts"):
        assert part in message
    assert "batch_max_payload_mb" in message and "100" in message


def test_a_rejection_without_an_id_carries_none_and_at_100_mb_only_splitting_is_offered() -> None:
    record = OversizedRecord(line=1, offset=0, size=100_000_001)
    value = json.loads(rejection_line(record, limit_bytes=record_limit_bytes(100), max_payload_mb=100, field=FIELD))
    assert list(value) == [FIELD]
    assert "split its texts" in value[FIELD]
    assert "batch_max_payload_mb" not in value[FIELD]


def test_a_rejection_keeps_an_unusual_id_exactly() -> None:
    record = OversizedRecord(line=3, offset=10, size=5000, has_id=True, id="\ud800 lone surrogate")
    text = rejection_line(record, limit_bytes=LIMIT, max_payload_mb=MB, field=FIELD)
    assert text.isascii()
    assert json.loads(text)["id"] == "\ud800 lone surrogate"


# --- ScanResult --------------------------------------------------------------------------------------------------


def test_a_scan_record_reads_back_what_it_wrote() -> None:
    result = ScanResult(
        size=10_000,
        lines=7,
        largest_record=1_999,
        oversized_count=3,
        oversized=(
            OversizedRecord(2, 100, 4000, True, "x"),
            OversizedRecord(5, 6000, 2001),
            OversizedRecord(6, 8001, 2500, True, None),
        ),
        staged_key=STAGED,
        limit_bytes=LIMIT,
    )  # fmt: skip
    assert ScanResult.decode(result.encode()) == result
    assert ScanResult.decode(result.encode().decode()) == result
    clean = ScanResult(
        size=5, lines=1, largest_record=5, oversized_count=0, oversized=(), staged_key=None, limit_bytes=9
    )
    assert ScanResult.decode(clean.encode()) == clean


VALID_SCAN = {
    "scan": 1, "size": 1, "lines": 1, "largest_record": 1, "oversized_count": 0, "oversized": [], "staged_key": None,
    "limit_bytes": 1,
}  # fmt: skip


def test_the_valid_scan_record_the_refusals_start_from_is_one() -> None:
    assert ScanResult.decode(json.dumps(VALID_SCAN)).size == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b"\xff\xfe",
        json.dumps({**VALID_SCAN, "scan": 2}),
        json.dumps({**VALID_SCAN, "staged_key": 5}),
        json.dumps({**VALID_SCAN, "size": True}),
        json.dumps({**VALID_SCAN, "size": -1}),
        json.dumps({**VALID_SCAN, "lines": "1"}),
        json.dumps({**VALID_SCAN, "oversized": [3]}),
        json.dumps({**VALID_SCAN, "oversized": {}}),
        json.dumps({**VALID_SCAN, "oversized": [{"line": 1, "offset": 0, "size": 2, "has_id": "yes"}]}),
        json.dumps({key: value for key, value in VALID_SCAN.items() if key != "limit_bytes"}),
    ],
)
def test_what_is_not_a_scan_record_is_refused(body: bytes | str) -> None:
    with pytest.raises(ValueError):
        ScanResult.decode(body)


def test_a_scan_refuses_to_write_over_its_input_or_to_read_nothing() -> None:
    arguments: dict[str, Any] = {"bucket": BUCKET, "version_id": None, "limit_bytes": LIMIT, "max_payload_mb": MB}
    with pytest.raises(ValueError, match="cannot replace it"):
        scan_and_stage(None, key=KEY, staged_key=KEY, field=FIELD, **arguments)
    with pytest.raises(ValueError, match="chunk_bytes"):
        scan_and_stage(None, key=KEY, staged_key=STAGED, field=FIELD, chunk_bytes=0, **arguments)


# --- scan_and_stage: small files ---------------------------------------------------------------------------------


def test_a_clean_file_writes_nothing(s3: Any) -> None:
    data = small_lines(20) + b"\n" + line("edge", LIMIT) + small_lines(3, size=LIMIT - 1, start=50)
    version = put(s3, data)
    client = Recorder(s3)

    result = scan(client, version, chunk_bytes=777)

    assert result == ScanResult(
        size=len(data), lines=25, largest_record=LIMIT, oversized_count=0, oversized=(), staged_key=None,
        limit_bytes=LIMIT,
    )  # fmt: skip
    assert client.names() == ["get_object"]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="manifests/")
    assert no_upload_left(s3)
    assert client.bodies[0].read_bytes == len(data)


def test_an_oversized_line_is_replaced_and_the_rest_kept(s3: Any) -> None:
    before, big, after = small_lines(10), line("big-1", LIMIT + 500), small_lines(5, start=10)
    data = before + big + after
    version = put(s3, data)

    result = scan(s3, version, chunk_bytes=300)

    assert_staged(s3, data, result)
    assert result.size == len(data) and result.lines == 16
    assert result.largest_record == 100
    assert result.oversized_count == 1
    assert result.oversized == (
        OversizedRecord(line=11, offset=len(before), size=LIMIT + 500, has_id=True, id="big-1"),
    )
    copy_lines = lines_of(staged(s3))
    assert json.loads(copy_lines[10]) == {"id": "big-1", FIELD: json.loads(copy_lines[10])[FIELD]}
    assert copy_lines[:10] == lines_of(before) and copy_lines[11:] == lines_of(after)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 1999, 2000, 2001, SCAN_CHUNK_BYTES])
def test_the_limit_is_a_line_with_its_newline(s3: Any, chunk_bytes: int) -> None:
    # exactly the limit (kept), one byte over by its newline alone (oversized), CRLF counting its "\r", empty lines
    data = (
        line("exact", LIMIT)
        + line("over-by-newline", LIMIT + 1)
        + b"\n\n"
        + line("crlf-exact", LIMIT, end=b"\r\n")
        + line("crlf-over", LIMIT + 1, end=b"\r\n")
        + small_lines(2)
    )
    version = put(s3, data)

    result = scan(s3, version, chunk_bytes=chunk_bytes)

    assert_staged(s3, data, result)
    assert [(r.line, r.size, r.id) for r in result.oversized] == [
        (2, LIMIT + 1, "over-by-newline"),
        (6, LIMIT + 1, "crlf-over"),
    ]
    assert result.largest_record == LIMIT
    assert result.lines == 8


def test_two_adjacent_oversized_lines_and_one_at_the_end_without_newline(s3: Any) -> None:
    a, b = line("a", LIMIT * 3), line("b", LIMIT + 1)
    last = line("last", LIMIT * 2, end=b"")
    data = small_lines(2) + a + b + small_lines(1, start=2) + last
    version = put(s3, data)

    result = scan(s3, version, chunk_bytes=512)

    copy = assert_staged(s3, data, result)
    assert copy.endswith(b"\n")  # a rejection always ends its line
    assert [(r.line, r.offset, r.size) for r in result.oversized] == [
        (3, 200, len(a)), (4, 200 + len(a), len(b)), (6, 300 + len(a) + len(b), len(last)),
    ]  # fmt: skip


def test_a_kept_last_line_without_newline_stays_without(s3: Any) -> None:
    data = line("big", LIMIT + 10) + line("tail", 50, end=b"")
    version = put(s3, data)

    result = scan(s3, version)

    copy = assert_staged(s3, data, result)
    assert copy.endswith(line("tail", 50, end=b""))
    assert result.lines == 2 and result.largest_record == 50


def test_a_file_of_one_huge_line(s3: Any) -> None:
    data = b'{"id": 42, "inputs": "' + b"x" * 50_000 + b'"}'
    version = put(s3, data)

    result = scan(s3, version, chunk_bytes=4096)

    assert staged(s3) == expected_copy(data, LIMIT)
    assert result.oversized == (OversizedRecord(1, 0, len(data), True, 42),)
    assert result.lines == 1 and result.largest_record == 0


def test_an_id_past_the_prefix_or_an_unreadable_line_gets_a_rejection_without_id(s3: Any) -> None:
    late_id = b'{"inputs": "' + b"x" * ID_PREFIX_BYTES + b'", "id": "late"}\n'
    not_json = b"y" * (LIMIT + 1) + b"\n"
    bom_first = b"\xef\xbb\xbf" + line("bom", LIMIT + 5)
    data = bom_first + late_id + not_json
    version = put(s3, data)

    result = scan(s3, version)

    assert [(r.has_id, r.id) for r in result.oversized] == [(True, "bom"), (False, None), (False, None)]
    copy = lines_of(staged(s3))
    assert [list(json.loads(text)) for text in copy] == [["id", FIELD], [FIELD], [FIELD]]


def test_more_oversized_lines_than_listed_are_all_counted_and_replaced(s3: Any) -> None:
    data = b"".join(line(i, LIMIT + 1) + small_lines(1, start=i) for i in range(MAX_LISTED + 5))
    version = put(s3, data)

    result = scan(s3, version, chunk_bytes=64 * 1024)

    assert_staged(s3, data, result)
    assert result.oversized_count == MAX_LISTED + 5
    assert len(result.oversized) == MAX_LISTED
    assert [r.id for r in result.oversized] == list(range(MAX_LISTED))


def test_the_named_version_is_read_not_the_newest(s3: Any) -> None:
    old = small_lines(3) + line("old-big", LIMIT + 1)
    old_version = put(s3, old)
    put(s3, small_lines(4, start=100))  # overwritten after the event named the old version
    client = Recorder(s3)

    result = scan(client, old_version)

    assert client.calls[0] == ("get_object", {"Bucket": BUCKET, "Key": KEY, "VersionId": old_version})
    assert_staged(s3, old, result)
    assert result.oversized[0].id == "old-big"


def test_extra_arguments_go_to_the_multipart_upload(s3: Any) -> None:
    data = line("big", LIMIT + 1)
    version = put(s3, data)

    scan(s3, version, extra_args={"ContentType": "application/jsonlines"})

    assert s3.head_object(Bucket=BUCKET, Key=STAGED)["ContentType"] == "application/jsonlines"


def test_a_failed_part_aborts_the_copy_and_a_retry_writes_it(s3: Any) -> None:
    data = small_lines(5) + line("big", LIMIT + 1) + small_lines(5, start=5)
    version = put(s3, data)
    failing = Recorder(s3, fail_upload_part=1)

    with pytest.raises(ConnectionError, match="injected"):
        scan(failing, version)

    assert "abort_multipart_upload" in failing.names()
    assert no_upload_left(s3)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="manifests/")
    assert_staged(s3, data, scan(s3, version))


def test_a_read_failing_midway_aborts_the_copy(s3: Any) -> None:
    data = line("big", LIMIT + 1) + small_lines(50)
    version = put(s3, data)

    class BreakingBody(CountingBody):
        def read(self, amount: int | None = None) -> bytes:
            if self.read_bytes > LIMIT:
                raise ConnectionError("injected: the read timed out")
            return super().read(amount)

    class Breaking(Recorder):
        def get_object(self, **kwargs: Any) -> dict[str, Any]:
            response = self.client.get_object(**kwargs)
            response["Body"] = BreakingBody(response["Body"])
            return response

    client = Breaking(s3)
    with pytest.raises(ConnectionError, match="read timed out"):
        scan(client, version, chunk_bytes=1000)

    assert "create_multipart_upload" in client.names() and "abort_multipart_upload" in client.names()
    assert no_upload_left(s3)


# --- scan_and_stage: multipart (files over 5 MiB) ----------------------------------------------------------------


def test_a_head_past_5_mib_is_copied_server_side_from_the_version_read(s3: Any) -> None:
    before = small_lines(MIN_PART_BYTES // 1000 + 300, size=1000)  # ~5.3 MiB of clean lines
    data = before + line("big", LIMIT + 1) + small_lines(10, start=10_000)
    version = put(s3, data)
    put(s3, b"overwritten\n")
    client = Recorder(s3)

    result = scan(client, version)

    assert_staged(s3, data, result)
    copies = [kwargs for name, kwargs in client.calls if name == "upload_part_copy"]
    assert [(c["CopySource"], c["CopySourceRange"], c["PartNumber"]) for c in copies] == [
        ({"Bucket": BUCKET, "Key": KEY, "VersionId": version}, f"bytes=0-{len(before) - 1}", 1)
    ]
    assert result.oversized[0].offset == len(before)
    assert client.bodies[0].read_bytes == len(data)


def test_an_unversioned_bucket_copies_the_object_read(s3: Any) -> None:
    s3.create_bucket(Bucket="plain")
    data = small_lines(MIN_PART_BYTES // 1000 + 10, size=1000) + line("big", LIMIT + 1)
    s3.put_object(Bucket="plain", Key=KEY, Body=data)

    result = scan_and_stage(
        s3, bucket="plain", key=KEY, version_id=None, limit_bytes=LIMIT, max_payload_mb=MB, staged_key=STAGED,
        field=FIELD,
    )  # fmt: skip

    assert s3.get_object(Bucket="plain", Key=STAGED)["Body"].read() == expected_copy(data, LIMIT)
    assert result.staged_key == STAGED


def test_a_long_file_after_the_first_oversized_line_is_written_in_several_parts(s3: Any) -> None:
    data = line("first", LIMIT + 1) + small_lines(2 * PART_BYTES // 1000 + 500, size=1000) + line("end", LIMIT * 2)
    version = put(s3, data)
    client = Recorder(s3)

    result = scan(client, version)

    assert_staged(s3, data, result)
    assert client.names().count("upload_part") == 3
    assert "upload_part_copy" not in client.names()
    assert result.oversized_count == 2


# Lines longer than a part that are kept: a limit over PART_BYTES (a job of 9 MB).
LONG_LIMIT = record_limit_bytes(9)


def test_a_long_kept_line_after_a_short_decided_part_stands_in_its_tentative_part(s3: Any) -> None:
    # decided bytes (1 MiB) under MIN_PART_BYTES when the long line fills the buffer: they go in a tentative part
    # with the line's first bytes, which stands once the line ends within the limit
    data = line("over", LONG_LIMIT + 1) + small_lines(1000, size=1000) + line("long", LONG_LIMIT) + small_lines(3)
    version = put(s3, data)
    client = Recorder(s3)

    result = scan(client, version, limit=LONG_LIMIT)

    assert_staged(s3, data, result, LONG_LIMIT)
    assert result.largest_record == LONG_LIMIT and result.oversized_count == 1
    assert [kwargs["PartNumber"] for name, kwargs in client.calls if name == "upload_part"] == [1, 2]
    assert "upload_part_copy" not in client.names()


def test_a_line_longer_than_two_parts_is_left_on_s3_and_copied_server_side_when_kept(s3: Any) -> None:
    # a tentative part (4 MiB decided + the line's first 4 MiB), then a buffer of nothing but the line's bytes:
    # dropped, and the rest of the line copied from the original once it ends within the limit
    limit = record_limit_bytes(14)
    over, decided = line("over", limit + 1), small_lines(4 * 1024, size=1024)
    data = over + decided + line("long", limit) + small_lines(3)
    version = put(s3, data)
    client = Recorder(s3)

    result = scan(client, version, limit=limit)

    copy = assert_staged(s3, data, result, limit)
    assert result.largest_record == limit
    calls = [(name, kwargs) for name, kwargs in client.calls if name.startswith("upload_part")]
    assert [(name, kwargs["PartNumber"]) for name, kwargs in calls] == [
        ("upload_part", 1), ("upload_part_copy", 2), ("upload_part", 3),
    ]  # fmt: skip
    rejection = lines_of(copy)[0]
    long_start = len(over) + len(decided)
    line_bytes_in_part_1 = calls[0][1]["size"] - len(rejection) - len(decided)
    assert line_bytes_in_part_1 > 0
    copied = f"bytes={long_start + line_bytes_in_part_1}-{long_start + limit - 1}"
    assert calls[1][1]["CopySourceRange"] == copied
    assert calls[1][1]["CopySource"]["VersionId"] == version


def test_a_long_line_that_turns_out_oversized_redoes_its_tentative_part(s3: Any) -> None:
    data = (
        line("over-1", LONG_LIMIT + 1)
        + small_lines(1000, size=1000)
        + line("over-2", LONG_LIMIT + 1)  # fills a tentative part, then passes the limit by its newline
        + small_lines(7000, size=1000)  # more than a part after it
    )
    version = put(s3, data)
    client = Recorder(s3)

    result = scan(client, version, limit=LONG_LIMIT)

    assert_staged(s3, data, result, LONG_LIMIT)
    assert [r.id for r in result.oversized] == ["over-1", "over-2"]
    numbers = [kwargs["PartNumber"] for name, kwargs in client.calls if name == "upload_part"]
    assert numbers[0] == 1 and numbers.count(1) == 2  # part 1 uploaded tentatively, then redone
    assert "upload_part_copy" not in client.names()


def test_a_long_kept_line_after_a_full_decided_part(s3: Any) -> None:
    # decided bytes over MIN_PART_BYTES go as their own part; the long line then fills a buffer of its own, which
    # is dropped (small reads: the line does not end in the read that fills it) and copied from the original
    data = line("over", LONG_LIMIT + 1) + small_lines(6000, size=1000) + line("long", 9_000_000) + small_lines(2)
    version = put(s3, data)
    client = Recorder(s3)

    result = scan(client, version, limit=LONG_LIMIT, chunk_bytes=64 * 1024)

    assert_staged(s3, data, result, LONG_LIMIT)
    assert result.largest_record == 9_000_000
    calls = [(name, kwargs) for name, kwargs in client.calls if name.startswith("upload_part")]
    assert [name for name, _ in calls] == ["upload_part", "upload_part_copy", "upload_part"]
    long_start = len(data) - len(small_lines(2)) - 9_000_000
    assert calls[0][1]["size"] == len(lines_of(staged(s3))[0]) + 6000 * 1000  # the rejection and the decided lines
    assert calls[1][1]["CopySourceRange"] == f"bytes={long_start}-{long_start + 9_000_000 - 1}"


# --- every path, on small parts: a property ------------------------------------------------------------------------


class MemoryS3:
    """A fake S3 client holding one object, with S3's rules on multipart uploads at the module's (patched) sizes:
    every part but the last of at least MIN_PART_BYTES, copy ranges of at most MAX_COPY_PART_BYTES."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.body: CountingBody | None = None
        self.parts: dict[int, bytes] = {}
        self.handed: dict[int, bytes] = {}
        self.staged: bytes | None = None
        self.aborted = False

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["VersionId"] == "v1"
        self.body = CountingBody(io.BytesIO(self.data))
        return {"Body": self.body, "ETag": '"e1"', "VersionId": "v1"}

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        assert self.staged is None and not self.parts
        return {"UploadId": "u1"}

    def upload_part(self, *, PartNumber: int, Body: bytes, **kwargs: Any) -> dict[str, Any]:
        self.parts[PartNumber] = bytes(Body)
        self.handed[PartNumber] = Body  # the object itself: the scan must not change it once uploaded
        return {"ETag": f'"{PartNumber}-{len(Body)}"'}

    def upload_part_copy(
        self, *, PartNumber: int, CopySource: dict[str, str], CopySourceRange: str, **kwargs: Any
    ) -> dict[str, Any]:
        assert CopySource == {"Bucket": BUCKET, "Key": KEY, "VersionId": "v1"}
        assert kwargs["CopySourceIfMatch"] == '"e1"'
        a, b = (int(n) for n in CopySourceRange.removeprefix("bytes=").split("-"))
        assert 0 <= a <= b < len(self.data)
        assert b + 1 - a <= oversize.MAX_COPY_PART_BYTES
        self.parts[PartNumber] = self.data[a : b + 1]
        self.handed.pop(PartNumber, None)
        return {"CopyPartResult": {"ETag": f'"{PartNumber}-{b + 1 - a}"'}}

    def complete_multipart_upload(self, *, MultipartUpload: dict[str, Any], **kwargs: Any) -> None:
        numbers = [part["PartNumber"] for part in MultipartUpload["Parts"]]
        assert numbers == sorted(set(numbers)) and numbers
        for part in MultipartUpload["Parts"]:
            body = self.parts[part["PartNumber"]]
            assert part["ETag"] == f'"{part["PartNumber"]}-{len(body)}"', "a part's ETag is its latest upload's"
        assert all(len(self.parts[n]) >= oversize.MIN_PART_BYTES for n in numbers[:-1]), "EntityTooSmall"
        assert all(bytes(self.handed[n]) == self.parts[n] for n in numbers if n in self.handed)
        self.staged = b"".join(self.parts[n] for n in numbers)

    def abort_multipart_upload(self, **kwargs: Any) -> None:
        self.aborted = True


@st.composite
def jsonl_files(draw: st.DrawFn, limit: int) -> bytes:
    """JSON Lines around ``limit``: records with ids, junk, empty lines, LF and CRLF, a last line with or without
    its newline."""
    sizes = st.one_of(st.integers(0, 40), st.integers(limit - 3, limit + 3), st.integers(0, 4 * limit))
    out: list[bytes] = []
    for number in range(draw(st.integers(0, 25))):
        end = draw(st.sampled_from([b"\n", b"\r\n"]))
        size = max(draw(sizes), len(end))
        if size >= 40 and draw(st.booleans()):
            out.append(line(f"r{number}", size, end=end))
        else:
            out.append(b"y" * (size - len(end)) + end)
    without_newline = draw(st.booleans())
    if out and without_newline:
        out[-1] = out[-1].rstrip(b"\r\n") or b"z"
    return b"".join(out)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_file_is_staged_exactly_through_every_path(data: st.DataObject) -> None:
    # Parts of tens of bytes (the module's sizes patched) take a few hundred bytes through every path of the copy:
    # the head, server-side copies of the head and of long lines (split in ranges), tentative parts kept or redone.
    minimum = data.draw(st.integers(16, 120), label="MIN_PART_BYTES")
    part = minimum + data.draw(st.integers(0, 120), label="PART_BYTES - MIN_PART_BYTES")
    copy_max = data.draw(st.integers(2 * minimum, 5 * minimum), label="MAX_COPY_PART_BYTES")
    limit = data.draw(st.integers(4, 3 * part), label="limit")
    chunk = data.draw(st.integers(1, 3 * part), label="chunk_bytes")
    file = data.draw(jsonl_files(limit), label="file")
    client = MemoryS3(file)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(oversize, "MIN_PART_BYTES", minimum)
        patch.setattr(oversize, "PART_BYTES", part)
        patch.setattr(oversize, "MAX_COPY_PART_BYTES", copy_max)
        result = scan_and_stage(
            client, bucket=BUCKET, key=KEY, version_id="v1", limit_bytes=limit, max_payload_mb=MB, staged_key=STAGED,
            field=FIELD, chunk_bytes=chunk,
        )  # fmt: skip

    lines = lines_of(file)
    over = [(n, len(text)) for n, text in enumerate(lines, start=1) if len(text) > limit]
    assert result.size == len(file) == client.body.read_bytes  # type: ignore[union-attr]
    assert result.lines == len(lines)
    assert result.largest_record == max((len(text) for text in lines if len(text) <= limit), default=0)
    assert [(r.line, r.size) for r in result.oversized] == over
    assert result.oversized_count == len(over)
    assert not client.aborted
    if over:
        assert result.staged_key == STAGED
        assert client.staged == expected_copy(file, limit)
    else:
        assert result.staged_key is None and client.staged is None and not client.parts


# --- memory ------------------------------------------------------------------------------------------------------


class DiskS3:
    """A fake S3 client for the memory bound: it serves one object from bytes built before tracing starts, keeps
    uploaded parts on disk and copy ranges as offsets, so that traced memory is the scan's own."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.body = CountingBody(io.BytesIO(data))
        self.disk = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the test
        self.parts: dict[int, tuple[str, int, int]] = {}
        self.completed: list[int] = []

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"Body": self.body, "ETag": '"etag"', "VersionId": kwargs.get("VersionId")}

    def create_multipart_upload(self, **kwargs: Any) -> dict[str, Any]:
        return {"UploadId": "upload-1"}

    def upload_part(self, *, PartNumber: int, Body: bytes, **kwargs: Any) -> dict[str, Any]:
        start = self.disk.seek(0, io.SEEK_END)
        self.disk.write(Body)
        self.parts[PartNumber] = ("disk", start, len(Body))
        return {"ETag": f'"{PartNumber}"'}

    def upload_part_copy(self, *, PartNumber: int, CopySourceRange: str, **kwargs: Any) -> dict[str, Any]:
        a, b = (int(n) for n in CopySourceRange.removeprefix("bytes=").split("-"))
        self.parts[PartNumber] = ("source", a, b + 1 - a)
        return {"CopyPartResult": {"ETag": f'"{PartNumber}"'}}

    def complete_multipart_upload(self, *, MultipartUpload: dict[str, Any], **kwargs: Any) -> None:
        self.completed = [part["PartNumber"] for part in MultipartUpload["Parts"]]

    def staged(self) -> bytes:
        out = bytearray()
        for number in self.completed:
            where, start, length = self.parts[number]
            if where == "source":
                out += self.data[start : start + length]
            else:
                self.disk.seek(start)
                out += self.disk.read(length)
        return bytes(out)


def layout_bytes(layout: list[tuple[str, int]]) -> bytes:
    """("small", n): n bytes of 1,000-byte lines; ("line", n): one line of n bytes."""
    pieces = []
    for i, (kind, size) in enumerate(layout):
        pieces.append(
            small_lines(size // 1000, size=1000, start=i * 100_000) if kind == "small" else line(f"l{i}", size)
        )
    return b"".join(pieces)


OVERSIZED_20 = [("small", 2 * MiB), ("line", 20 * MiB), ("small", 2 * MiB)]
KEPT_20 = [("line", 22 * MiB), ("small", 1 * MiB), ("line", 20 * MiB), ("small", 1 * MiB)]


@pytest.mark.parametrize(
    ("limit", "layout"),
    [
        pytest.param(record_limit_bytes(1), OVERSIZED_20, id="20 MiB line oversized"),
        pytest.param(record_limit_bytes(21), KEPT_20, id="20 MiB line kept after an oversized one"),
        pytest.param(record_limit_bytes(21), [("small", 24 * MiB)], id="24 MiB of clean lines"),
    ],
)
def test_memory_stays_bounded_whatever_the_line_size(limit: int, layout: list[tuple[str, int]]) -> None:
    data = layout_bytes(layout)
    expected = expected_copy(data, limit)
    client = DiskS3(data)

    tracemalloc.start()
    try:
        result = scan_and_stage(
            client, bucket=BUCKET, key=KEY, version_id="v1", limit_bytes=limit, max_payload_mb=MB, staged_key=STAGED,
            field=FIELD,
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    bound = MIN_PART_BYTES + PART_BYTES + ID_PREFIX_BYTES + 2 * SCAN_CHUNK_BYTES + 4 * MiB  # 4 MiB: slack
    assert peak < bound, f"peak {peak / MiB:.1f} MiB over {bound / MiB:.1f} MiB"
    assert client.body.read_bytes == len(data)  # one pass
    assert result.size == len(data)
    if result.staged_key is None:
        assert expected == data and not client.parts
    else:
        assert client.staged() == expected
    client.disk.close()


def test_memory_with_moto_serving_the_object(s3: Any) -> None:
    # moto's GET holds the whole object (about 24 MiB of the peak is moto's): the scan must add little to it
    data = small_lines(2 * MiB // 1000) + line("big", 20 * MiB) + small_lines(2 * MiB // 1000, start=5000)
    version = put(s3, data)
    expected, size = expected_copy(data, record_limit_bytes(1)), len(data)
    del data
    client = Recorder(s3)

    tracemalloc.start()
    try:
        result = scan(client, version, limit=record_limit_bytes(1))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 40 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert client.bodies[0].read_bytes == size == result.size
    assert staged(s3) == expected
