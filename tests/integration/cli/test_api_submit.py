"""``Classifier.submit`` (the Python API's batch path) against the local pipeline on moto server.

The same flow as ``zstc submit``: the real trigger and job-outcome functions, transform jobs run by the local runner
with the handler in-process on the tiny random model.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from zstc.client import Classifier
from zstc.submit import SubmitState, state_path

from .conftest import STACK, tweets, write_csv

LABELS = ["Personal Growth", "Humor", "Health & Fitness", "Finance"]


@pytest.fixture
def classifier(pipeline):
    return Classifier.from_stack(STACK)


def uploads(pipeline) -> list[str]:
    s3 = pipeline.client("s3")
    listing = s3.list_objects_v2(Bucket=pipeline.stack_outputs().bucket, Prefix="input/zstc/")
    return [item["Key"] for item in listing.get("Contents", [])]


def test_a_dataframe_comes_back_with_its_rows_index_and_a_result_per_row(classifier, tmp_path):
    # Given a DataFrame of real tweets with its own index, one row without text and one with a missing value
    rows = tweets(12)
    frame = pd.DataFrame(rows).set_index("tweet_id")
    frame.iloc[2, frame.columns.get_loc("text")] = ""
    frame.iloc[5, frame.columns.get_loc("text")] = None
    # When submitted through the batch path
    joined = classifier.submit(frame, text_column="text", labels=LABELS, progress=False, poll=0.2, work_dir=tmp_path)
    # Then every row is there, in order, with its columns and index, and a label or an explicit error
    assert list(joined.index) == list(frame.index)
    assert list(joined.columns) == [*frame.columns, "label", "score", "labels", "scores", "error"]
    assert joined["text"].tolist()[:2] == frame["text"].tolist()[:2]
    bad = joined.iloc[[2, 5]]
    assert bad["label"].isna().all() and bad["error"].str.contains("empty").all()
    good = joined.drop(joined.index[[2, 5]])
    assert good["error"].isna().all() and good["label"].isin(LABELS).all()
    assert all(sorted(labels) == sorted(LABELS) for labels in good["labels"])


def test_submit_without_waiting_then_again_resumes_without_a_second_upload(classifier, pipeline, tmp_path):
    # Given a CSV submitted with wait=False
    path = write_csv(tmp_path / "later.csv", tweets(5, with_newlines=1, with_mojibake=1))
    before = len(uploads(pipeline))
    submission = classifier.submit(path, labels=LABELS, wait=False, progress=False)
    assert json.loads(state_path(path).read_text())["status"] == "uploaded"
    # When the same file is submitted again
    joined = classifier.submit(path, labels=LABELS, progress=False, poll=0.2)
    # Then it follows the first upload (the state file `zstc submit` writes) and returns the rows with results
    assert len(uploads(pipeline)) == before + 1
    assert SubmitState.load(state_path(path)).key == submission.state.key
    assert SubmitState.load(state_path(path)).status == "done"
    assert len(joined) == 5 and joined["label"].isin(LABELS).all()
    assert (tmp_path / "later.results.csv").exists()


def test_a_jsonl_file_comes_back_with_line_id_and_text(classifier, tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": 7, "inputs": "Run a marathon"}\n{oops\n', encoding="utf-8")
    joined = classifier.submit(path, labels="Health,Finance", poll=0.2)
    shown = " ".join(capsys.readouterr().err.split())
    assert "1 of 2 record(s) have problems" in shown and "✓ outputs ready" in shown
    assert "1 classified, 1 error(s), 2 records → " in shown
    assert joined["line"].tolist() == [1, 2] and joined["id"].tolist() == ["7", "2"]
    assert joined["text"].tolist()[0] == "Run a marathon" and pd.isna(joined["text"].tolist()[1])
    assert joined["label"].tolist()[0] in ("Health", "Finance") and "not valid JSON" in joined["error"].tolist()[1]
