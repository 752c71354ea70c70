"""The model importer's pure rules: what a pinned Hugging Face revision must hold, where its artifact goes, what it
records, and the messages of every refusal. No sockets, threads or AWS clients here (``service.py`` has those), so
all of it is tested without a network.

What the artifact holds, at the root of the tarball: the model's ``config.json``, its tokenizer files, its
``*.safetensors`` weights (and the shard index), then our inference handler under ``code/``. Other framework weights
(``pytorch_model.bin``, TensorFlow, Flax, ONNX, Rust) and files in sub-folders are left out (:func:`select_files`).

Integrity: every file is checked against the Hub's metadata of the pinned commit: the SHA-256 of Git LFS files (the
weights) and the Git blob id (SHA-1 of ``blob <size>\\0<content>``) of the others (:func:`new_digest`,
:func:`check_download`).

Reproducibility: tar headers carry fixed owners, modes and times (:func:`tar_info`), so the same files give the
same bytes. The location is ``<prefix><model_id>/<revision>/<code_hash>/model.tar.gz`` (:func:`artifact_key`): the
same model id, revision and handler code always map to the same object, which carries the inputs in its metadata
(:func:`artifact_metadata`); a re-deploy finds it and copies nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import tarfile
import urllib.parse
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

# Bump when the artifact's layout changes: it is part of the code hash, so a new layout gets a new location.
ARTIFACT_FORMAT: Final = "zstc-model-artifact/1"
DEFAULT_HUB: Final = "https://huggingface.co"
MIB: Final = 1024 * 1024
PART_SIZE: Final = 16 * MIB  # 10,000 parts × 16 MiB = 160 GiB: far above any NLI model
READ_CHUNK: Final = 1 * MIB
MAX_SMALL_FILE: Final = 64 * MIB  # config / tokenizer files are read into memory for the checks; weights never are
MAX_CODE_BYTES: Final = 5 * MIB
META_PREFIX: Final = "zstc-"  # S3 user metadata keys (x-amz-meta-zstc-*)

HEX40: Final = re.compile(r"^[0-9a-f]{40}$")
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


class HubUnreachable(ImportFailure):
    """The Hub could not be reached at all (DNS, connection, timeout): nothing is known about the model."""


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


# --- the Hub's URLs and messages ----------------------------------------------------------------------------------


def origin(url: str) -> tuple[str, str]:
    """Scheme and host (port included), lower-cased: the token is sent only where this equals the Hub's."""
    parsed = urllib.parse.urlparse(url)
    return parsed.scheme.lower(), parsed.netloc.lower()


def revision_info_url(endpoint: str, model_id: str, revision: str) -> str:
    """The Hub's revision API with blob ids and LFS hashes (``blobs=true``), read by :func:`parse_revision_info`."""
    return f"{endpoint}/api/models/{model_id}/revision/{urllib.parse.quote(revision, safe='')}?blobs=true"


def file_url(endpoint: str, model_id: str, revision: str, path: str) -> str:
    return f"{endpoint}/{model_id}/resolve/{urllib.parse.quote(revision, safe='')}/{urllib.parse.quote(path)}"


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


# --- verifying a download -----------------------------------------------------------------------------------------


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def new_digest(hub_file: HubFile) -> Digest:
    """The running hash the Hub's metadata gives for ``hub_file``: SHA-256 of an LFS file's content, or its Git
    blob id (SHA-1 over a header and the content)."""
    if hub_file.is_lfs:
        return hashlib.sha256()
    return hashlib.sha1(f"blob {hub_file.size}\0".encode(), usedforsecurity=False)


def check_download(hub_file: HubFile, model_id: str, *, received: int, digest: str) -> None:
    """Raise :class:`ImportFailure` unless ``received`` is the file's size and ``digest`` the Hub's for it."""
    if received != hub_file.size:
        raise ImportFailure(f"'{hub_file.path}' of model '{model_id}' ended after {received} of {hub_file.size} bytes")
    expected = hub_file.sha256 if hub_file.is_lfs else hub_file.blob_id
    kind = "SHA-256" if hub_file.is_lfs else "Git blob id"
    if digest != expected:
        raise ImportFailure(
            f"Checksum mismatch for '{hub_file.path}' of model '{model_id}': {kind} {digest} but the Hub's "
            f"metadata says {expected}. The download was corrupted or altered; nothing was written. Retry the "
            "deployment; if it persists, check HF_ENDPOINT and any proxy in between"
        )


