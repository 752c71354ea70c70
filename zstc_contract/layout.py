"""The data bucket's layout: its prefixes and how an input's output, status record and manifest are named.

``input/a/b.jsonl`` (relative key ``a/b.jsonl``) → output ``output/a/b.jsonl.out``, status record
``output/a/b.jsonl.status.json`` on success or ``errors/a/b.jsonl.status.json`` otherwise; job ``J``'s manifest is
``manifests/J.json`` and the input versions it was started for ``manifests/J.versions.json``.

A job whose files hold a record larger than a transform's payload limit reads its files from a snapshot instead:
``manifests/_staged/J/a/b.jsonl`` (:func:`staged_prefix`), each file as the trigger read it with every oversized
record replaced by a one-line rejection the handler answers with an error record; its manifest's prefix is that
folder. What the trigger learnt from reading a file version is kept under ``manifests/_scans/`` (:func:`scan_key`,
and the copy itself: :func:`scan_copy_key`), so a retry never reads it again.

Job ``J`` writes under its own folder ``output/_jobs/J/`` (its ``S3OutputPath``): SageMaker's output names for
``ManifestFile`` input are not documented (:data:`OUTPUT_NAMINGS`: the entry, its base name or the full key, each
followed by ``.out``), and SageMaker never deletes an older ``.out``. The job-outcome function matches what the job
wrote there to its inputs and copies each result to the canonical ``output/<relative>.out`` above.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Prefixes:
    """Disjoint key prefixes of the data bucket. Only ``input/`` starts work, so outputs can never trigger jobs."""

    input: str = "input/"
    output: str = "output/"
    errors: str = "errors/"
    models: str = "models/"
    manifests: str = "manifests/"
    capture: str = "capture/"


PREFIXES: Final = Prefixes()

INPUT_SUFFIX: Final = ".jsonl"  # only these objects start work
GZIP_INPUT_SUFFIX: Final = ".jsonl.gz"  # refused: the model handler reads uncompressed JSON Lines
OUTPUT_SUFFIX: Final = ".out"  # SageMaker appends it to every output object of a transform
STATUS_SUFFIX: Final = ".status.json"
MANIFEST_SUFFIX: Final = ".json"
VERSIONS_SUFFIX: Final = ".versions.json"  # next to a job's manifest: the input versions the trigger claimed
JOBS_FOLDER: Final = "_jobs/"  # under the output prefix: one folder per transform job (its S3OutputPath)

# How SageMaker may name the output of a ManifestFile entry under the job's S3OutputPath (then ".out").
RELATIVE_KEY: Final = "relative key"  # the manifest entry: "a/b.jsonl"
BASE_NAME: Final = "base name"  # its last path segment: "b.jsonl"
FULL_KEY: Final = "full key"  # the whole input key: "input/a/b.jsonl"
OUTPUT_NAMINGS: Final = (RELATIVE_KEY, FULL_KEY, BASE_NAME)  # the order a match is tried in
MAX_KEY_BYTES: Final = 1024  # S3's limit on a key (UTF-8)
# Under the errors prefix: status records of inputs whose derived keys would pass MAX_KEY_BYTES, named
# ``<errors prefix>_long-keys/<sha256 of the input key>.status.json`` (long_key_status_key).
LONG_KEYS_FOLDER: Final = "_long-keys/"
STAGED_FOLDER: Final = "_staged/"  # under the manifests prefix: one folder per job that reads re-staged files
SCANS_FOLDER: Final = "_scans/"  # under the manifests prefix: one small record per object version read
# Folders under the input prefix that are not inputs: their outputs or status would land in the stack's own folders.
RESERVED_INPUT_FOLDERS: Final = (JOBS_FOLDER,)


def key_prefix(value: str) -> str:
    """``value`` as a key prefix: empty stays empty (the bucket's root), otherwise it ends in ``/``."""
    return value if not value or value.endswith("/") else value + "/"


def relative_key(key: str, input_prefix: str) -> str:
    """``input/a/b.jsonl`` → ``a/b.jsonl``: the name a manifest lists and outputs and status records keep."""
    if not key.startswith(input_prefix):
        raise ValueError(f"{key!r} is not under the input prefix {input_prefix!r}")
    return key[len(input_prefix) :]


def input_key(input_prefix: str, relative: str) -> str:
    return f"{input_prefix}{relative}"


def output_key(output_prefix: str, relative: str) -> str:
    """Where SageMaker writes a manifest entry's result: ``<output prefix><relative>.out``."""
    return f"{output_prefix}{relative}{OUTPUT_SUFFIX}"


def status_key(prefix: str, relative: str) -> str:
    """Key of a file's status record: ``<output or errors prefix><relative>.status.json``."""
    return f"{prefix}{relative}{STATUS_SUFFIX}"


def manifest_key(manifest_prefix: str, job_name: str) -> str:
    return f"{manifest_prefix}{job_name}{MANIFEST_SUFFIX}"


def derived_keys(
    *,
    input_prefix: str,
    output_prefix: str,
    errors_prefix: str,
    manifest_prefix: str,
    relative: str,
    job_name: str,
) -> tuple[str, ...]:
    """Every key the batch path derives from an input's relative key: its re-staged copy, its output, both places of
    its status record and each name SageMaker may give its output in job ``job_name``'s folder (a name as long as
    the stack's job names will do). A key added to the layout is added here too: the trigger refuses inputs whose
    longest one is too long."""
    job_folder = job_output_prefix(output_prefix, job_name)
    return (
        staged_prefix(manifest_prefix, job_name) + relative,
        output_key(output_prefix, relative),
        status_key(output_prefix, relative),
        status_key(errors_prefix, relative),
        *(f"{job_folder}{name}{OUTPUT_SUFFIX}" for name in output_names(relative, input_prefix).values()),
    )


def key_bytes(key: str) -> int:
    """A key's length as S3 counts it (UTF-8 bytes; a lone surrogate counts as its 3 bytes)."""
    return len(key.encode("utf-8", "surrogatepass"))


def long_key_status_key(errors_prefix: str, key: str) -> str:
    """Where the status record of an input with a key too long for its derived keys goes: a fixed-length name, the
    SHA-256 of the full input key (which the record's ``input`` holds)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{errors_prefix}{LONG_KEYS_FOLDER}{digest}{STATUS_SUFFIX}"


def versions_key(manifest_prefix: str, job_name: str) -> str:
    """The sidecar of job ``job_name``'s manifest: each entry's object version (a manifest lists keys only)."""
    return f"{manifest_prefix}{job_name}{VERSIONS_SUFFIX}"


def job_output_prefix(output_prefix: str, job_name: str) -> str:
    """Job ``job_name``'s own output folder, ``<output prefix>_jobs/<job name>/``: its ``S3OutputPath``, empty when
    the job starts (job names are never reused), so nothing in it can be an earlier run's."""
    return f"{output_prefix}{JOBS_FOLDER}{job_name}/"


def is_job_output_key(key: str, output_prefix: str) -> bool:
    """Whether ``key`` lies in a job's folder (not a canonical output or status record of an input)."""
    return key.startswith(output_prefix + JOBS_FOLDER)


def output_names(relative: str, input_prefix: str) -> dict[str, str]:
    """The name each of :data:`OUTPUT_NAMINGS` gives the entry ``relative`` (before ``.out``)."""
    return {RELATIVE_KEY: relative, FULL_KEY: input_key(input_prefix, relative), BASE_NAME: relative.rsplit("/", 1)[-1]}


def staged_prefix(manifest_prefix: str, job_name: str) -> str:
    """The folder job ``job_name`` reads its files from when any of them had to be re-staged (the manifest's
    prefix then): ``<manifest prefix>_staged/<job name>/``, each file under its relative key."""
    return f"{manifest_prefix}{STAGED_FOLDER}{job_name}/"


def _scan_name(manifest_prefix: str, claim_id: str) -> str:
    digest = hashlib.sha256(claim_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{manifest_prefix}{SCANS_FOLDER}{digest}"


def scan_key(manifest_prefix: str, claim_id: str) -> str:
    """Where the trigger keeps what it learnt reading one object version (``claim_id``): a fixed-length name."""
    return _scan_name(manifest_prefix, claim_id) + MANIFEST_SUFFIX


def scan_copy_key(manifest_prefix: str, claim_id: str) -> str:
    """Beside :func:`scan_key`: the copy of that object version with its oversized records rejected (written only
    when it has any); a job's staged folder is copied from it."""
    return _scan_name(manifest_prefix, claim_id) + INPUT_SUFFIX


def reserved_input_folder(relative: str) -> str | None:
    """The reserved folder (:data:`RESERVED_INPUT_FOLDERS`) an input's relative key lies in, or None."""
    return next((folder for folder in RESERVED_INPUT_FOLDERS if relative.startswith(folder)), None)
