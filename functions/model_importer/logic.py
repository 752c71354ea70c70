"""Copy a pinned Hugging Face model into the stack's bucket as a SageMaker ``model.tar.gz``, streaming and verified.

Everything here is plain Python (standard library + a boto3 S3 client passed in), so it is tested without AWS.
The thin CloudFormation handler is ``model_importer.py``.

What the artifact holds, at the root of the tarball: the model's ``config.json``, its tokenizer files, its
``*.safetensors`` weights (and the shard index), then our inference handler under ``code/``. Other framework weights
(``pytorch_model.bin``, TensorFlow, Flax, ONNX, Rust) and files in sub-folders are left out.

Integrity: every file is checked while it streams through, against the Hub's metadata of the pinned commit: the
SHA-256 of Git LFS files (the weights) and the Git blob id (SHA-1 of ``blob <size>\\0<content>``) of the others.
A mismatch aborts the multipart upload, so no artifact is written.

Memory: the tarball is written as a stream (tar -> gzip -> S3 multipart parts of ``part_size`` bytes); at most
``part_size × (max_in_flight + 1)`` bytes are held, whatever the model's size.

Reproducibility: tar headers carry fixed owners, modes and times, gzip carries no name or time, so the same files
give the same bytes. The location is ``<prefix><model_id>/<revision>/<code_hash>/model.tar.gz``: the same model
id, revision and handler code always map to the same object, which is only visible once complete (S3 multipart
semantics) and carries the inputs in its metadata; a re-deploy finds it and copies nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import logging
import posixpath
import re
import tarfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any, Final

logger = logging.getLogger(__name__)

# Bump when the artifact's layout changes: it is part of the code hash, so a new layout gets a new location.
ARTIFACT_FORMAT: Final = "zstc-model-artifact/1"
DEFAULT_HUB: Final = "https://huggingface.co"
USER_AGENT: Final = "zstc-model-importer/1"
MIB: Final = 1024 * 1024
PART_SIZE: Final = 16 * MIB  # 10,000 parts × 16 MiB = 160 GiB: far above any NLI model
READ_CHUNK: Final = 1 * MIB
MAX_SMALL_FILE: Final = 64 * MIB  # config / tokenizer files are read into memory for the checks; weights never are
MAX_CODE_BYTES: Final = 5 * MIB
HTTP_TIMEOUT_S: Final = 60
RESUME_ATTEMPTS: Final = 4
META_PREFIX: Final = "zstc-"  # S3 user metadata keys (x-amz-meta-zstc-*)

HEX40: Final = re.compile(r"^[0-9a-f]{40}$")
HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
MODEL_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")

# Root-level files a transformers model directory may need besides the weights. Anything else is left out.
CONFIG_FILES: Final = frozenset({"config.json", "generation_config.json"})
TOKENIZER_FILES: Final = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "tokenizer.model",
        "spiece.model",
        "sentencepiece.bpe.model",
        "spm.model",
        "preprocessor_config.json",
    }
)
SAFETENSORS_INDEX: Final = "model.safetensors.index.json"


class ImportFailure(Exception):
    """A failure the user can act on. The message says what is wrong and how to fix it; it becomes the reason
    CloudFormation shows for the failed resource."""


class OutOfTime(ImportFailure):
    """The Lambda function is about to reach its time limit: stop cleanly and report, rather than time out."""


# --- the Hub's metadata -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubFile:
    """One file of a model repository at a commit, as the Hub describes it (``siblings`` of the revision API)."""

    path: str
    size: int
    blob_id: str
    sha256: str | None = None  # set for Git LFS files (the content's SHA-256)

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class RevisionInfo:
    model_id: str
    sha: str
    files: tuple[HubFile, ...]


def parse_revision_info(model_id: str, payload: Mapping[str, Any]) -> RevisionInfo:
    """Read ``GET /api/models/{id}/revision/{rev}?blobs=true``: ``sha`` and ``siblings`` with ``rfilename``,
    ``size``, ``blobId`` and, for LFS files, ``lfs: {sha256, size, pointerSize}``."""
    siblings = payload.get("siblings")
    if not isinstance(siblings, list):
        raise ImportFailure(
            f"The Hugging Face Hub answered for model '{model_id}' without a file list ('siblings'). "
            "Check that HF_ENDPOINT points to the Hub (or a mirror with the Hub's API)"
        )
    files = []
    for sibling in siblings:
        lfs = sibling.get("lfs") or None
        size = lfs["size"] if lfs else sibling.get("size")
        if size is None or sibling.get("blobId") is None:
            raise ImportFailure(
                f"The Hub's metadata for '{model_id}' lacks sizes or blob ids for {sibling.get('rfilename')!r}: "
                "it was requested with blobs=true, so the Hub or mirror at HF_ENDPOINT does not support it"
            )
        files.append(
            HubFile(
                path=sibling["rfilename"],
                size=int(size),
                blob_id=sibling["blobId"],
                sha256=lfs["sha256"] if lfs else None,
            )
        )
    return RevisionInfo(model_id=model_id, sha=str(payload.get("sha", "")), files=tuple(files))


def select_files(model_id: str, revision: str, files: Iterable[HubFile]) -> list[HubFile]:
    """The files the artifact needs, in archive order: configs, tokenizer files, shard index, then the weights.

    Raises :class:`ImportFailure` when there is no ``config.json`` or no safetensors weights: other weight formats
    (``pytorch_model.bin`` is a pickle) are never copied, on purpose.
    """
    root = [f for f in files if "/" not in f.path]
    weights = sorted((f for f in root if f.path.endswith(".safetensors")), key=lambda f: f.path)
    configs = sorted((f for f in root if f.path in CONFIG_FILES), key=lambda f: f.path != "config.json")
    tokenizer = sorted((f for f in root if f.path in TOKENIZER_FILES), key=lambda f: f.path)
    index = [f for f in root if f.path == SAFETENSORS_INDEX]
    if not any(f.path == "config.json" for f in configs):
        raise ImportFailure(
            f"Model '{model_id}' at revision {revision} has no config.json at the root of the repository: it is not "
            "a transformers model. Choose a transformers NLI model (e.g. facebook/bart-large-mnli) or a revision "
            "that has config.json"
        )
    if not weights:
        others = sorted(f.path for f in root if f.path.endswith((".bin", ".h5", ".msgpack", ".onnx", ".ot")))
        found = ", ".join(others) or "no weights"
        raise ImportFailure(
            f"Model '{model_id}' at revision {revision} has no *.safetensors weights (found: {found}). "
            "Only safetensors are copied (pickled weights can run code when loaded). Pick a revision "
            "with safetensors (the Hub's conversion bot publishes them as a pull request: use that commit), or "
            "convert the model yourself and deploy it with -c model_source=s3"
        )
    if len(weights) > 1 and not index:
        raise ImportFailure(
            f"Model '{model_id}' at revision {revision} has {len(weights)} safetensors files but no "
            f"{SAFETENSORS_INDEX}: transformers cannot tell which to load. Pick a revision with a single "
            "model.safetensors or with the shard index"
        )
    return [*configs, *tokenizer, *index, *weights]


def entailment_label(config: Mapping[str, Any]) -> str | None:
    """The label transformers' zero-shot pipeline uses as entailment (first label starting with ``entail``)."""
    labels: list[str] = []
    for key in ("label2id", "id2label"):
        mapping = config.get(key)
        if isinstance(mapping, Mapping):
            labels.extend(str(label) for label in (mapping.keys() if key == "label2id" else mapping.values()))
    return next((label for label in labels if label.lower().startswith("entail")), None)


