"""The staged artifact, extracted as SageMaker does, loads in the real serving stack and answers a request."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request

import pytest

from functions.model_importer.logic import ImportRequest
from functions.model_importer.service import HubClient, import_model
from zstc_local.serving import LocalServer


@pytest.mark.serving
def test_staged_artifact_serves_zero_shot_requests(hub, fx, aws, tiny_model_dir, handler_code_files, tmp_path):
    # Given the tiny NLI model on the (fake) Hub, with our real handler code, imported into S3
    assert "def " in handler_code_files["inference.py"].decode(), "model/code/inference.py must be the real handler"
    hub.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir))
    request = ImportRequest(
        model_id=fx.MODEL_ID,
        revision=fx.REVISION,
        bucket=fx.BUCKET,
        prefix="models/",
        code_files=handler_code_files,
        supported_model_types=fx.SUPPORTED_MODEL_TYPES,
    )
    result = import_model(HubClient(hub.base_url), aws.s3, request)

    # When SageMaker's steps are replayed: download, extract into /opt/ml/model, start the server
    body = aws.s3.get_object(Bucket=fx.BUCKET, Key=result.key)["Body"].read()
    model_dir = tmp_path / "model"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        tar.extractall(model_dir, filter="data")
    with LocalServer(model_dir) as server:
        payload = {
            "inputs": "I will run a marathon this year.",
            "parameters": {"candidate_labels": ["sports", "finance", "cooking"]},
        }
        http_request = urllib.request.Request(
            f"{server.url}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(http_request, timeout=120) as response:
            answer = json.loads(response.read())

    # Then it answers with the labels sorted by score (the record contract)
    record = answer[0] if isinstance(answer, list) else answer
    assert sorted(record["labels"]) == ["cooking", "finance", "sports"]
    assert record["scores"] == sorted(record["scores"], reverse=True)
    assert record["sequence"] == payload["inputs"]