def resume_delay(failures: int) -> float:
    """Seconds to wait before resuming a download after its ``failures``-th broken connection (1, 2, 4, 5, 5 …)."""
    return min(2**failures, 10) * 0.5


def completed_part(number: int, response: Mapping[str, Any]) -> dict[str, Any]:
    """The entry of ``CompleteMultipartUpload`` for one ``UploadPart`` answer.

    With flexible checksums (CRC32 by default in recent SDKs) S3 wants each part's checksum back.
    """
    part = {"PartNumber": number, "ETag": response["ETag"]}
    part.update({k: v for k, v in response.items() if k.startswith("Checksum") and k != "ChecksumType"})
    return part


# --- the artifact ---------------------------------------------------------------------------------------------------


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


def check_request(request: ImportRequest) -> None:
    """Refuse a malformed model id or a revision that is not a full commit before anything is read."""
    for name, value, pattern, example in (
        ("model_id", request.model_id, MODEL_ID, "facebook/bart-large-mnli"),
        ("model_revision", request.revision, HEX40, "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"),
    ):
        if not pattern.match(value):
            raise ImportFailure(f"Invalid {name} {value!r}: expected e.g. {example}")


def check_resolved_commit(request: ImportRequest, sha: str) -> None:
    """The Hub must resolve the requested revision to itself: a branch or a short id could move."""
    if sha != request.revision:
        raise ImportFailure(
            f"The Hub resolved revision {request.revision} of '{request.model_id}' to commit {sha}: "
            "model_revision must be a full 40-digit commit id"
        )


def tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A tar header that depends only on the name and size (no owner, time or umask)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def artifact_metadata(request: ImportRequest) -> dict[str, str]:
    """The S3 user metadata of the artifact: its inputs, so an existing object is reused only if they match."""
    return {
        f"{META_PREFIX}model-id": request.model_id,
        f"{META_PREFIX}revision": request.revision,
        f"{META_PREFIX}code-hash": request.code_digest,
        f"{META_PREFIX}format": ARTIFACT_FORMAT,
    }


def metadata_matches(metadata: Mapping[str, str], request: ImportRequest) -> bool:
    """True when an object's metadata names this request's model, revision and handler code."""
    expected = artifact_metadata(request)
    keys = (f"{META_PREFIX}model-id", f"{META_PREFIX}revision", f"{META_PREFIX}code-hash")
    return all(metadata.get(key) == expected[key] for key in keys)


def encryption_arguments(kms_key_arn: str | None) -> dict[str, str]:
    """S3 arguments for SSE-KMS with the stack's key (none: the bucket's default encryption)."""
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key_arn} if kms_key_arn else {}


def artifact_manifest(request: ImportRequest, files: Sequence[HubFile], *, sha256: str, size: int) -> dict[str, Any]:
    """``manifest.json`` beside the artifact: its SHA-256 and length, and the checksum of every file it holds."""
    return {
        "format": ARTIFACT_FORMAT,
        "model_id": request.model_id,
        "revision": request.revision,
        "code_hash": request.code_digest,
        "artifact": {"key": request.key, "sha256": sha256, "bytes": size},
        "files": [
            {"path": f.path, "bytes": f.size, "sha256" if f.is_lfs else "git_blob_id": f.sha256 or f.blob_id}
            for f in files
        ]
        + [
            {"path": f"code/{p}", "bytes": len(c), "sha256": hashlib.sha256(c).hexdigest()}
            for p, c in sorted(request.code_files.items())
        ],
    }


def owned_artifact_key(url: str, *, bucket: str, prefix: str) -> str | None:
    """The key of ``url`` if it is an artifact this importer writes (in ``bucket``, under ``prefix``, a
    ``model.tar.gz``); None for anything else, e.g. the placeholder id of a failed create."""
    parsed = parse_s3_url(url)
    if parsed is None or parsed[0] != bucket:
        return None
    key = parsed[1]
    if not key.startswith(prefix) or not key.endswith("/model.tar.gz") or ".." in key.split("/"):
        return None
    return key


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