def check_nli_config(model_id: str, revision: str, config_bytes: bytes) -> dict[str, Any]:
    """Refuse a model that is not an NLI classifier: the zero-shot pipeline needs an ``entailment`` label, and
    without one it silently scores with the wrong logit."""
    try:
        config = json.loads(config_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImportFailure(
            f"config.json of model '{model_id}' at revision {revision} is not valid JSON: {error}"
        ) from None
    if not isinstance(config, dict):
        raise ImportFailure(f"config.json of model '{model_id}' at revision {revision} is not a JSON object")
    if entailment_label(config) is None:
        found = config.get("id2label") or config.get("label2id") or {}
        labels = ", ".join(str(v) for v in (found.values() if "id2label" in config else found)) or "none"
        raise ImportFailure(
            f"Model '{model_id}' at revision {revision} is not an NLI classifier: its config.json id2label has no "
            f"'entailment' label (labels: {labels}). Zero-shot classification needs a model fine-tuned on NLI "
            "(MNLI/XNLI), e.g. facebook/bart-large-mnli or MoritzLaurer/deberta-v3-base-zeroshot-v2.0"
        )
    return config


# Files from which transformers' AutoTokenizer can build a tokenizer: the fast tokenizer's own file, a WordPiece
# vocabulary (BERT, DistilBERT, ELECTRA, MobileBERT), a byte-level BPE pair (BART, RoBERTa) or a SentencePiece model
# (ALBERT, DeBERTa-v2/v3, XLM-RoBERTa). tokenizer_config.json alone is not enough.
TOKENIZER_SOURCES: Final = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
    ("spm.model",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
    ("tokenizer.model",),
)


def check_tokenizer_files(model_id: str, revision: str, files: Iterable[HubFile]) -> None:
    """Refuse a revision whose root holds nothing a tokenizer can be loaded from (the endpoint would fail)."""
    root = {f.path for f in files if "/" not in f.path}
    if any(all(name in root for name in source) for source in TOKENIZER_SOURCES):
        return
    found = ", ".join(sorted(root & TOKENIZER_FILES)) or "none"
    raise ImportFailure(
        f"Model '{model_id}' at revision {revision} has no tokenizer files (found: {found}): the endpoint could "
        "not load a tokenizer. Pick a revision that has tokenizer.json (or vocab.txt, vocab.json + merges.txt, "
        "or a SentencePiece model such as spm.model)"
    )


def check_architecture(model_id: str, revision: str, config: Mapping[str, Any], supported: Iterable[str]) -> str:
    """The config's ``model_type`` if the zero-shot handler supports it; otherwise a failure naming the supported
    ones (``model/code/supported_architectures.json``, passed in by the stack or read by ``zstc models pin``)."""
    allowed = sorted({str(m) for m in supported})
    if not allowed:
        raise ImportFailure(
            "No supported architectures were given to the model importer (SupportedModelTypes): deploy with the "
            "stack's own template, which passes model/code/supported_architectures.json"
        )
    model_type = config.get("model_type")
    if model_type not in allowed:
        shown = f"'{model_type}'" if isinstance(model_type, str) and model_type else "no model_type"
        raise ImportFailure(
            f"Model '{model_id}' at revision {revision} has architecture {shown} (config.json model_type), which the "
            f"zero-shot handler does not support. Supported: {', '.join(allowed)}. Choose an NLI model of one of "
            "these architectures (`zstc models` lists tested ones)"
        )
    return str(model_type)


# --- the handler code and the artifact's location ---------------------------------------------------------------


def read_code_zip(data: bytes) -> dict[str, bytes]:
    """Files of the handler code asset (a zip of ``model/code/``), without caches, keyed by relative path."""
    files: dict[str, bytes] = {}
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name = posixpath.normpath(info.filename)
            if info.is_dir() or "__pycache__" in name.split("/") or name.endswith((".pyc", ".pyo")):
                continue
            if name.startswith(("/", "../")) or name == "..":
                raise ImportFailure(f"The handler code asset has an unsafe path {info.filename!r}")
            total += info.file_size
            if total > MAX_CODE_BYTES:
                raise ImportFailure(
                    f"The handler code asset is larger than {MAX_CODE_BYTES // MIB} MiB: keep model/code small"
                )
            files[name] = archive.read(info)
    if "inference.py" not in files:
        raise ImportFailure(
            f"The handler code asset has no inference.py (files: {', '.join(sorted(files)) or 'none'}): "
            "model/code/inference.py must exist in the repository"
        )
    return files


def code_hash(code_files: Mapping[str, bytes]) -> str:
    """16 hex digits over the artifact format and every handler file (path and content): any change of the handler,
    or of the artifact's layout, gives a new artifact location."""
    digest = hashlib.sha256(ARTIFACT_FORMAT.encode() + b"\0")
    for path in sorted(code_files):
        content = code_files[path]
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


def artifact_key(prefix: str, model_id: str, revision: str, code_digest: str) -> str:
    return f"{prefix}{model_id}/{revision}/{code_digest}/model.tar.gz"


def manifest_key(key: str) -> str:
    return key[: -len("model.tar.gz")] + "manifest.json"


def parse_s3_url(url: str) -> tuple[str, str] | None:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.lstrip("/"):
        return None
    return parsed.netloc, parsed.path.lstrip("/")


# --- reading from the Hub -----------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme.lower(), parsed.netloc.lower()


class _SameOriginAuthRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the token only to the Hub's own origin (scheme and host, port included).

    urllib copies every header to the redirect target; the Hub redirects downloads to a CDN with a signed URL,
    which must not receive the token (a leak, and signed S3/CloudFront URLs reject a second auth mechanism). A
    redirect to another scheme on the same host (``https`` → ``http``) drops it too: it would travel in clear text.
    Once dropped it stays dropped for the rest of the chain, even if a later hop returns to the Hub.
    """

    def __init__(self, hub_url: str) -> None:
        super().__init__()
        self.hub_origin = _origin(hub_url)

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(new.full_url) != self.hub_origin:
            new.remove_header("Authorization")
        return new


@dataclass(frozen=True)
class Advice:
    """The remedies messages suggest, for the program that reads the Hub: the importer at deploy time (default) or
    ``zstc models pin`` on the user's machine."""

    holder: str = "the token in hf_token_secret"
    authenticate: str = (
        "store a read token in a Secrets Manager secret and deploy with -c hf_token_secret=<secret name>"
    )
    private: str = "if it is private, store a read token in a Secrets Manager secret and set -c hf_token_secret=<name>"
    grant: str = "or store a token with read access in the secret"
    retry: str = "retry the deployment later"
    revision: str = (
        "Set model_revision to a 40-digit commit of the model (the model page: Files and versions → History)"
    )
    unreachable: str = (
        "The importer runs outside the VPC and needs internet access; retry the deployment, or set HF_ENDPOINT to "
        "a reachable mirror"
    )


DEPLOY_ADVICE: Final = Advice()


class HubUnreachable(ImportFailure):
    """The Hub could not be reached at all (DNS, connection, timeout): nothing is known about the model."""


def hub_error_message(
    status: int,
    error_code: str | None,
    *,
    model_id: str,
    revision: str,
    path: str | None,
    has_token: bool,
    advice: Advice = DEPLOY_ADVICE,
) -> str:
    """Turn the Hub's answer (status and ``X-Error-Code``) into a message that says what to do."""
    what = f"file '{path}' of model '{model_id}'" if path else f"model '{model_id}'"
    if error_code == "RevisionNotFound":
        return (
            f"Revision {revision} of model '{model_id}' was not found on the Hugging Face Hub (HTTP {status}). "
            f"{advice.revision}"
        )
    if error_code == "EntryNotFound":
        return f"The Hub has no {what} at revision {revision} (HTTP {status}, EntryNotFound)"
    if error_code == "GatedRepo" or (status == 403 and error_code != "RepoNotFound"):
        if has_token:
            return (
                f"Model '{model_id}' is gated and {advice.holder} has no access (HTTP {status}). "
                f"Accept the model's conditions on huggingface.co with the token's account, {advice.grant}"
            )
        return (
            f"Model '{model_id}' is gated (HTTP {status}): accept its conditions on huggingface.co, "
            f"{advice.authenticate}"
        )
    if error_code == "RepoNotFound" or status in (401, 404):
        hint = f"{advice.holder} cannot see it" if has_token else advice.private
        return (
            f"Model '{model_id}' was not found on the Hugging Face Hub (HTTP {status}). Check model_id "
            f"(e.g. facebook/bart-large-mnli); {hint}"
        )
    return f"The Hugging Face Hub answered HTTP {status} for {what} at revision {revision}; {advice.retry}"


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
        url = f"{self.endpoint}/api/models/{model_id}/revision/{urllib.parse.quote(revision, safe='')}?blobs=true"
        with self._open(self._request(url), model_id=model_id, revision=revision, path=None) as response:
            payload = json.loads(response.read())
        return parse_revision_info(model_id, payload)

    def file_url(self, model_id: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{model_id}/resolve/{urllib.parse.quote(revision, safe='')}/{urllib.parse.quote(path)}"

    def open_file(self, model_id: str, revision: str, path: str, offset: int = 0) -> Any:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        request = self._request(self.file_url(model_id, revision, path), headers)
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
        if hub_file.is_lfs:
            self._digest = hashlib.sha256()
        else:  # a Git blob id: SHA-1 over a header and the content
            self._digest = hashlib.sha1(f"blob {hub_file.size}\0".encode(), usedforsecurity=False)

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
                time.sleep(min(2**failures, 10) * 0.5)
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
        if self.done != self.file.size:
            raise ImportFailure(
                f"'{self.file.path}' of model '{model_id}' ended after {self.done} of {self.file.size} bytes"
            )
        expected = self.file.sha256 if self.file.is_lfs else self.file.blob_id
        kind = "SHA-256" if self.file.is_lfs else "Git blob id"
        actual = self._digest.hexdigest()
        if actual != expected:
            raise ImportFailure(
                f"Checksum mismatch for '{self.file.path}' of model '{model_id}': {kind} {actual} but the Hub's "
                f"metadata says {expected}. The download was corrupted or altered; nothing was written. Retry the "
                "deployment; if it persists, check HF_ENDPOINT and any proxy in between"
            )


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
            part = {"PartNumber": number, "ETag": response["ETag"]}
            # With flexible checksums (CRC32 by default in recent SDKs) S3 wants each part's checksum back.
            part.update({k: v for k, v in response.items() if k.startswith("Checksum") and k != "ChecksumType"})
            return part
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


@dataclass(frozen=True)
class ImportRequest:
    model_id: str
    revision: str
    bucket: str
    prefix: str
    code_files: Mapping[str, bytes]
    supported_model_types: tuple[str, ...]  # config.json model_type values the handler supports (the stack decides)
    kms_key_arn: str | None = None

    @property
    def code_digest(self) -> str:
        return code_hash(self.code_files)

    @property
    def key(self) -> str:
        return artifact_key(self.prefix, self.model_id, self.revision, self.code_digest)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ImportResult:
    url: str
    key: str
    code_digest: str
    sha256: str
    size: int
    copied: bool  # False: the artifact existed already
    files: tuple[str, ...] = field(default=())


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


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
    expected = {
        f"{META_PREFIX}model-id": request.model_id,
        f"{META_PREFIX}revision": request.revision,
        f"{META_PREFIX}code-hash": request.code_digest,
    }
    if any(metadata.get(k) != v for k, v in expected.items()):
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


@dataclass(frozen=True)
class CheckedRevision:
    """A revision that passed every check made before anything is copied (see :func:`check_revision`)."""

    model_id: str
    sha: str  # the commit the requested revision resolved to
    files: tuple[HubFile, ...]  # what the artifact holds, config.json first
    config_bytes: bytes
    config: Mapping[str, Any]
    model_type: str

    @property
    def weights_bytes(self) -> int:
        return sum(f.size for f in self.files if f.path.endswith(".safetensors"))


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
    for name, value, pattern, example in (
        ("model_id", request.model_id, MODEL_ID, "facebook/bart-large-mnli"),
        ("model_revision", request.revision, HEX40, "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"),
    ):
        if not pattern.match(value):
            raise ImportFailure(f"Invalid {name} {value!r}: expected e.g. {example}")

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
    if checked.sha != request.revision:
        raise ImportFailure(
            f"The Hub resolved revision {request.revision} of '{request.model_id}' to commit {checked.sha}: "
            "model_revision must be a full 40-digit commit id"
        )
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

    extra: dict[str, Any] = {
        "ContentType": "application/gzip",
        "Metadata": {
            f"{META_PREFIX}model-id": request.model_id,
            f"{META_PREFIX}revision": request.revision,
            f"{META_PREFIX}code-hash": request.code_digest,
            f"{META_PREFIX}format": ARTIFACT_FORMAT,
        },
    }
    if request.kms_key_arn:
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=request.kms_key_arn)

    # The object becomes visible only when the multipart upload completes: its existence, with this metadata, is
    # the completion marker. The tarball's SHA-256 is known only at the end: it goes into manifest.json beside it.
    writer = MultipartWriter(s3, request.bucket, request.key, part_size=part_size, extra_args=extra)
    started = time.monotonic()
    try:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=writer, compresslevel=1, mtime=0)
        # copybufsize is a keyword of TarFile that typeshed's tarfile.open overloads do not list.
        with gz, tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=READ_CHUNK) as tar:  # type: ignore[call-overload]
            tar.addfile(_tar_info(config_file.path, len(config_bytes)), io.BytesIO(config_bytes))
            for hub_file in selected[1:]:
                stream = VerifiedStream(
                    hub_file,
                    functools.partial(hub.open_file, request.model_id, request.revision, hub_file.path),
                    deadline=deadline,
                    progress=_Progress(hub_file.path, hub_file.size),
                )
                with stream:
                    tar.addfile(_tar_info(hub_file.path, hub_file.size), stream)
                    stream.verify(request.model_id)
            for path in sorted(request.code_files):
                content = request.code_files[path]
                tar.addfile(_tar_info(f"code/{path}", len(content)), io.BytesIO(content))
        deadline()
        writer.complete()
    except BaseException:
        writer.abort()
        raise

    digest = writer.sha256.hexdigest()
    publish_extra = {k: v for k, v in extra.items() if k in ("ServerSideEncryption", "SSEKMSKeyId")}
    manifest = {
        "format": ARTIFACT_FORMAT,
        "model_id": request.model_id,
        "revision": request.revision,
        "code_hash": request.code_digest,
        "artifact": {"key": request.key, "sha256": digest, "bytes": writer.size},
        "files": [
            {"path": f.path, "bytes": f.size, "sha256" if f.is_lfs else "git_blob_id": f.sha256 or f.blob_id}
            for f in selected
        ]
        + [
            {"path": f"code/{p}", "bytes": len(c), "sha256": hashlib.sha256(c).hexdigest()}
            for p, c in sorted(request.code_files.items())
        ],
    }
    s3.put_object(
        Bucket=request.bucket,
        Key=manifest_key(request.key),
        Body=json.dumps(manifest, indent=2).encode(),
        ContentType="application/json",
        **publish_extra,
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
    parsed = parse_s3_url(url)
    if parsed is None or parsed[0] != bucket:
        return False
    key = parsed[1]
    if not key.startswith(prefix) or not key.endswith("/model.tar.gz") or ".." in key.split("/"):
        return False
    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_object(Bucket=bucket, Key=manifest_key(key))
    return True


def token_from_secret(secret_string: str | None, secret_name: str) -> str:
    """The Hub token from a secret: the plain token, or JSON with a ``token`` / ``HF_TOKEN`` / ``hf_token`` key."""
    value = (secret_string or "").strip()
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            value = next((str(data[k]) for k in ("token", "HF_TOKEN", "hf_token") if data.get(k)), "")
    if not value:
        raise ImportFailure(
            f"Secret '{secret_name}' holds no Hugging Face token: store the token as the secret's plain text value "
            'or as JSON {"token": "hf_..."}'
        )
    return value
