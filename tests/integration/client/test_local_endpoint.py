"""`zstc serve` as a SageMaker endpoint: unchanged boto3 code, the Python API, SIGTERM and the log folder.

One real serving stack (toolkit + Multi Model Server + our handler, tiny random model) started through the command
line in a scratch working directory; the last test stops it with SIGTERM, as a process manager would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import psutil
import pytest
from botocore.config import Config

from zstc.client import Classifier
from zstc_local.serving import MMS_SOCKET, free_port

pytestmark = pytest.mark.serving
REPO = Path(__file__).resolve().parents[3]
ENDPOINT = "my-endpoint"
LABELS = ["Health", "Career", "Finance"]


class Served:
    def __init__(self, process: subprocess.Popen, port: int, cwd: Path, log_dir: Path, output: Path) -> None:
        self.process, self.port, self.cwd, self.log_dir, self.output = process, port, cwd, log_dir, output
        self.url = f"http://127.0.0.1:{port}"

    def runtime(self):
        # unchanged user code, only endpoint_url differs (fake credentials: the local endpoint ignores them)
        return boto3.client(
            "sagemaker-runtime",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=Config(retries={"max_attempts": 1}),
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    cwd = tmp_path_factory.mktemp("serve-cwd")
    log_dir = tmp_path_factory.mktemp("serve-logs")
    output = cwd / "serve.out"
    port = free_port()
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", "from zstc.cli import main; main()", "serve", "--model", "tiny", "--port",
             str(port), "--log-dir", str(log_dir)],
            cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"},
        )  # fmt: skip
    try:
        # the machine runs one Multi Model Server at a time: this may queue behind others on the lock
        deadline = time.monotonic() + 1500
        while "Serving" not in output.read_text(errors="replace"):
            assert process.poll() is None, output.read_text(errors="replace")
            assert time.monotonic() < deadline, "zstc serve did not start"
            time.sleep(0.5)
        yield Served(process, port, cwd, log_dir, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_unchanged_boto3_code_gets_the_same_answer_as_the_handler(served, tiny_handler):
    # Given a deployed endpoint's request, sent with boto3 to the local URL
    body = json.dumps({"inputs": "I will run a marathon", "parameters": {"candidate_labels": LABELS}})
    response = served.runtime().invoke_endpoint(
        EndpointName=ENDPOINT, ContentType="application/json", Accept="application/json", Body=body
    )
    # Then boto3 parses the runtime API's answer: body, content type and the invoked variant
    answer = json.loads(response["Body"].read())
    assert response["ContentType"].startswith("application/json")
    assert response["InvokedProductionVariant"] == "AllTraffic"
    expected = json.loads(tiny_handler.invoke(body.encode(), "application/json", "application/json"))
    assert answer["labels"] == expected["labels"]
    assert answer["scores"] == pytest.approx(expected["scores"], abs=1e-6)


def test_a_request_the_model_rejects_raises_boto3s_model_error(served):
    runtime = served.runtime()
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        runtime.invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=b"a,b\n")
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 400
    assert "text/csv" in error["OriginalMessage"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "Received client error (400) from primary" in error["Error"]["Message"]


def test_the_container_paths_still_answer(served):
    with urllib.request.urlopen(f"{served.url}/ping", timeout=10) as response:
        assert response.status == 200


def test_a_thousand_texts_with_bad_records_come_back_complete_and_in_order(served):
    # Given 1,000 texts: every 9th empty, every 13th with a label-breaking template-free oddity (just odd text)
    texts: list = [f"resolution {i}: {'run more' if i % 2 else 'save money'}" for i in range(1000)]
    for i in range(0, 1000, 9):
        texts[i] = ""
    for i in range(5, 1000, 97):
        texts[i] = None
    texts[3] = "[/bold] \x1b[31m</s> text with markup and escapes"
    ids = [f"t{i}" for i in range(1000)]
    classifier = Classifier(endpoint_url=served.url, endpoint_name=ENDPOINT, records_per_request=64, concurrency=2)
    # When they are classified through the runtime API
    results = classifier.classify(texts, LABELS, ids=ids)
    # Then each text has exactly one result, in input order; the bad ones as errors
    assert [r.id for r in results] == ids
    for text, result in zip(texts, results, strict=True):
        if isinstance(text, str) and text.strip():
            assert result.error is None and result.sequence == text and sorted(result.labels) == sorted(LABELS)
        else:
            assert result.error and result.label is None
    assert len(results.errors) == len([t for t in texts if not (isinstance(t, str) and t.strip())])


def test_the_sagemaker_sdk_endpoint_invoke_gets_the_same_answer(served, tiny_handler, monkeypatch):
    # The SageMaker Python SDK v3 (sagemaker-core) replaces v2's Predictor with Endpoint.invoke(); its runtime client
    # is boto3's, pointed at the local URL by the standard service-specific variable.
    from sagemaker.core.resources import Endpoint

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", served.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    body = json.dumps({"inputs": "Save more money", "parameters": {"candidate_labels": LABELS}})
    response = Endpoint(endpoint_name=ENDPOINT).invoke(body=body, content_type="application/json")
    raw = response.body.read() if hasattr(response.body, "read") else response.body
    expected = json.loads(tiny_handler.invoke(body.encode(), "application/json", "application/json"))
    assert json.loads(raw)["labels"] == expected["labels"]
    assert response.invoked_production_variant == "AllTraffic"


def test_sigterm_ends_the_whole_server_and_the_logs_are_in_their_own_folder(served):
    # Given the running server's processes (entry point, Java frontend, Python workers) and their ports
    serve = psutil.Process(served.process.pid)
    groups = {os.getpgid(child.pid) for child in serve.children(recursive=True)}
    members = [p for p in psutil.process_iter() if _pgid(p) in groups]
    ports = {served.port}
    for member in members:
        with contextlib.suppress(psutil.Error):
            ports |= {c.laddr.port for c in member.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert any("java" in (p.name() or "") for p in members)
    startup = served.output.read_text(errors="replace")
    # When zstc serve gets SIGTERM
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(timeout=90)
    # Then every process of the server is gone, the ports and the worker socket are free
    _gone, alive = psutil.wait_procs(members, timeout=30)
    assert not alive, [p.pid for p in alive]
    for port in ports:  # as a new server would bind it (SO_REUSEADDR: closed connections may linger in TIME_WAIT)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(OSError):
        probe.connect(str(MMS_SOCKET))
    # and Multi Model Server's logs went to the named folder, not into the working directory
    assert f"Multi Model Server logs: {served.log_dir}" in " ".join(startup.split())
    assert (served.log_dir / "mms_log.log").is_file()
    assert not (served.cwd / "logs").exists()


def _pgid(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError, psutil.Error):
        return None
