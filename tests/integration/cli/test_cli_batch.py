"""``zstc submit / wait / jobs / classify / eval / sample-data`` against the local pipeline on moto server.

The S3 → SQS notifications, the trigger and job-outcome functions are real; transform jobs created in moto are run
by the local runner with the handler in-process on the tiny random model.
"""

from __future__ import annotations

import csv
import functools
import http.server
import json
import threading

import pytest

from .conftest import STACK, tweets, write_csv

CATEGORIES = "Personal Growth,Humor,Health & Fitness,Recreation & Leisure,Finance,Career"


def test_submit_csv_of_real_tweets_writes_one_result_row_per_input_row(pipeline, zstc, tmp_path):
    # Given 25 real tweets, some with line breaks inside fields and some with mojibake
    rows = tweets(25)
    path = write_csv(tmp_path / "tweets.csv", rows)
    # When submitted through the whole batch path
    result = zstc("submit", path, "--text-column", "text", "--labels", CATEGORIES, "--poll", "0.2", "--stack", STACK)
    # Then every row comes back, in order, with its original text and a label from the candidates
    assert result.code == 0, result.text
    back = list(csv.DictReader((tmp_path / "tweets.results.csv").open(encoding="utf-8", newline="")))
    assert [r["text"] for r in back] == [r["text"] for r in rows]
    assert all(r["predicted_label"] in CATEGORIES.split(",") and not r["error"] for r in back)
    assert "25 classified, 0 error(s), 25 records in total" in result.text


