"""A superseded job's record never replaces its newer version's result (moto, which enforces S3's conditional
writes: ``IfMatch`` / ``IfNoneMatch`` on PutObject, ``IfMatch`` on DeleteObject).

An input overwritten while its job ran ends ``Superseded``; the newer version has its own job, which may end while
the older job is recorded. The races are played by a client that runs the newer job's outcome (or an upload) at a
chosen call of the older job's outcome function: between its reads of the status records and its write."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions.job_outcome.service import SUPERSEDED_WRITE_ATTEMPTS
from tests.integration.batch.batch_moto import BUCKET, Env
from tests.integration.batch.test_outcome_outputs import RECORD, Jobs

FAILING = b'{"id": "FAIL", "inputs": "x"}\n'  # the runner's model server fails the object holding it
ERRORS = "errors/a.jsonl.status.json"
BESIDE_OUTPUT = "output/a.jsonl.status.json"

Call = tuple[str, dict[str, Any]]


class Race:
    """S3 clients (one per function built) that run ``then`` once, just before the first call ``at`` picks, and
    pass every call to moto; ``calls`` keeps each call made through them."""

    def __init__(self, at: Callable[[str, dict[str, Any]], bool], then: Callable[[], Any]) -> None:
        self.at, self.then = at, then
        self.fired = False
        self.calls: list[Call] = []

    def client(self, real: Any) -> Any:
        race = self

        class Client:
            def __getattr__(self, name: str) -> Any:
                method = getattr(real, name)
                if not callable(method):
                    return method

                def call(*args: Any, **kwargs: Any) -> Any:
                    race.calls.append((name, kwargs))
                    if not race.fired and race.at(name, kwargs):
                        race.fired = True
                        race.then()
                    return method(*args, **kwargs)

                return call

        return Client()


@contextmanager
def plain_clients(jobs: Jobs) -> Iterator[Jobs]:
    """``jobs`` with moto's own clients (for the other job's outcome, run in the middle of a call)."""
    saved, jobs.s3 = jobs.s3, None
    try:
        yield jobs
    finally:
        jobs.s3 = saved


def put_at(key: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda operation, kwargs: operation == "put_object" and kwargs.get("Key") == key


def versions(env: Env, key: str) -> list[tuple[str, str, bool]]:
    """Every version and delete marker at ``key``: (VersionId, ETag or "marker", IsLatest)."""
    listing = env.s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    found = [(v["VersionId"], v["ETag"], v["IsLatest"]) for v in listing.get("Versions", []) if v["Key"] == key]
    found += [(m["VersionId"], "marker", m["IsLatest"]) for m in listing.get("DeleteMarkers", []) if m["Key"] == key]
    return sorted(found)


def version_of(obj: Any) -> str:
    return str(obj.revision).removeprefix("v-")


def earlier_failure(jobs: Jobs) -> None:
    """An earlier version's failure under errors/ (the older job's write is then an ``IfMatch`` one)."""
    jobs.outcome(jobs.run(jobs.start([jobs.put("input/a.jsonl", FAILING)])))
    assert jobs.status(ERRORS)["state"] == "Failed"


@pytest.fixture
def race_jobs(env: Env) -> Iterator[tuple[Jobs, list[Race]]]:
    """Jobs whose outcome function's S3 client is the race set in the list (none: moto's)."""
    races: list[Race] = []
    jobs = Jobs(env, s3=lambda real: races[0].client(real) if races else real)
    yield jobs, races


@pytest.mark.parametrize("before", ["nothing", "an earlier failure"])
def test_a_newer_failure_recorded_between_the_older_jobs_check_and_write_remains(
    race_jobs: tuple[Jobs, list[Race]], before: str
) -> None:
    jobs, races = race_jobs
    if before == "an earlier failure":
        earlier_failure(jobs)
    # Given version 1's job done, then version 2 uploaded and its job failed, its end not yet recorded
    old = jobs.put("input/a.jsonl", RECORD)
    old_event = jobs.run(jobs.start([old]))
    new = jobs.put("input/a.jsonl", FAILING)
    new_event = jobs.run(jobs.start([new]))
    assert new_event["detail"]["TransformJobStatus"] == "Failed"

    # When version 2's failure is recorded just before version 1's Superseded record is written
    def newer_outcome() -> None:
        with plain_clients(jobs):
            jobs.outcome(new_event)

    races.append(Race(at=put_at(ERRORS), then=newer_outcome))
    result = jobs.outcome(old_event)
    # Then version 2's failure is the file's record, and version 1's job wrote nothing there
    status = jobs.status(ERRORS)
    assert status["state"] == "Failed" and status["version_id"] == version_of(new)
    assert result["files_superseded"] == 1 and result["status_records_not_written"] == []
    conditional = [kw for op, kw in races[0].calls if op == "put_object" and kw.get("Key") == ERRORS]
    assert len(conditional) == 1 and ("IfMatch" in conditional[0]) == (before == "an earlier failure")
    assert conditional[0].get("IfNoneMatch", "*") == "*"


@pytest.mark.parametrize("before", ["nothing", "an earlier failure"])
def test_a_newer_success_recorded_between_the_older_jobs_check_and_write_leaves_no_superseded_record(
    race_jobs: tuple[Jobs, list[Race]], before: str
) -> None:
    jobs, races = race_jobs
    if before == "an earlier failure":
        earlier_failure(jobs)
    # Given version 1's job done, then version 2 uploaded and its job succeeded, its end not yet recorded
    old = jobs.put("input/a.jsonl", RECORD)
    old_event = jobs.run(jobs.start([old]))
    new = jobs.put("input/a.jsonl", RECORD * 2)
    new_event = jobs.run(jobs.start([new]))

    # When version 2's success is recorded (beside the output, the errors/ record removed) just before version 1's
    # Superseded record is written
    def newer_outcome() -> None:
        with plain_clients(jobs):
            jobs.outcome(new_event)

    races.append(Race(at=put_at(ERRORS), then=newer_outcome))
    result = jobs.outcome(old_event)
    # Then version 2's success is the file's only record: nothing under errors/
    assert jobs.body(ERRORS) is None
    status = jobs.status(BESIDE_OUTPUT)
    assert status["state"] == "Succeeded" and status["version_id"] == version_of(new)
    assert jobs.body("output/a.jsonl.out").count(b"\n") == 2
    assert result["files_superseded"] == 1 and result["status_records_not_written"] == []


def test_a_version_uploaded_and_failed_while_the_superseded_job_is_recorded_keeps_its_failure(
    race_jobs: tuple[Jobs, list[Race]],
) -> None:
    jobs, races = race_jobs
    # Given version 1's job done and version 2 uploaded (its job still running)
    old = jobs.put("input/a.jsonl", RECORD)
    old_event = jobs.run(jobs.start([old]))
    jobs.put("input/a.jsonl", RECORD * 2)
    newest: list[Any] = []

    # When, once version 1's job is found superseded by version 2, version 3 is uploaded and its job's failure
    # recorded before version 1's Superseded record is checked and written
    def third_version_fails() -> None:
        with plain_clients(jobs):
            newest.append(jobs.put("input/a.jsonl", FAILING))
            jobs.outcome(jobs.run(jobs.start([newest[0]])))

    def first_read_of_the_record(operation: str, kwargs: dict[str, Any]) -> bool:
        return operation == "get_object" and kwargs.get("Key") == ERRORS

    races.append(Race(at=first_read_of_the_record, then=third_version_fails))
    result = jobs.outcome(old_event)
    # Then version 3's failure stays the file's record
    assert races[0].fired
    status = jobs.status(ERRORS)
    assert status["state"] == "Failed" and status["version_id"] == version_of(newest[0])
    assert result["files_superseded"] == 1 and result["status_records_not_written"] == []


@pytest.mark.parametrize("newer", ["failed", "succeeded"])
def test_a_late_redelivery_of_the_older_jobs_event_changes_nothing_of_the_newer_result(
    race_jobs: tuple[Jobs, list[Race]], newer: str
) -> None:
    jobs, _ = race_jobs
    # Given version 1's job recorded (it succeeded), then version 2's job recorded
    old = jobs.put("input/a.jsonl", RECORD)
    old_event = jobs.run(jobs.start([old]))
    jobs.outcome(old_event)
    assert jobs.status(BESIDE_OUTPUT)["version_id"] == version_of(old)
    new = jobs.put("input/a.jsonl", FAILING if newer == "failed" else RECORD * 2)
    jobs.outcome(jobs.run(jobs.start([new])))
    keys = (ERRORS, BESIDE_OUTPUT, "output/a.jsonl.out")
    before = {key: versions(jobs.env, key) for key in keys}
    record = ERRORS if newer == "failed" else BESIDE_OUTPUT
    assert jobs.status(record)["version_id"] == version_of(new)
    # When version 1's event is delivered again (EventBridge delivers at least once)
    result = jobs.outcome(old_event)
    # Then it is superseded, and no object of the file's result has a new version, a new delete marker or another
    # current version
    assert result["files_superseded"] == 1 and result["status_records_not_written"] == []
    assert {key: versions(jobs.env, key) for key in keys} == before
    assert jobs.status(record)["version_id"] == version_of(new)


def test_a_record_changing_under_every_conditional_write_ends_as_not_written(env: Env) -> None:
    # Given S3 answering every conditional write of the status record with 412 (another writer each time)
    attempts: list[dict[str, Any]] = []

    class Contended:
        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            method = getattr(self._real, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                if name == "put_object" and ("IfMatch" in kwargs or "IfNoneMatch" in kwargs):
                    attempts.append(kwargs)
                    error = {"Error": {"Code": "PreconditionFailed", "Message": "At least one of the preconditions"}}
                    raise ClientError({**error, "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject")
                return method(*args, **kwargs)

            return call if callable(method) else method

    jobs = Jobs(env, s3=Contended)
    old = jobs.put("input/a.jsonl", RECORD)
    old_event = jobs.run(jobs.start([old]))
    jobs.put("input/a.jsonl", RECORD * 2)
    # When version 1's job ends superseded
    result = jobs.outcome(old_event)
    # Then the tries are bounded, the record is counted as not written and named in the notice
    assert len(attempts) == SUPERSEDED_WRITE_ATTEMPTS
    assert result["files_superseded"] == 1 and result["status_records_not_written"] == ["a.jsonl"]
    assert jobs.body(ERRORS) is None
    (notice,) = jobs.notices()
    assert notice["status_records_not_written"] == [f"s3://{BUCKET}/input/a.jsonl"]
