"""moto S3, the handler code zip and constants for the model importer's tests (the fake Hub: ../fake_hub.py)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from tests.integration.fake_hub import MODEL_ID, REVISION, VALID_TOKEN, model_files

REPO_ROOT = Path(__file__).resolve().parents[3]
HANDLER_CODE_DIR = REPO_ROOT / "model" / "code"
# The handler's one list of supported architectures, as the stack passes it to the importer.
SUPPORTED_MODEL_TYPES = tuple(
    json.loads((HANDLER_CODE_DIR / "supported_architectures.json").read_text())["model_types"]
)
BUCKET = "zstc-test-bucket"
ASSETS_BUCKET = "cdk-assets-test"
CODE_KEY = "assets/handler-code.zip"


@pytest.fixture(scope="session")
def handler_code_files() -> dict[str, bytes]:
    """Our handler code as the CDK asset ships it; a stand-in while model/code/inference.py does not exist yet."""
    files = {
        str(p.relative_to(HANDLER_CODE_DIR)): p.read_bytes()
        for p in sorted(HANDLER_CODE_DIR.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
    return files or {"inference.py": b"# stand-in handler\n"}


def code_zip(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        archive.writestr("__pycache__/inference.cpython-313.pyc", b"cache")
    return buffer.getvalue()


@pytest.fixture
def aws(mocked_aws: None) -> Iterator[SimpleNamespace]:
    """moto S3 and Secrets Manager with the stack's bucket and the CDK assets bucket."""
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=ASSETS_BUCKET)
    kms = boto3.client("kms", region_name="us-east-1")
    key_arn = kms.create_key()["KeyMetadata"]["Arn"]
    yield SimpleNamespace(s3=s3, key_arn=key_arn, secrets=boto3.client("secretsmanager", region_name="us-east-1"))


class FakeContext:
    """The Lambda context attributes the handler uses."""

    log_group_name = "/aws/lambda/model-importer"
    log_stream_name = "2026/11/01/[$LATEST]abcdef"

    def __init__(self, remaining_ms: int = 900_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(scope="session")
def fx() -> SimpleNamespace:
    """Constants and helpers for the test modules (conftest modules are not importable under importlib mode)."""
    return SimpleNamespace(
        MODEL_ID=MODEL_ID,
        REVISION=REVISION,
        BUCKET=BUCKET,
        ASSETS_BUCKET=ASSETS_BUCKET,
        CODE_KEY=CODE_KEY,
        VALID_TOKEN=VALID_TOKEN,
        SUPPORTED_MODEL_TYPES=SUPPORTED_MODEL_TYPES,
        model_files=model_files,
        code_zip=code_zip,
        FakeContext=FakeContext,
    )