def test_submit_jsonl_with_bad_lines_returns_them_as_error_rows_and_classifies_the_rest(pipeline, zstc, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"id": "a", "inputs": "Run a marathon"}\n'
        "{broken\n"
        '{"id": "c", "inputs": ""}\n'
        '{"id": "d", "inputs": "Save money"}\n',
        encoding="utf-8",
    )
    result = zstc("submit", path, "--labels", "Health,Finance", "--poll", "0.2")
    assert result.code == 0, result.text
    back = [json.loads(line) for line in (tmp_path / "mixed.results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in back] == ["a", "2", "c", "d"]
    assert [("error" in r) for r in back] == [False, True, True, False]
    assert back[0]["label"] in ("Health", "Finance")
    assert "2 classified, 2 error(s)" in result.text


def test_no_wait_returns_at_once_and_wait_resumes_to_the_results(pipeline, zstc, tmp_path):
    path = tmp_path / "later.jsonl"
    path.write_text('{"inputs": "Read more books"}\n', encoding="utf-8")
    submitted = zstc("submit", path, "--labels", "Education,Health", "--no-wait")
    assert submitted.code == 0 and "zstc wait" in submitted.text
    assert not (tmp_path / "later.results.jsonl").exists()
    again = zstc("submit", path, "--labels", "Education,Health", "--no-wait")
    assert again.code == 1 and "already submitted" in again.text
    waited = zstc("wait", path, "--poll", "0.2")
    assert waited.code == 0, waited.text
    assert json.loads((tmp_path / "later.results.jsonl").read_text())["label"] in ("Education", "Health")
    assert json.loads((tmp_path / "later.jsonl.zstc-state.json").read_text())["status"] == "done"


def test_ctrl_c_during_the_upload_keeps_a_state_that_wait_finishes(pipeline, zstc, tmp_path, monkeypatch):
    import boto3.s3.inject

    path = tmp_path / "interrupted.jsonl"
    path.write_text('{"inputs": "Learn Japanese"}\n', encoding="utf-8")
    original = boto3.s3.inject.upload_fileobj

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(boto3.s3.inject, "upload_fileobj", interrupted)
    stopped = zstc("submit", path, "--labels", "Education,Travel")
    assert stopped.code == 130 and "zstc wait FILE" in stopped.text
    assert json.loads((tmp_path / "interrupted.jsonl.zstc-state.json").read_text())["status"] == "uploading"
    monkeypatch.setattr(boto3.s3.inject, "upload_fileobj", original)
    resumed = zstc("wait", path, "--poll", "0.2")
    assert resumed.code == 0, resumed.text
    assert "finishing it" in resumed.text and (tmp_path / "interrupted.results.jsonl").exists()


def test_wait_refuses_a_file_changed_since_submit(pipeline, zstc, tmp_path):
    path = tmp_path / "changed.jsonl"
    path.write_text('{"inputs": "one"}\n', encoding="utf-8")
    assert zstc("submit", path, "--labels", "a,b", "--no-wait").code == 0
    path.write_text('{"inputs": "two"}\n', encoding="utf-8")
    result = zstc("wait", path)
    assert result.code == 2 and "changed since it was submitted" in result.text


def test_wait_without_a_submit_says_what_to_do(zstc, tmp_path):
    path = tmp_path / "never.jsonl"
    path.write_text('{"inputs": "x"}\n', encoding="utf-8")
    result = zstc("wait", path)
    assert result.code == 2 and "Run `zstc submit" in result.text


def test_jobs_lists_the_stack_jobs_with_inputs_and_records(pipeline, zstc, tmp_path):
    path = tmp_path / "for-jobs.jsonl"
    path.write_text('{"inputs": "a"}\n{"inputs": "b"}\n{"inputs": "c"}\n', encoding="utf-8")
    assert zstc("submit", path, "--labels", "x,y", "--poll", "0.2").code == 0
    result = zstc("jobs", "--json")
    assert result.code == 0, result.text
    jobs = json.loads(result.out)
    mine = [job for job in jobs if any(uri.endswith(".jsonl") and "for-jobs" in uri for uri in job["inputs"])]
    # files dropped close together share a job (coalescing): the records are those of all its inputs
    assert len(mine) == 1 and mine[0]["state"] == "Completed" and mine[0]["records"] >= 3
    table = zstc("jobs")
    assert table.code == 0 and mine[0]["name"] in table.text


@pytest.mark.parametrize(
    ("content", "name", "args", "message"),
    [
        ("", "empty.jsonl", ["--labels", "a,b"], "is empty"),
        ("id,body\n1,x\n", "cols.csv", ["--labels", "a,b"], "has no column 'text'. Its columns: id, body"),
        ("text\nx\n", "nolabels.csv", [], "Labels missing"),
    ],
)
def test_input_problems_fail_before_any_upload_with_exit_code_2(zstc, tmp_path, content, name, args, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = zstc("submit", path, *args)
    assert result.code == 2 and message in result.text
    assert not (tmp_path / f"{name}.zstc-state.json").exists()


def test_a_missing_stack_is_one_actionable_line(pipeline, zstc):
    result = zstc("jobs", "--stack", "NoSuchStack")
    assert result.code == 3
    assert "No stack named 'NoSuchStack' in region us-east-1. Deploy it with `make deploy`" in result.text
    assert "Traceback" not in result.text


def test_missing_credentials_are_one_actionable_line(pipeline, zstc, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = zstc("jobs")
    assert result.code == 3 and "No AWS credentials found. Run `aws configure`" in result.text


def test_missing_region_is_one_actionable_line(zstc, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = zstc("jobs")
    assert result.code == 3 and "No AWS region configured. Pass --region" in result.text


def test_classify_on_a_stack_without_endpoint_says_what_to_do(pipeline, zstc):
    result = zstc("classify", "Run a marathon", "--labels", "Health,Career")
    assert result.code == 1 and "has no real-time endpoint" in result.text and "--local MODEL" in result.text


def test_classify_without_labels_is_an_input_error(zstc):
    result = zstc("classify", "Run a marathon")
    assert result.code == 2 and 'pass --labels "Health,Career,Finance"' in result.text


def test_classify_local_runs_the_handler_in_process(zstc, tiny_handler):
    result = zstc("classify", "Run a marathon", "--labels", "Health,Career,Finance", "--local", "tiny", "--json")
    assert result.code == 0, result.text
    answer = json.loads(result.out)
    assert answer["sequence"] == "Run a marathon" and sorted(answer["labels"]) == ["Career", "Finance", "Health"]
    assert sum(answer["scores"]) == pytest.approx(1.0, abs=1e-5)
    assert "scores are meaningless" in result.err


def test_eval_prints_metrics_and_draws_the_confusion_matrix(zstc, tmp_path, tiny_handler):
    path = write_csv(tmp_path / "labelled.csv", tweets(30))
    plot = tmp_path / "cm.png"
    result = zstc("eval", path, "--local", "tiny", "--plot", plot, "--json")
    assert result.code == 0, result.text
    report = json.loads(result.out)
    assert report["records"] == 30 and 0.0 <= report["accuracy"] <= 1.0
    assert sum(map(sum, report["confusion_matrix"])) == 30
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_names_a_missing_label_column(zstc, tmp_path):
    path = write_csv(tmp_path / "x.csv", [{"text": "hi", "label": "a"}])
    result = zstc("eval", path, "--local", "tiny")
    assert result.code == 2 and "no column 'Resolution_Category'" in result.text


@pytest.fixture(scope="module")
def http_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    write_csv(root / "New-years-resolutions-DFE.csv", tweets(40))
    (root / "page.html").write_text("<html>not a csv</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_sample_data_downloads_and_checks_the_csv(zstc, http_files, tmp_path):
    target = tmp_path / "data.csv"
    result = zstc("sample-data", "--url", f"{http_files}/New-years-resolutions-DFE.csv", "--output", target)
    assert result.code == 0, result.text
    assert "Saved 40 rows" in result.text and "Resolution_Category" in result.text
    again = zstc("sample-data", "--url", f"{http_files}/New-years-resolutions-DFE.csv", "--output", target)
    assert again.code == 2 and "--force" in again.text


@pytest.mark.parametrize(
    ("path", "message"), [("missing.csv", "answered HTTP 404"), ("page.html", "not the resolutions")]
)
def test_sample_data_failures_leave_no_file(zstc, http_files, tmp_path, path, message):
    target = tmp_path / "data.csv"
    result = zstc("sample-data", "--url", f"{http_files}/{path}", "--output", target)
    assert result.code == 1 and message in result.text and not target.exists()
