"""The model importer's I/O: the Hub's HTTP API, verified downloads, the S3 multipart writer and the import itself.

``import_model`` copies a pinned Hugging Face model into the stack's bucket as a SageMaker ``model.tar.gz``,
streaming and verified; the rules it applies (what is copied, where, the checks and the messages) are in
``logic.py``. Standard library HTTP, and a boto3 S3 client passed in, so tests use a fake Hub and moto.

Integrity: every file is checked while it streams through (:class:`VerifiedStream`); a mismatch aborts the multipart
upload, so no artifact is written.

Memory: the tarball is written as a stream (tar -> gzip -> S3 multipart parts of ``part_size`` bytes); at most
``part_size × (max_in_flight + 1)`` bytes are held, whatever the model's size.

Visibility: the object exists only once the multipart upload completes (S3 semantics), with the inputs in its
metadata: its existence is the completion marker, and a re-deploy finds it and copies nothing. gzip carries no name
or time, so the same files give the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import logging
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from http.client import HTTPException
from typing import Any, Final

from .logic import (
    DEFAULT_HUB,
    DEPLOY_ADVICE,
    MAX_SMALL_FILE,
    MIB,
    PART_SIZE,
    READ_CHUNK,
    Advice,
    CheckedRevision,
    HubFile,
    HubUnreachable,
    ImportFailure,
    ImportRequest,
    ImportResult,
    RevisionInfo,
    artifact_manifest,
    artifact_metadata,
    check_architecture,
    check_download,
    check_nli_config,
    check_request,
    check_resolved_commit,
    check_tokenizer_files,
    completed_part,
    encryption_arguments,
    file_url,
    hub_error_message,
    manifest_key,
    metadata_matches,
    new_digest,
    origin,
    owned_artifact_key,
    parse_revision_info,
    resume_delay,
    revision_info_url,
    select_files,
    tar_info,
)

logger = logging.getLogger(__name__)

USER_AGENT: Final = "zstc-model-importer/1"
HTTP_TIMEOUT_S: Final = 60
RESUME_ATTEMPTS: Final = 4


# --- reading from the Hub -----------------------------------------------------------------------------------------


class _SameOriginAuthRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the token only to the Hub's own origin (scheme and host, port included).

    urllib copies every header to the redirect target; the Hub redirects downloads to a CDN with a signed URL,
    which must not receive the token (a leak, and signed S3/CloudFront URLs reject a second auth mechanism). A
    redirect to another scheme on the same host (``https`` → ``http``) drops it too: it would travel in clear text.
    Once dropped it stays dropped for the rest of the chain, even if a later hop returns to the Hub.
    """

    def __init__(self, hub_url: str) -> None:
        super().__init__()
        self.hub_origin = origin(hub_url)

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(new.full_url) != self.hub_origin:
            new.remove_header("Authorization")
        return new


