"""``zstc serve`` and ``zstc demo`` with the real serving stack (toolkit + Multi Model Server, Java)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from zstc_local.serving import free_port

pytestmark = pytest.mark.serving
REPO = Path(__file__).resolve().parents[3]


def test_serve_answers_ping_and_invocations_over_http(tiny_handler):
    # Given `zstc serve` running on a free port (the tiny model is already built by the session fixture)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from zstc.cli import main; main()", "serve", "--model", "tiny", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            assert time.monotonic() < deadline, "zstc serve did not answer /ping"
            time.sleep(1)
        # When a JSON Lines body with a good and a bad line is posted
        body = b'{"id": "a", "inputs": "Run a marathon", "parameters": {"candidate_labels": ["Health", "Career"]}}\n'
        body += b'{"id": "b", "inputs": ""}\n'
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/jsonlines"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            lines = [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]
        # Then each line is answered, the bad one with an error
        assert [line["id"] for line in lines] == ["a", "b"]
        assert sorted(lines[0]["labels"]) == ["Career", "Health"] and "error" in lines[1]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_demo_runs_the_whole_path_and_shows_joined_results(zstc, tmp_path, tiny_handler):
    # Given the sample file the project ships (copied: the demo writes results next to its input)
    sample = tmp_path / "resolutions.jsonl"
    shutil.copy(REPO / "samples" / "resolutions.jsonl", sample)
    lines = sample.read_text(encoding="utf-8").splitlines()
    # When the demo runs
    result = zstc("demo", "--input", sample)
    # Then every line comes back (the deliberately bad ones as error rows), through trigger, job and outcome function
    assert result.code == 0, result.text
    back = [json.loads(line) for line in (tmp_path / "resolutions.results.jsonl").read_text().splitlines()]
    assert len(back) == len(lines)
    errors = [row["id"] for row in back if "error" in row]
    assert errors == ["10", "bad-empty", "bad-no-labels"]
    assert "SCORES ARE MEANINGLESS" in result.text
    assert "trigger function" in result.text and "job-outcome function" in result.text
    assert '"state": "Succeeded"' in result.text and '"record_errors": 3' in result.text
