"""The runtime API front of ``zstc serve`` and the server's watchdog, without Java: a stand-in model server.

The real serving stack is tested in tests/integration/client/test_local_endpoint.py; these check the HTTP contract
boto3 sees (headers, ModelError, ValidationError, pass-through) and that an owner killed with SIGKILL takes the
server's process group with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import psutil
import pytest
from botocore.config import Config

from zstc_local.serving import WATCHDOG, RuntimeFront, free_port


class Model(BaseHTTPRequestHandler):
    """Answers like the container: /ping, and /invocations echoing the request (400 for text/csv)."""

    def log_message(self, *args):
        return None

    def do_GET(self):
        self._reply(200, b"{}", "application/json")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers["Content-Type"] == "text/csv":
            self._reply(400, b"Content type text/csv is not supported", "text/plain")
            return
        answer = json.dumps({"echo": body.decode(), "accept": self.headers.get("Accept")}).encode()
        self._reply(200, answer, "application/json", attributes=self.headers.get("X-Amzn-SageMaker-Custom-Attributes"))

    def _reply(self, status, body, content_type, attributes=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if attributes:
            self.send_header("X-Amzn-SageMaker-Custom-Attributes", attributes)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def front():
    model = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    running = RuntimeFront(
        port=free_port(), model_url=f"http://127.0.0.1:{model.server_port}", endpoint_name="known"
    ).start()
    yield running
    running.stop()
    model.shutdown()
    model.server_close()


def runtime(front):
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=f"http://127.0.0.1:{front.port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=Config(retries={"max_attempts": 1}),
    )


def test_invoke_endpoint_gets_the_models_answer_and_the_runtime_headers(front):
    response = runtime(front).invoke_endpoint(
        EndpointName="known", ContentType="application/json", Accept="application/json", Body=b'{"a": 1}',
        CustomAttributes="trace-1",
    )  # fmt: skip
    assert json.loads(response["Body"].read()) == {"echo": '{"a": 1}', "accept": "application/json"}
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "trace-1"


def test_a_model_4xx_is_boto3s_model_error_with_the_original_status_and_message(front):
    client = runtime(front)
    with pytest.raises(client.exceptions.ModelError) as raised:
        client.invoke_endpoint(EndpointName="known", ContentType="text/csv", Body=b"a,b")
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert response["OriginalMessage"] == "Content type text/csv is not supported"
    assert response["Error"]["Message"].startswith(
        'Received client error (400) from primary with message "Content type text/csv is not supported".'
    )


def test_an_unknown_endpoint_name_is_a_validation_error(front):
    client = runtime(front)
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint other of account 000000000000 not found"):
        client.invoke_endpoint(EndpointName="other", ContentType="application/json", Body=b"{}")


def test_a_body_over_6_mb_is_refused_before_the_model(front):
    client = runtime(front)
    with pytest.raises(client.exceptions.ValidationError, match="over the limit of 6000000 bytes"):
        client.invoke_endpoint(EndpointName="known", ContentType="application/json", Body=b"x" * 6_000_001)


def test_the_container_paths_pass_through(front):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{front.port}/ping", timeout=5) as response:
        assert response.status == 200
    request = urllib.request.Request(
        f"http://127.0.0.1:{front.port}/invocations", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["echo"] == "{}"


OWNER = """
import subprocess, sys, time
group = subprocess.Popen(["sleep", "600"], start_new_session=True)
subprocess.Popen([sys.executable, "-c", sys.argv[1], str(group.pid)], stdin=subprocess.PIPE, start_new_session=True)
print(group.pid, flush=True)
time.sleep(600)
"""


def test_the_watchdog_ends_the_server_group_when_its_owner_is_killed_with_sigkill():
    # Given an owner process holding a server process group and its watchdog
    owner = subprocess.Popen([sys.executable, "-c", OWNER, WATCHDOG], stdout=subprocess.PIPE, text=True)
    group = int(owner.stdout.readline())
    assert psutil.pid_exists(group)
    # When the owner is killed without a chance to clean up
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    # Then the watchdog ends the group
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if psutil.Process(group).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        os.killpg(group, signal.SIGKILL)
        pytest.fail("the server group outlived its owner")