class HubClient:
    """The few Hub HTTP calls the importer makes (standard library only)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_HUB,
        token: str | None = None,
        timeout: float = HTTP_TIMEOUT_S,
        *,
        advice: Advice = DEPLOY_ADVICE,
    ):
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.advice = advice
        self._opener = urllib.request.build_opener(_SameOriginAuthRedirects(self.endpoint))

    def _request(self, url: str, headers: Mapping[str, str] | None = None) -> urllib.request.Request:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})  # noqa: S310
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        return request

    def _open(self, request: urllib.request.Request, *, model_id: str, revision: str, path: str | None) -> Any:
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as error:
            message = hub_error_message(
                error.code,
                error.headers.get("X-Error-Code") if error.headers else None,
                model_id=model_id,
                revision=revision,
                path=path,
                has_token=bool(self.token),
                advice=self.advice,
            )
            error.close()
            raise ImportFailure(message) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise HubUnreachable(
                f"Cannot reach the Hugging Face Hub at {self.endpoint} ({reason}). {self.advice.unreachable}"
            ) from None

    def revision_info(self, model_id: str, revision: str) -> RevisionInfo:
        url = revision_info_url(self.endpoint, model_id, revision)
        with self._open(self._request(url), model_id=model_id, revision=revision, path=None) as response:
            payload = json.loads(response.read())
        return parse_revision_info(model_id, payload)

    def open_file(self, model_id: str, revision: str, path: str, offset: int = 0) -> Any:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        request = self._request(file_url(self.endpoint, model_id, revision, path), headers)
        response = self._open(request, model_id=model_id, revision=revision, path=path)
        if offset and response.status != 206:
            response.close()
            raise ImportFailure(f"The Hub did not resume '{path}' at byte {offset} (HTTP {response.status})")
        return response


class VerifiedStream(io.RawIOBase):
    """Read one Hub file exactly ``size`` bytes long, hashing as it goes; resume with ``Range`` after a dropped
    connection. :meth:`verify` then compares the digest with the Hub's metadata.

    ``opener(offset)`` returns a readable response positioned at ``offset``.
    """

    def __init__(
        self,
        hub_file: HubFile,
        opener: Callable[[int], Any],
        *,
        deadline: Callable[[], None] = lambda: None,
        progress: Callable[[int], None] = lambda _done: None,
        attempts: int = RESUME_ATTEMPTS,
    ) -> None:
        super().__init__()
        self.file = hub_file
        self._opener = opener
        self._deadline = deadline
        self._progress = progress
        self._attempts = attempts
        self._response: Any = None
        self.done = 0
        self._digest = new_digest(hub_file)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes (or all that remain): tarfile treats a short read as the end of the data."""
        self._deadline()
        remaining = self.file.size - self.done
        want = remaining if size is None or size < 0 else min(size, remaining)
        pieces: list[bytes] = []
        got = 0
        while got < want:
            chunk = self._read_some(want - got)
            pieces.append(chunk)
            got += len(chunk)
        data = b"".join(pieces)
        if data:
            self._progress(self.done)
        return data

    def _read_some(self, want: int) -> bytes:
        failures = 0
        while True:
            try:
                if self._response is None:
                    self._response = self._opener(self.done)
                chunk = self._response.read(want)
                if not chunk:
                    raise HTTPException(f"connection closed at byte {self.done} of {self.file.size}")
                break
            except (HTTPException, ConnectionError, TimeoutError) as error:
                failures += 1
                self._close_response()
                if failures >= self._attempts:
                    raise ImportFailure(
                        f"Downloading '{self.file.path}' failed {failures} times at byte {self.done} of "
                        f"{self.file.size} ({error}); retry the deployment"
                    ) from None
                logger.warning("%s: %s at byte %d, resuming (attempt %d)", self.file.path, error, self.done, failures)
                time.sleep(resume_delay(failures))
        self._digest.update(chunk)
        self.done += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _close_response(self) -> None:
        if self._response is not None:
            with contextlib.suppress(OSError):
                self._response.close()
            self._response = None

    def close(self) -> None:
        self._close_response()
        super().close()

    def verify(self, model_id: str) -> None:
        """Raise :class:`ImportFailure` unless all bytes came and their digest matches the Hub's metadata."""
        check_download(self.file, model_id, received=self.done, digest=self._digest.hexdigest())


# --- writing to S3 ------------------------------------------------------------------------------------------------


