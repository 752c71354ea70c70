"""The importer's I/O pieces without a network: verified streams, the multipart writer, deletion, redirects."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from http.client import IncompleteRead

import pytest

from functions.model_importer.logic import HubFile, ImportFailure
from functions.model_importer.service import MultipartWriter, VerifiedStream, _SameOriginAuthRedirects, delete_artifact

MODEL = "acme/nli"
REV = "a" * 40


def hub_file(path: str, content: bytes = b"x", *, lfs: bool = True) -> HubFile:
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    return HubFile(
        path=path, size=len(content), blob_id=blob, sha256=hashlib.sha256(content).hexdigest() if lfs else None
    )


# --- VerifiedStream -------------------------------------------------------------------------------------------------


class FlakyResponse(io.BytesIO):
    """Serves ``data`` from ``offset``; raises IncompleteRead after ``fail_after`` bytes (once per instance)."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise IncompleteRead(b"")
        if self.fail_after is not None:
            size = min(size, self.fail_after - self.tell())
        return super().read(size)


@pytest.mark.parametrize("lfs", [True, False])
def test_verified_stream_accepts_matching_content(lfs):
    content = b"weights" * 1000
    stream = VerifiedStream(
        hub_file("model.safetensors", content, lfs=lfs), lambda offset: io.BytesIO(content[offset:])
    )

    assert stream.read(len(content) + 10) == content
    stream.verify(MODEL)


@pytest.mark.parametrize("lfs", [True, False])
def test_verified_stream_rejects_altered_content(lfs):
    content = b"weights" * 1000
    altered = content[:-1] + b"X"
    stream = VerifiedStream(
        hub_file("model.safetensors", content, lfs=lfs), lambda offset: io.BytesIO(altered[offset:])
    )
    stream.read()

    with pytest.raises(ImportFailure, match="Checksum mismatch"):
        stream.verify(MODEL)


def test_verified_stream_resumes_at_the_byte_it_stopped():
    content = bytes(range(256)) * 40
    offsets: list[int] = []

    def opener(offset: int) -> FlakyResponse:
        offsets.append(offset)
        return FlakyResponse(content[offset:], fail_after=3000 if offset == 0 else None)

    stream = VerifiedStream(hub_file("model.safetensors", content), opener)

    assert stream.read(len(content)) == content  # one read: exactly the bytes asked for, despite the break
    stream.verify(MODEL)
    assert offsets == [0, 3000]


def test_verified_stream_gives_up_after_repeated_failures(monkeypatch):
    monkeypatch.setattr("functions.model_importer.service.time.sleep", lambda _s: None)
    content = b"a" * 100
    stream = VerifiedStream(hub_file("model.safetensors", content), lambda offset: FlakyResponse(b"", fail_after=0))

    with pytest.raises(ImportFailure, match="failed 4 times at byte 0 of 100"):
        stream.read()


def test_verified_stream_detects_a_short_file():
    content = b"a" * 100
    stream = VerifiedStream(hub_file("model.safetensors", content), lambda offset: io.BytesIO(b"a" * 50))
    stream.done = 50  # as if the server had closed cleanly without sending the rest

    with pytest.raises(ImportFailure, match="ended after 50 of 100 bytes"):
        stream.verify(MODEL)


# --- MultipartWriter ------------------------------------------------------------------------------------------------


class RecordingS3:
    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.completed: list[dict] | None = None
        self.aborted = False
        self.deleted: list[str] = []

    def create_multipart_upload(self, **kwargs):
        self.created = kwargs
        return {"UploadId": "u1"}

    def upload_part(self, *, PartNumber, Body, **_):
        self.parts[PartNumber] = Body
        return {"ETag": f'"{PartNumber}"', "ChecksumCRC32": f"crc{PartNumber}"}

    def complete_multipart_upload(self, *, MultipartUpload, **_):
        self.completed = MultipartUpload["Parts"]
        return {}

    def abort_multipart_upload(self, **_):
        self.aborted = True

    def delete_object(self, *, Key, **_):
        self.deleted.append(Key)


def test_writer_cuts_fixed_size_parts_and_completes_with_their_checksums():
    s3 = RecordingS3()
    writer = MultipartWriter(s3, "b", "k", part_size=10, extra_args={"Metadata": {"a": "b"}})
    data = bytes(range(25))

    for i in range(0, 25, 3):
        writer.write(data[i : i + 3])
    writer.complete()

    assert [s3.parts[n] for n in sorted(s3.parts)] == [data[:10], data[10:20], data[20:]]
    assert s3.completed == [{"PartNumber": n, "ETag": f'"{n}"', "ChecksumCRC32": f"crc{n}"} for n in (1, 2, 3)]
    assert writer.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert s3.created["Metadata"] == {"a": "b"}


def test_writer_abort_discards_the_upload():
    s3 = RecordingS3()
    writer = MultipartWriter(s3, "b", "k", part_size=10)
    writer.write(b"x" * 15)

    writer.abort()

    assert s3.aborted is True
    assert s3.completed is None


# --- delete_artifact ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "failed-create:2026/11/01/[$LATEST]abc",
        "s3://other-bucket/models/a/b/c/model.tar.gz",
        "s3://bucket/input/a.jsonl",
        "s3://bucket/models/../input/model.tar.gz",
    ],
)
def test_delete_leaves_anything_not_ours_alone(url):
    s3 = RecordingS3()

    assert delete_artifact(s3, bucket="bucket", prefix="models/", url=url) is False
    assert s3.deleted == []


def test_delete_removes_the_artifact_and_its_manifest():
    s3 = RecordingS3()

    assert delete_artifact(s3, bucket="bucket", prefix="models/", url="s3://bucket/models/m/r/c/model.tar.gz")
    assert s3.deleted == ["models/m/r/c/model.tar.gz", "models/m/r/c/manifest.json"]


# --- the token on redirects (issue 13 item 5) -----------------------------------------------------------------------


def redirected(hub_url: str, target: str) -> urllib.request.Request:
    request = urllib.request.Request(f"{hub_url}/acme/nli/resolve/{REV}/config.json")
    request.add_header("Authorization", "Bearer hf_secret")
    new = _SameOriginAuthRedirects(hub_url).redirect_request(request, None, 302, "Found", {}, target)
    assert new is not None
    return new


@pytest.mark.parametrize(
    "target",
    [
        "http://huggingface.co/acme/nli/resolve/main/config.json",  # https -> http, same host: clear text
        "https://cdn-lfs.huggingface.co/repos/ab/cd/file?X-Amz-Signature=1",  # another host
        "https://huggingface.co:8443/acme/nli/config.json",  # another port
    ],
)
def test_the_token_is_dropped_on_any_scheme_host_or_port_change(target):
    assert not redirected("https://huggingface.co", target).has_header("Authorization")


def test_the_token_is_kept_on_the_hubs_own_origin_whatever_the_case():
    new = redirected("https://huggingface.co", "https://HuggingFace.co/api/resolve-cache/x")

    assert new.get_header("Authorization") == "Bearer hf_secret"
