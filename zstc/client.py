"""The Python API: classify texts and submit batch files, from a notebook or a script.

One interface, three places the model can be::

    from zstc import Classifier

    clf = Classifier.from_stack()                        # the deployed stack's endpoint (found from its outputs)
    clf = Classifier(endpoint_url="http://127.0.0.1:8080", endpoint_name="local")   # `zstc serve`, or any endpoint
    clf = Classifier.local("tiny")                        # the same handler in this process, no server

    results = clf.classify(df["text"].tolist(), ["Health", "Career", "Finance"])
    df = df.assign(label=[r.label for r in results])      # or results.to_pandas()

Many texts are packed into JSON Lines requests under the endpoint's payload limit, sent a few at a time, retried with
backoff while the endpoint throttles or starts (``ThrottlingException``, ``ModelNotReadyException``, HTTP 429/503),
and returned in input order. A record the model cannot classify comes back with ``error`` set: no record is ever
dropped or duplicated. ``submit()`` runs the batch path (S3 → transform job) for a file or a DataFrame and returns
the rows joined with their results; it resumes an earlier submission of the same data (the state file of
``zstc submit``). pandas is optional (``pip install '.[pandas]'``): only ``to_pandas()`` and ``submit()`` need it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zstc import errors, inputs
from zstc import results as batch_results
from zstc.errors import InputError, ZstcError
from zstc.stack import DEFAULT_STACK_NAME, StackOutputs

if TYPE_CHECKING:
    import pandas

    from zstc.submit import BeforeUpload

# SageMaker's request payload limits for InvokeEndpoint (the one place they are declared).
SERVERLESS_PAYLOAD_LIMIT = 4_000_000  # bytes: serverless endpoints take at most 4 MB per request
PROVISIONED_PAYLOAD_LIMIT = 6_000_000  # bytes: instance-backed (provisioned) endpoints take at most 6 MB
PAYLOAD_LIMITS = {"serverless": SERVERLESS_PAYLOAD_LIMIT, "provisioned": PROVISIONED_PAYLOAD_LIMIT}
# Records per request: each request must finish within the endpoint's 60 s invocation timeout on a CPU instance.
DEFAULT_RECORDS_PER_REQUEST = 16
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_ATTEMPTS = 8  # first try + 7 retries: about a minute of backoff, enough for a serverless cold start
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 20.0
# Errors of InvokeEndpoint that mean "not now": throttling, a cold start, a busy or restarting service.
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ModelNotReadyException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalDependencyException",
    }
)
RETRYABLE_STATUS = frozenset({429, 503})  # serverless endpoints answer these while scaling; so does a busy model server
JSON = "application/json"
JSON_LINES = "application/jsonlines"
PANDAS_MISSING = "pandas is not installed: `pip install 'zero-shot-sagemaker[pandas]'` (or `pip install pandas`)."


# --- results ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Classification:
    """One text's answer: labels sorted by score (highest first), or ``error`` when it could not be classified."""

    id: Any
    sequence: str | None
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str | None:
        """The top label (None for an error)."""
        return self.labels[0] if self.labels else None

    @property
    def score(self) -> float | None:
        return self.scores[0] if self.scores else None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sequence": self.sequence,
            "label": self.label,
            "score": self.score,
            "labels": list(self.labels),
            "scores": list(self.scores),
            "error": self.error,
        }


class Results(list[Classification]):
    """Classifications in input order (a list), with ``errors`` and ``to_pandas()``."""

    @property
    def errors(self) -> list[Classification]:
        return [result for result in self if result.error is not None]

    def to_pandas(self) -> pandas.DataFrame:
        return results_frame(self)


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as error:
        raise ZstcError(PANDAS_MISSING) from error
    return pandas


RESULT_COLUMNS = ("label", "score", "labels", "scores", "error")