class MultipartWriter(io.RawIOBase):
    """A write-only file that uploads what it is given as an S3 multipart upload.

    Parts of ``part_size`` bytes are uploaded by a small thread pool while the caller keeps writing; at most
    ``max_in_flight`` parts wait, so memory stays bounded. The object appears only on :meth:`complete`;
    :meth:`abort` discards everything. The SHA-256 and length of the whole object are kept.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str,
        *,
        part_size: int = PART_SIZE,
        max_in_flight: int = 2,
        extra_args: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.s3, self.bucket, self.key, self.part_size = s3, bucket, key, part_size
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._buffer = bytearray()
        self._parts: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="part")
        created = s3.create_multipart_upload(Bucket=bucket, Key=key, **dict(extra_args or {}))
        self.upload_id: str = created["UploadId"]

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.size += len(view)
        self._buffer += view
        while len(self._buffer) >= self.part_size:
            self._submit(bytes(self._buffer[: self.part_size]))
            del self._buffer[: self.part_size]
        return len(view)

    def _submit(self, body: bytes) -> None:
        number = len(self._parts) + 1
        self._slots.acquire()
        # Fail fast: a failed earlier part makes the rest pointless.
        for future in self._parts:
            if future.done() and future.exception() is not None:
                self._slots.release()
                future.result()
        self._parts.append(self._pool.submit(self._upload, number, body))

    def _upload(self, number: int, body: bytes) -> dict[str, Any]:
        try:
            response = self.s3.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )
            return completed_part(number, response)
        finally:
            self._slots.release()

    def complete(self) -> dict[str, Any]:
        if self._buffer or not self._parts:
            self._submit(bytes(self._buffer))
            self._buffer.clear()
        parts = [future.result() for future in self._parts]
        self._pool.shutdown()
        return self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
        )

    def abort(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except Exception:  # best effort; the bucket's lifecycle rule removes leftovers
            logger.exception("Could not abort multipart upload %s of s3://%s/%s", self.upload_id, self.bucket, self.key)


# --- the import ---------------------------------------------------------------------------------------------------


def find_existing(s3: Any, request: ImportRequest) -> ImportResult | None:
    """The artifact, when a complete one with matching inputs is already there.

    Listing (not a bare HEAD) because the function may list only the model prefix: without s3:ListBucket a HEAD of
    a missing object answers 403, not 404.
    """
    listed = s3.list_objects_v2(Bucket=request.bucket, Prefix=request.key, MaxKeys=1)
    if not any(item["Key"] == request.key for item in listed.get("Contents", [])):
        return None
    head = s3.head_object(Bucket=request.bucket, Key=request.key)
    metadata = head.get("Metadata", {})
    if not metadata_matches(metadata, request):
        logger.warning("s3://%s/%s has other metadata (%s): copying again", request.bucket, request.key, metadata)
        return None
    return ImportResult(
        url=request.url,
        key=request.key,
        code_digest=request.code_digest,
        sha256=_manifest_sha256(s3, request.bucket, request.key),
        size=int(head.get("ContentLength", 0)),
        copied=False,
    )


def _manifest_sha256(s3: Any, bucket: str, key: str) -> str:
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest_key(key))["Body"].read()
        return str(json.loads(body)["artifact"]["sha256"])
    except Exception:  # noqa: BLE001 - the manifest is informative; the artifact is complete without it
        logger.warning("No readable manifest beside s3://%s/%s", bucket, key)
        return "unknown"


class _Progress:
    """Logs a file's progress every ``step`` bytes, with throughput."""

    def __init__(self, path: str, total: int, step: int = 100 * MIB) -> None:
        self.path, self.total, self.step = path, total, step
        self.next = step
        self.start = time.monotonic()

    def __call__(self, done: int) -> None:
        if done >= self.next or done == self.total:
            elapsed = max(time.monotonic() - self.start, 1e-6)
            logger.info(
                "%s: %d/%d MiB (%.0f%%), %.1f MiB/s",
                self.path,
                done // MIB,
                self.total // MIB,
                100 * done / max(self.total, 1),
                done / MIB / elapsed,
            )
            while self.next <= done:
                self.next += self.step


def check_revision(
    hub: HubClient,
    model_id: str,
    revision: str,
    *,
    supported_model_types: Iterable[str],
    deadline: Callable[[], None] = lambda: None,
) -> CheckedRevision:
    """Everything that can be known about a revision before its weights are copied, from the Hub's metadata and
    config.json alone: the commit it resolves to, safetensors weights, tokenizer files, an entailment label and an
    architecture the handler supports. The importer runs it at deploy time; ``zstc models pin`` before it."""
    info = hub.revision_info(model_id, revision)
    sha = info.sha or revision
    selected = select_files(model_id, revision, info.files)
    check_tokenizer_files(model_id, revision, info.files)
    config_bytes = read_small_file(hub, model_id, sha, selected[0], deadline)
    config = check_nli_config(model_id, revision, config_bytes)
    model_type = check_architecture(model_id, revision, config, supported_model_types)
    return CheckedRevision(model_id, sha, tuple(selected), config_bytes, config, model_type)


