"""``zstc demo``: the whole batch path on this machine, no AWS account, no internet.

S3 → SQS → the real trigger function → a transform job (created in moto) → the local runner sends mini-batches to
the real serving stack (toolkit + Multi Model Server, our handler) → ``output/…jsonl.out`` → the real job-outcome
function writes the status record → the results are joined back to the input and shown as ``zstc submit`` shows them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import boto3
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from zstc.errors import ZstcError
from zstc.inputs import Options, parse_labels, prepare

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO / "samples" / "resolutions.jsonl"
DEMO_STACK = "ZeroShotClassificationLocal"


def run_demo(
    *,
    input_file: Path | None,
    model: str | None,
    labels: str | None,
    output: Path | None,
    out: Console,
    err: Console,
    timeout: float = 300,
) -> None:
    from zstc.progress import follow, report_problems
    from zstc.stack import find_stack
    from zstc.submit import new_state, upload
    from zstc_local.inprocess import resolve_model
    from zstc_local.pipeline import REGION, LocalPipeline
    from zstc_local.runner import http_invoker
    from zstc_local.serving import LocalServer

    started = time.monotonic()
    path = input_file or DEFAULT_INPUT
    options = Options(labels=parse_labels(labels))
    prepared = prepare(path, options)  # a bad input file fails here, before anything starts
    report_problems(prepared)
    if model is None:
        err.print(
            Panel(
                "No --model given: using a TINY RANDOM model built on this machine.\n"
                "The pipeline is real; the SCORES ARE MEANINGLESS (random weights).\n"
                "For real predictions: zstc demo --model /path/to/bart-large-mnli (a local Hugging Face model).",
                title="demo model",
                border_style="bold yellow",
            )
        )
        with err.status("building the tiny model (first run only) …"):
            model_dir = resolve_model("tiny")
    else:
        model_dir = resolve_model(model)
    workdir = Path(tempfile.mkdtemp(prefix="zstc-demo-"))
    with err.status("starting the serving stack (Multi Model Server + our handler) …"):
        server = LocalServer(model_dir).start()
    try:
        err.print(f"[green]✓[/] model server at {server.url} (toolkit + Multi Model Server, model/code/inference.py)")
        with LocalPipeline(http_invoker(server.url), workdir=workdir) as pipeline:
            pipeline.publish_stack(DEMO_STACK)
            with pipeline.aws_environment():  # zstc's own AWS clients below talk to the pipeline
                aws = boto3.session.Session(region_name=REGION)
                stack = find_stack(aws, DEMO_STACK)  # the same discovery as against AWS
                err.print(
                    f"[green]✓[/] moto server at {pipeline.endpoint_url}: bucket, queue + DLQ, claims table, topic, "
                    f"model; S3 → SQS notification on {stack.input_prefix}* (every key: other suffixes get a status)"
                )
                state = new_state(stack, prepared, options)
                state_file = workdir / "submit-state.json"
                upload(aws.client("s3"), state, prepared, state_file)
                err.print(f"[green]✓[/] uploaded {len(prepared.records)} records to s3://{state.bucket}/{state.key}")

                def check() -> None:
                    if pipeline.stats.errors:
                        last = pipeline.stats.errors[-1].strip().splitlines()[-1]
                        raise ZstcError(f"The local pipeline failed: {last} (details in {pipeline.log_path})")

                follow(
                    aws=aws,
                    stack=stack,
                    state=state,
                    state_file=state_file,
                    prepared=prepared,
                    poll=0.3,
                    timeout=timeout,
                    output=output,
                    on_poll=check,
                )
                _show_path(out, pipeline, stack, state.key, aws.client("s3"))
    finally:
        server.stop()
    out.print(f"[bold]Demo done in {time.monotonic() - started:.0f} s.[/] Function logs: {workdir / 'functions.log'}")
    if model is None:
        err.print("[bold yellow]Reminder: tiny random model — the labels above are not predictions of any value.")


def _show_path(out: Console, pipeline: object, stack: object, key: str, s3: object) -> None:
    from zstc.stack import StackOutputs
    from zstc_local.pipeline import LocalPipeline

    assert isinstance(pipeline, LocalPipeline) and isinstance(stack, StackOutputs)
    stats = pipeline.stats
    # The job and its outcome are recorded just after the output lands: wait for them before counting.
    deadline = time.monotonic() + 10
    while stats.outcome_invocations < len(stats.jobs) or not stats.jobs:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    table = Table(title="What ran", title_justify="left")
    table.add_column("step")
    table.add_column("detail")
    table.add_row("S3 → SQS", f"{stats.messages} notification message(s) (incl. the s3:TestEvent)")
    table.add_row("trigger function", f"{stats.trigger_invocations} invocation(s)")
    for job in stats.jobs:
        table.add_row(
            "transform job",
            f"{job.job_name}: {job.status}, {len(job.objects)} file(s), {job.records} record(s), "
            f"{sum(o.requests for o in job.objects)} mini-batch request(s)",
        )
    table.add_row("job-outcome function", f"{stats.outcome_invocations} invocation(s)")
    success_key, _ = stack.status_keys(key)
    try:
        record = json.loads(s3.get_object(Bucket=stack.bucket, Key=success_key)["Body"].read())  # type: ignore[attr-defined]
        summary = {key: record.get(key) for key in ("state", "job_name", "instance_type", "records", "record_errors")}
        table.add_row("status record", f"s3://{stack.bucket}/{success_key}\n{json.dumps(summary)}")
    except Exception:  # noqa: BLE001 - shown as missing; the results above are what matters
        table.add_row("status record", "not written (see the function log)")
    out.print(table)