def results_frame(results: Iterable[Classification | batch_results.Result]) -> pandas.DataFrame:
    """A DataFrame of classifications (``id, sequence, label, score, labels, scores, error``), one row per text."""
    pd = _pandas()
    rows = []
    for result in results:
        if isinstance(result, Classification):
            rows.append(result.to_dict())
        else:
            rows.append(
                {
                    "id": result.id,
                    "sequence": result.text,
                    "label": result.label,
                    "score": result.score,
                    "labels": list(result.labels),
                    "scores": list(result.scores),
                    "error": result.error,
                }
            )
    return pd.DataFrame(rows, columns=["id", "sequence", *RESULT_COLUMNS])


# --- transports: how one request reaches the model ---------------------------------------------------------------


class _Retry(Exception):
    """The request may succeed later (throttled, cold start, busy): back off and send it again."""


class _RequestFailed(Exception):
    """The model rejected the request as a whole: each of its records gets this message as its error."""


Invoke = Callable[[bytes, str, str], bytes]


def runtime_invoker(runtime: Any, endpoint_name: str) -> Invoke:
    """``invoke(body, content_type, accept)`` through a boto3 ``sagemaker-runtime`` client's InvokeEndpoint."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    def invoke(body: bytes, content_type: str, accept: str) -> bytes:
        try:
            response = runtime.invoke_endpoint(
                EndpointName=endpoint_name, ContentType=content_type, Accept=accept, Body=body
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            message = error.response.get("Error", {}).get("Message", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            original = error.response.get("OriginalStatusCode")
            if code in RETRYABLE_CODES or status in RETRYABLE_STATUS or original in RETRYABLE_STATUS:
                raise _Retry(f"{code or status}: {message}") from error
            if code == "ModelError":
                detail = error.response.get("OriginalMessage") or message
                raise _RequestFailed(f"the model answered HTTP {original or '?'}: {detail}") from error
            if code == "ValidationError" and "not found" in message.lower():
                raise ZstcError(
                    f"Endpoint '{endpoint_name}' not found ({message}). Check the name and region, or deploy it."
                ) from error
            raise
        except (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError) as error:
            raise _Retry(str(error)) from error
        return bytes(response["Body"].read())

    return invoke


def _in_process_invoker(handler: Any) -> Invoke:
    lock = threading.Lock()  # one model in this process: requests take turns

    def invoke(body: bytes, content_type: str, accept: str) -> bytes:
        from mms.service import PredictionException

        with lock:
            try:
                answer: bytes = handler.invoke(body, content_type, accept)
            except PredictionException as error:
                raise _RequestFailed(f"the model answered HTTP {error.error_code}: {error.message}") from error
        return answer

    return invoke


RUNTIME_TIMEOUT_SECONDS = 75  # the endpoint's own limit is 60 s per request; a little more for the network


def _runtime_client(session: Any, *, endpoint_url: str | None, concurrency: int) -> Any:
    from botocore import UNSIGNED
    from botocore.config import Config

    # Retries are ours (with the payload in hand and ordering kept): botocore makes exactly one attempt.
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": 1},
        "read_timeout": RUNTIME_TIMEOUT_SECONDS,
        "connect_timeout": 10,
        "max_pool_connections": max(10, concurrency * 2),
        "user_agent_extra": "zstc",
    }
    if endpoint_url is not None and session.get_credentials() is None:
        options["signature_version"] = UNSIGNED  # a local endpoint needs no AWS credentials
    if endpoint_url is None and not session.region_name:
        raise errors.AwsSetupError(
            "No AWS region configured. Pass region= (e.g. region='us-east-1') or set AWS_REGION."
        )
    return session.client(
        "sagemaker-runtime",
        endpoint_url=endpoint_url,
        region_name=session.region_name or "us-east-1",
        config=Config(**options),
    )


# --- the classifier ----------------------------------------------------------------------------------------------


@dataclass
class _Request:
    indices: list[int]
    body: bytes


class Classifier:
    """Zero-shot classification against one endpoint (deployed, local or in-process) and the stack's batch path.

    ``Classifier(endpoint_url=..., endpoint_name=...)`` talks to any endpoint speaking the SageMaker runtime API
    (``zstc serve`` on this machine, or a real endpoint: ``endpoint_url=None`` uses the region's). ``payload_limit``
    is the request size limit in bytes (default: the provisioned endpoints' 6 MB; serverless endpoints take 4 MB,
    which ``from_stack`` detects). ``concurrency`` requests run at a time; each is retried up to ``max_attempts``
    times with exponential backoff while the endpoint throttles or starts.
    """

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        endpoint_name: str | None = None,
        region: str | None = None,
        runtime: Any = None,
        payload_limit: int = PROVISIONED_PAYLOAD_LIMIT,
        records_per_request: int = DEFAULT_RECORDS_PER_REQUEST,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        single_record: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        _invoke: Invoke | None = None,
        _stack: StackOutputs | None = None,
        _aws: Any = None,
    ) -> None:
        if payload_limit <= 0 or records_per_request <= 0 or concurrency <= 0 or max_attempts <= 0:
            raise ValueError("payload_limit, records_per_request, concurrency and max_attempts must be positive.")
        self.endpoint_name = endpoint_name
        self.payload_limit = payload_limit
        self.records_per_request = 1 if single_record else records_per_request
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.single_record = single_record  # the toolkit's stock handler: one application/json record per request
        self.stack = _stack
        self._aws = _aws
        self._sleep = sleep
        self._closers: list[Callable[[], None]] = []
        if _invoke is not None:
            self._invoke: Invoke | None = _invoke
        elif runtime is not None or endpoint_name is not None:
            if not endpoint_name:
                raise InputError("endpoint_name is missing: pass Classifier(endpoint_url=..., endpoint_name=NAME).")
            if runtime is None:
                import boto3

                runtime = _runtime_client(
                    boto3.session.Session(region_name=region), endpoint_url=endpoint_url, concurrency=concurrency
                )
            self._invoke = runtime_invoker(runtime, endpoint_name)
        else:
            self._invoke = None  # a stack without an endpoint: submit() works, classify() says what to do

    # -- constructors ---------------------------------------------------------------------------------------------
    @classmethod
    def from_stack(cls, stack_name: str = DEFAULT_STACK_NAME, region: str | None = None, **options: Any) -> Classifier:
        """The deployed stack: its endpoint (from the ``EndpointName`` output) and its batch path.

        The payload limit and the request format follow the endpoint (serverless: 4 MB; a Hub-loaded model with the
        toolkit's stock handler: one record per request), read with DescribeEndpoint/-EndpointConfig/-Model.
        """
        from zstc.stack import client, find_stack, session

        aws = session(region)
        outputs = find_stack(aws, stack_name)
        if not outputs.endpoint_name:
            return cls(_stack=outputs, _aws=aws, **options)
        profile = _endpoint_profile(client(aws, "sagemaker"), outputs.endpoint_name)
        settings = {**profile, **options}
        concurrency = settings.get("concurrency", DEFAULT_CONCURRENCY)
        runtime = settings.pop("runtime", None) or _runtime_client(aws, endpoint_url=None, concurrency=concurrency)
        return cls(endpoint_name=outputs.endpoint_name, runtime=runtime, _stack=outputs, _aws=aws, **settings)

    @classmethod
    def local(cls, model_dir: str | Path = "tiny", **options: Any) -> Classifier:
        """The handler (``model/code/inference.py``) in this process, as the serving stack runs it: no server.

        ``model_dir`` is a Hugging Face model directory, or ``"tiny"`` (a tiny random model: meaningless scores).
        """
        from zstc.checkout import emulation

        with emulation("Classifier.local"):
            from zstc_local.inprocess import InProcessHandler, resolve_model
        handler = InProcessHandler(resolve_model(str(model_dir)))
        options.setdefault("concurrency", 1)
        classifier = cls(_invoke=_in_process_invoker(handler), **options)
        classifier._closers.append(handler.close)
        return classifier

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- real-time classification ---------------------------------------------------------------------------------
    def classify(
        self,
        text_or_texts: str | Iterable[str],
        labels: Sequence[str] | str,
        *,
        multi_label: bool = False,
        hypothesis_template: str | None = None,
        ids: Sequence[Any] | None = None,
        progress: bool = False,
    ) -> Any:
        """Classify one text (→ a :class:`Classification`) or many (→ :class:`Results`, in input order).

        ``labels``: a list, or one comma-separated string. ``ids`` (optional, one per text: strings or finite
        numbers) are echoed in the results; by default a result's id is its position. A text that cannot be
        classified (empty, not a string, too long for a request) comes back with ``error`` set.
        """
        if isinstance(text_or_texts, str):
            return self._classify([text_or_texts], labels, multi_label, hypothesis_template, None, False)[0]
        return self._classify(list(text_or_texts), labels, multi_label, hypothesis_template, ids, progress)

    def _classify(
        self,
        texts: list[Any],
        labels: Sequence[str] | str,
        multi_label: bool,
        template: str | None,
        ids: Sequence[Any] | None,
        progress: bool | Callable[[int], None],
    ) -> Results:
        invoke = self._require_endpoint()
        label_list = list(inputs.parse_labels(labels) if isinstance(labels, str) else labels)
        if not label_list or not all(isinstance(label, str) and label.strip() for label in label_list):
            raise InputError('Labels missing or empty: pass labels=["Health", "Career", "Finance"].')
        inputs.check_template(template)
        if not isinstance(multi_label, bool):
            raise InputError(f"multi_label={multi_label!r}: give True or False.")
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(texts):
                raise InputError(f"ids has {len(ids)} values for {len(texts)} texts: give one id per text.")
            for position, value in enumerate(ids):
                inputs.check_id(value, f"ids[{position}]")
        parameters: dict[str, Any] = {"candidate_labels": label_list, "multi_label": multi_label}
        if template is not None:
            parameters["hypothesis_template"] = template
        answers: list[Classification | None] = [None] * len(texts)

        def user_id(index: int) -> Any:
            return ids[index] if ids is not None else (index if len(texts) > 1 else None)

        def text_of(index: int) -> str | None:
            return texts[index] if isinstance(texts[index], str) else None

        lines: list[tuple[int, bytes]] = []
        for index, text in enumerate(texts):
            problem = _text_problem(text)
            if problem:
                answers[index] = Classification(id=user_id(index), sequence=text_of(index), error=problem)
                continue
            record: dict[str, Any] = {"inputs": text, "parameters": parameters}
            if not self.single_record:
                record = {"id": index, **record}
            line = json.dumps(record, ensure_ascii=False).encode("utf-8", errors="surrogatepass")
            if len(line) > self.payload_limit:
                answers[index] = Classification(
                    id=user_id(index),
                    sequence=text,
                    error=f"the record is {len(line):,} bytes, over the endpoint's payload limit of "
                    f"{self.payload_limit:,} bytes: shorten the text (the model reads only its first ~1,000 tokens)",
                )
                continue
            lines.append((index, line))
        requests = list(_pack(lines, self.payload_limit, self.records_per_request))
        reporter = _progress(progress, len(texts))
        reporter(sum(1 for answer in answers if answer is not None))

        def finish(request: _Request, outcome: list[dict[str, Any] | str | None] | str) -> None:
            for position, index in enumerate(request.indices):
                value = outcome if isinstance(outcome, str) else outcome[position]
                answers[index] = _classification(user_id(index), texts[index], value)
            reporter(len(request.indices))

        try:
            self._run(invoke, requests, finish)
        finally:
            reporter(-1)
        missing = [index for index, answer in enumerate(answers) if answer is None]
        assert not missing, f"records without an answer: {missing[:5]}"  # _run answers every request or raises
        return Results(answer for answer in answers if answer is not None)

    def _require_endpoint(self) -> Invoke:
        if self._invoke is None:
            name = self.stack.stack_name if self.stack else "?"
            raise ZstcError(
                f"Stack '{name}' has no real-time endpoint (endpoint_mode=none). Deploy one with "
                '`make deploy CDK_ARGS="-c endpoint_mode=serverless"`, use the batch path (`zstc submit` / '
                "Classifier.submit), or run the model here (--local MODEL / Classifier.local(MODEL))."
            )
        return self._invoke

    def _run(
        self,
        invoke: Invoke,
        requests: list[_Request],
        finish: Callable[[_Request, list[dict[str, Any] | str | None] | str], None],
    ) -> None:
        """Send every request (``concurrency`` at a time); each ends in ``finish`` or the first hard error raises."""
        if not requests:
            return
        content_type = JSON if self.single_record else JSON_LINES
        accept = JSON if self.single_record else JSON_LINES

        def send(request: _Request) -> None:
            outcome = self._send_with_retries(invoke, request, content_type, accept)
            finish(request, outcome)

        if self.concurrency == 1 or len(requests) == 1:
            for request in requests:
                send(request)
            return
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="zstc-classify")
        try:
            futures: list[Future[None]] = [executor.submit(send, request) for request in requests]
            wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _send_with_retries(
        self, invoke: Invoke, request: _Request, content_type: str, accept: str
    ) -> list[dict[str, Any] | str | None] | str:
        last = ""
        for attempt in range(self.max_attempts):
            try:
                with errors.aws_errors(None):
                    answer = invoke(request.body, content_type, accept)
            except _Retry as error:
                last = str(error)
                if attempt + 1 < self.max_attempts:
                    self._sleep(_backoff(attempt))
                continue
            except _RequestFailed as error:
                return str(error)
            return _answers(answer, request, single_record=self.single_record)
        return f"gave up after {self.max_attempts} attempts, the endpoint kept answering: {last}"

    # -- the batch path --------------------------------------------------------------------------------------------
    def submit(
        self,
        data: str | Path | pandas.DataFrame,
        *,
        text_column: str = "text",
        labels: Sequence[str] | str | None = None,
        id_column: str | None = None,
        wait: bool = True,
        progress: bool = True,
        label_column: str | None = None,
        multi_label: bool | None = None,
        hypothesis_template: str | None = None,
        encoding: str = "utf-8",
        output: str | Path | None = None,
        timeout: float = 7200,
        poll: float = 5.0,
        work_dir: str | Path | None = None,
        before_upload: BeforeUpload | None = None,
    ) -> Any:
        """Classify a CSV / JSON Lines file or a DataFrame through the stack's batch path (S3 → transform job).

        Returns a DataFrame: the input rows (a DataFrame: its own rows, index and dtypes) joined with ``label``,
        ``score``, ``labels``, ``scores`` and ``error``, in input order. Rows that could not be classified have
        ``error`` set. Like ``zstc submit``, the submission is recorded in ``FILE.zstc-state.json``; calling
        ``submit`` again with the same data resumes it (finishing an interrupted upload, or waiting again) instead
        of uploading twice. A DataFrame is first written to ``work_dir`` (default ``./zstc-submissions``) as a CSV
        named by its content hash, so the same DataFrame resumes too. ``wait=False`` returns the
        :class:`~zstc.submit.Submission` right after the upload. ``before_upload(prepared, stack)`` runs after
        validation and before anything is uploaded (a check that may stop the submission raises there).
        """
        from zstc import submit as batch

        if self.stack is None or self._aws is None:
            raise ZstcError("submit() needs a deployed stack: use Classifier.from_stack(STACK_NAME).")
        frame = None
        if isinstance(data, str | Path):
            path = Path(data)
        else:
            frame = data
            path = _frame_file(
                frame, text_column, id_column, label_column, Path(work_dir or "zstc-submissions"), encoding
            )
        label_tuple = tuple(inputs.parse_labels(labels) if isinstance(labels, str) else (labels or ()))
        options = inputs.Options(
            text_column=text_column,
            id_column=id_column,
            labels=label_tuple,
            label_column=label_column,
            multi_label=multi_label,
            template=hypothesis_template,
            encoding=encoding,
            format="csv" if frame is not None else None,
        )
        prepared = inputs.prepare(path, options)
        console = _stderr_console() if progress else None
        if console is not None:
            for warning in prepared.warnings:
                console.print(batch_results.plain(f"warning: {warning}"), style="yellow")
            if prepared.problem_count:
                console.print(
                    f"{prepared.problem_count} of {prepared.count} record(s) have problems; they are sent anyway and "
                    "come back with an error.",
                    style="yellow",
                )
        with errors.aws_errors(self.stack.region):
            submission = batch.start(
                self._aws,
                self.stack,
                prepared,
                resume=True,
                before_upload=before_upload,
                on_resume=(lambda message: console.print(message)) if console else None,
            )
        if console is not None:
            console.print(batch_results.plain(f"✓ {prepared.count} records at {submission.uri}"))
        if not wait:
            return submission
        collected: list[batch_results.Result] = []
        seen: list[str] = []

        def on_progress(update: batch.Progress) -> None:
            if console is not None and update.stage not in seen:
                seen.append(update.stage)
                job = f" ({update.job_name})" if update.job_name and update.stage.startswith("job") else ""
                console.print(batch_results.plain(f"✓ {update.stage}{job}"))

        with errors.aws_errors(self.stack.region):
            target, summary = batch.finish(
                submission,
                poll=poll,
                timeout=timeout,
                output=Path(output) if output else None,
                on_progress=on_progress,
                on_result=collected.append,
            )
        if console is not None:
            console.print(
                f"{summary.ok_count} classified, {summary.error_count} error(s), {summary.total} records → ",
                batch_results.plain(target),
            )
        return _joined_frame(collected, prepared, frame)


# --- helpers -----------------------------------------------------------------------------------------------------


def _text_problem(text: Any) -> str | None:
    if not isinstance(text, str):
        kind = "missing (NaN)" if isinstance(text, float) and math.isnan(text) else f"a {type(text).__name__}"
        return f"the text is {kind}, not a string: give the text to classify"
    if not text.strip():
        return "the text is empty: give the text to classify"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"the text has a lone surrogate \\u{ord(text[error.start]):04x} (not a Unicode character): remove it"
    return None


def _pack(lines: list[tuple[int, bytes]], limit: int, per_request: int) -> Iterable[_Request]:
    """Consecutive records into JSON Lines bodies of at most ``limit`` bytes and ``per_request`` records."""
    indices: list[int] = []
    parts: list[bytes] = []
    size = 0
    for index, line in lines:
        extra = len(line) + (1 if parts else 0)
        if parts and (size + extra > limit or len(parts) >= per_request):
            yield _Request(indices=indices, body=b"\n".join(parts))
            indices, parts, size = [], [], 0
            extra = len(line)
        indices.append(index)
        parts.append(line)
        size += extra
    if parts:
        yield _Request(indices=indices, body=b"\n".join(parts))


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: ~0.5, 1, 2, 4 … s, at most 20 s (jitter spreads concurrent retries)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    return ceiling * (0.5 + random.random() / 2)


def _answers(answer: bytes, request: _Request, *, single_record: bool) -> list[dict[str, Any] | str | None] | str:
    """The answer lines matched to the request's records: by position, checked by id; by id when they disagree."""
    text = answer.decode("utf-8", errors="replace")
    if single_record:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return f"unreadable answer from the model: {text[:200]}"
        value = value[0] if isinstance(value, list) and value else value
        return [value if isinstance(value, dict) else text[:200]]
    values: list[dict[str, Any] | str] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            values.append(line)
            continue
        values.append(value if isinstance(value, dict) else line)
    expected = request.indices
    if len(values) == len(expected) and all(
        not isinstance(value, dict) or value.get("id") in (None, index)
        for value, index in zip(values, expected, strict=True)
    ):
        return list(values)
    by_id: dict[Any, dict[str, Any] | str] = {}
    duplicates = set()
    for value in values:
        if isinstance(value, dict) and isinstance(value.get("id"), int):
            if value["id"] in by_id:
                duplicates.add(value["id"])
            by_id[value["id"]] = value
    return [None if index in duplicates else by_id.get(index) for index in expected]


def _classification(record_id: Any, text: Any, value: dict[str, Any] | str | None) -> Classification:
    sequence = text if isinstance(text, str) else None
    if value is None:
        return Classification(id=record_id, sequence=sequence, error="no answer came back for this record")
    if isinstance(value, str):
        if value.startswith(("the model answered", "gave up after", "unreadable answer")):
            return Classification(id=record_id, sequence=sequence, error=value)
        return Classification(id=record_id, sequence=sequence, error=f"unreadable answer line: {value[:200]}")
    if value.get("error") is not None:
        return Classification(id=record_id, sequence=sequence, error=str(value["error"]))
    labels, scores = value.get("labels"), value.get("scores")
    if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
        return Classification(
            id=record_id, sequence=sequence, error=f"answer has no labels/scores: {json.dumps(value)[:200]}"
        )
    return Classification(
        id=record_id,
        sequence=value.get("sequence", sequence),
        labels=[str(label) for label in labels],
        scores=[float(score) for score in scores],
    )


def _progress(progress: bool | Callable[[int], None], total: int) -> Callable[[int], None]:
    """A callback taking the number of records just finished (-1: the end)."""
    if callable(progress):
        callback = progress
        return lambda done: callback(done) if done >= 0 else None
    if not progress:
        return lambda done: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_stderr_console()
    )
    task = bar.add_task("classify", total=total)
    bar.start()
    lock = threading.Lock()

    def report(done: int) -> None:
        with lock:
            if done < 0:
                bar.stop()
            else:
                bar.advance(task, done)

    return report


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _endpoint_profile(sagemaker: Any, endpoint_name: str) -> dict[str, Any]:
    """Payload limit and request format of a deployed endpoint; the safe defaults when it cannot be described."""
    from botocore.exceptions import BotoCoreError, ClientError

    profile: dict[str, Any] = {"payload_limit": SERVERLESS_PAYLOAD_LIMIT}
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        variant = (config.get("ProductionVariants") or [{}])[0]
        mode = "serverless" if variant.get("ServerlessConfig") else "provisioned"
        profile["payload_limit"] = PAYLOAD_LIMITS[mode]
        model = sagemaker.describe_model(ModelName=variant["ModelName"]) if variant.get("ModelName") else {}
        containers = [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]
        environment = {
            key: value for container in containers for key, value in container.get("Environment", {}).items()
        }
        if environment.get("HF_MODEL_ID"):  # model_source=hub: the toolkit's stock handler, one record per request
            profile["single_record"] = True
    except (ClientError, BotoCoreError, KeyError, NotImplementedError):
        pass  # no permission or not describable: 4 MB requests work on every endpoint kind
    return profile


def _frame_file(
    frame: Any, text_column: str, id_column: str | None, label_column: str | None, work_dir: Path, encoding: str
) -> Path:
    """The DataFrame's needed columns as a CSV named by its content hash (so the same frame resumes)."""
    columns = [text_column, *(name for name in (id_column, label_column) if name)]
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise InputError(
            f"The DataFrame has no column {', '.join(repr(m) for m in missing)}. Its columns: "
            f"{', '.join(map(str, frame.columns))}. Pass text_column= / id_column= / label_column=."
        )
    clashes = [name for name in RESULT_COLUMNS if name in frame.columns]
    if clashes:
        raise InputError(
            f"The DataFrame already has column(s) {', '.join(clashes)}, which the results add: rename them first."
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = work_dir / f".frame-{threading.get_ident()}-{time.monotonic_ns()}.csv.tmp"
    frame[columns].to_csv(tmp, index=False, encoding=encoding)
    digest = hashlib.sha256()
    with tmp.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    target = work_dir / f"dataframe-{digest.hexdigest()[:16]}.csv"
    tmp.replace(target)
    return target


def _joined_frame(
    collected: list[batch_results.Result], prepared: inputs.PreparedInput, frame: Any
) -> pandas.DataFrame:
    pd = _pandas()
    extra = {
        "label": [result.label for result in collected],
        "score": [result.score for result in collected],
        "labels": [list(result.labels) for result in collected],
        "scores": [list(result.scores) for result in collected],
        "error": [result.error for result in collected],
    }
    if frame is not None:
        if len(collected) != len(frame):
            raise ZstcError(f"{len(collected)} results for {len(frame)} rows: the submission does not match the frame.")
        joined = frame.copy()
        for name, values in extra.items():
            joined[name] = values
        return joined
    if prepared.format == "csv":
        base = pd.DataFrame([result.row or {} for result in collected], columns=prepared.columns)
    else:
        base = pd.DataFrame(
            {
                "line": [result.line for result in collected],
                "id": [result.id for result in collected],
                "text": [result.text for result in collected],
            }
        )
    for name, values in extra.items():
        base[name] = values
    return base