def import_model(
    hub: HubClient,
    s3: Any,
    request: ImportRequest,
    *,
    deadline: Callable[[], None] = lambda: None,
    part_size: int = PART_SIZE,
) -> ImportResult:
    """Make sure ``request.url`` holds the artifact: reuse a complete one, otherwise stream a new one."""
    check_request(request)

    existing = find_existing(s3, request)
    if existing is not None:
        logger.info("Artifact %s exists (sha256 %s): nothing to copy", existing.url, existing.sha256)
        return existing

    # Metadata and config.json only: a model the endpoint could not serve fails before any weight is downloaded.
    checked = check_revision(
        hub,
        request.model_id,
        request.revision,
        supported_model_types=request.supported_model_types,
        deadline=deadline,
    )
    check_resolved_commit(request, checked.sha)
    selected = list(checked.files)
    total = sum(f.size for f in selected)
    logger.info(
        "Copying %d files (%.1f MiB) of %s@%s (%s) to %s: %s",
        len(selected),
        total / MIB,
        request.model_id,
        request.revision,
        checked.model_type,
        request.url,
        ", ".join(f.path for f in selected),
    )
    config_file, config_bytes = selected[0], checked.config_bytes

    encryption = encryption_arguments(request.kms_key_arn)
    extra: dict[str, Any] = {
        "ContentType": "application/gzip",
        "Metadata": artifact_metadata(request),
        **encryption,
    }

    # The object becomes visible only when the multipart upload completes: its existence, with this metadata, is
    # the completion marker. The tarball's SHA-256 is known only at the end: it goes into manifest.json beside it.
    writer = MultipartWriter(s3, request.bucket, request.key, part_size=part_size, extra_args=extra)
    started = time.monotonic()
    try:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=writer, compresslevel=1, mtime=0)
        # copybufsize is a keyword of TarFile that typeshed's tarfile.open overloads do not list.
        with gz, tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=READ_CHUNK) as tar:  # type: ignore[call-overload]
            tar.addfile(tar_info(config_file.path, len(config_bytes)), io.BytesIO(config_bytes))
            for hub_file in selected[1:]:
                stream = VerifiedStream(
                    hub_file,
                    functools.partial(hub.open_file, request.model_id, request.revision, hub_file.path),
                    deadline=deadline,
                    progress=_Progress(hub_file.path, hub_file.size),
                )
                with stream:
                    tar.addfile(tar_info(hub_file.path, hub_file.size), stream)
                    stream.verify(request.model_id)
            for path in sorted(request.code_files):
                content = request.code_files[path]
                tar.addfile(tar_info(f"code/{path}", len(content)), io.BytesIO(content))
        deadline()
        writer.complete()
    except BaseException:
        writer.abort()
        raise

    digest = writer.sha256.hexdigest()
    manifest = artifact_manifest(request, selected, sha256=digest, size=writer.size)
    s3.put_object(
        Bucket=request.bucket,
        Key=manifest_key(request.key),
        Body=json.dumps(manifest, indent=2).encode(),
        ContentType="application/json",
        **encryption,
    )
    elapsed = time.monotonic() - started
    logger.info(
        "Wrote %s: %.1f MiB compressed from %.1f MiB in %.0f s, sha256 %s",
        request.url,
        writer.size / MIB,
        total / MIB,
        elapsed,
        digest,
    )
    return ImportResult(
        url=request.url,
        key=request.key,
        code_digest=request.code_digest,
        sha256=digest,
        size=writer.size,
        copied=True,
        files=tuple(f.path for f in selected) + tuple(f"code/{p}" for p in sorted(request.code_files)),
    )


def read_small_file(
    hub: HubClient, model_id: str, revision: str, hub_file: HubFile, deadline: Callable[[], None] = lambda: None
) -> bytes:
    """A config or tokenizer file, read whole and verified against the Hub's metadata."""
    if hub_file.size > MAX_SMALL_FILE:
        raise ImportFailure(f"'{hub_file.path}' of '{model_id}' is {hub_file.size} bytes: too large")
    stream = VerifiedStream(
        hub_file,
        lambda offset: hub.open_file(model_id, revision, hub_file.path, offset),
        deadline=deadline,
    )
    with stream:
        data = b"".join(iter(lambda: stream.read(READ_CHUNK), b""))
        stream.verify(model_id)
    return data


def delete_artifact(s3: Any, *, bucket: str, prefix: str, url: str) -> bool:
    """Delete an artifact this importer wrote (and its manifest). Anything else (another bucket, outside the
    prefix, not a ``model.tar.gz``: e.g. the placeholder id of a failed create) is left alone. True if deleted."""
    key = owned_artifact_key(url, bucket=bucket, prefix=prefix)
    if key is None:
        return False
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_object(Bucket=bucket, Key=manifest_key(key))
    return True
