"""``zstc``: use the zero-shot classification stack from the command line, or try it all offline.

Every command has ``--help``. Failures print one line saying what is wrong and what to do, and exit non-zero:
2 for bad input, 3 for AWS setup (credentials, region, stack), 4 for a failed job, 5 for a wait that timed out,
130 for Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table

from zstc import errors, inputs, results
from zstc.doctor import doctor
from zstc.errors import InputError, ZstcError
from zstc.estimate import confirm_before_upload, estimate_command
from zstc.models import app as models_app
from zstc.progress import err, follow, out, report_problems
from zstc.stack import DEFAULT_STACK_NAME, StackOutputs

app = typer.Typer(
    name="zstc",
    help="Zero-shot text classification on Amazon SageMaker: classify, submit batches, serve locally, run the demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(models_app)

StackOption = Annotated[
    str, typer.Option("--stack", help="CloudFormation stack name of the deployment.", envvar="ZSTC_STACK")
]
RegionOption = Annotated[
    str | None, typer.Option("--region", help="AWS region of the stack (default: your AWS configuration).")
]
LabelsOption = Annotated[
    str | None, typer.Option("--labels", "-l", help='Candidate labels, comma-separated: "Health,Career,Finance".')
]
TemplateOption = Annotated[
    str | None,
    typer.Option("--template", help='Hypothesis template with {} for the label, e.g. "This text is about {}."'),
]


def _stack(stack_name: str, region: str | None) -> tuple[Any, StackOutputs]:
    from zstc.stack import find_stack, session

    aws = session(region)
    return aws, find_stack(aws, stack_name)


def _show_classification(result: Any, as_json: bool) -> None:
    if result.error:
        raise ZstcError(f"The model rejected the request: {result.error}")
    if as_json:
        answer = {key: value for key, value in result.to_dict().items() if key in ("sequence", "labels", "scores")}
        out.print_json(data=answer)
        return
    table = Table(title=results.plain(result.sequence or ""), title_justify="left")
    table.add_column("label")
    table.add_column("score", justify="right")
    table.add_column("")
    for label, score in zip(result.labels, result.scores, strict=False):
        table.add_row(results.plain(label), f"{score:.4f}", "█" * round(float(score) * 30))
    out.print(table)


def _classifier(local: str | None, stack: str, region: str | None) -> Any:
    """The API's classifier for a command: in-process on a model directory, or the stack's endpoint."""
    from zstc.client import Classifier

    if local:
        if local == "tiny":
            err.print("[bold yellow]Tiny random model: the scores are meaningless (it only shows the plumbing).")
        return Classifier.local(local)
    return Classifier.from_stack(stack, region)


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="The text to classify.")],
    labels: LabelsOption = None,
    multi_label: Annotated[
        bool, typer.Option("--multi-label", help="Score each label on its own (scores do not sum to 1).")
    ] = False,
    template: TemplateOption = None,
    local: Annotated[
        str | None,
        typer.Option(
            "--local",
            metavar="MODEL",
            help="Run the handler in-process on a model directory ('tiny': a "
            "tiny random model) instead of calling the deployed endpoint.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
    stack: StackOption = DEFAULT_STACK_NAME,
    region: RegionOption = None,
) -> None:
    """Classify one text against candidate labels (the deployed endpoint, or --local MODEL)."""
    label_list = inputs.parse_labels(labels)
    if not label_list:
        raise InputError('Labels missing: pass --labels "Health,Career,Finance".')
    inputs.check_template(template)
    if not text.strip():
        raise InputError('The text is empty: pass the text to classify, e.g. zstc classify "Run a marathon" ...')
    with _classifier(local, stack, region) as classifier:
        result = classifier.classify(text, label_list, multi_label=multi_label, hypothesis_template=template)
    _show_classification(result, as_json)


def _options(
    text_column: str,
    id_column: str | None,
    labels: str | None,
    label_column: str | None,
    multi_label: bool | None,
    template: str | None,
    encoding: str,
    file_format: str | None,
) -> inputs.Options:
    if file_format not in (None, "jsonl", "csv"):
        raise InputError(f"--format {file_format!r} is not supported: use jsonl or csv.")
    return inputs.Options(
        text_column=text_column,
        id_column=id_column,
        labels=inputs.parse_labels(labels),
        label_column=label_column,
        multi_label=multi_label,
        template=template,
        encoding=encoding,
        format=file_format,  # type: ignore[arg-type]
    )


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="A .jsonl file (one request per line) or a .csv file.")],
    text_column: Annotated[str, typer.Option(help="CSV column holding the text.")] = "text",
    id_column: Annotated[str | None, typer.Option(help="CSV column holding a unique id (default: row number).")] = None,
    labels: LabelsOption = None,
    label_column: Annotated[
        str | None, typer.Option(help="CSV column holding each row's candidate labels, comma-separated.")
    ] = None,
    multi_label: Annotated[
        bool | None, typer.Option("--multi-label/--single-label", help="Default for lines that do not say.")
    ] = None,
    template: TemplateOption = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    file_format: Annotated[str | None, typer.Option("--format", help="jsonl or csv (default: from the name).")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Upload and return; `zstc wait FILE` resumes.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds.")] = 7200,
    poll: Annotated[float, typer.Option(help="Seconds between checks.", hidden=True)] = 5.0,
    output: Annotated[Path | None, typer.Option(help="Results file (default: FILE.results.csv/.jsonl).")] = None,
    force: Annotated[bool, typer.Option(help="Upload again even if an earlier upload of FILE is pending.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before a costly upload (see zstc estimate).")
    ] = False,
    stack: StackOption = DEFAULT_STACK_NAME,
    region: RegionOption = None,
) -> None:
    """Upload a file for batch classification, wait for it, and write FILE.results.csv/.jsonl."""
    from zstc.submit import start

    options = _options(text_column, id_column, labels, label_column, multi_label, template, encoding, file_format)
    prepared = inputs.prepare(file, options)
    report_problems(prepared)
    aws, outputs = _stack(stack, region)
    # Checks that may stop the submission before anything is uploaded (e.g. a cost estimate) go in `before_upload`.
    before_upload = confirm_before_upload(yes=yes, console=err)
    with (
        errors.aws_errors(outputs.region),
        Progress(TextColumn("uploading"), BarColumn(), DownloadColumn(), console=err, transient=True) as progress,
    ):
        task = progress.add_task("upload", total=prepared.size)
        submission = start(
            aws,
            outputs,
            prepared,
            resume=False,
            force=force,
            before_upload=before_upload,
            on_upload_progress=lambda sent: progress.advance(task, sent),
        )
    err.print("[green]✓[/] ", results.plain(f"uploaded {prepared.count} records to {submission.uri}"), sep="")
    if no_wait:
        err.print("Not waiting. Follow it with: ", results.plain(f"zstc wait {file}"), sep="")
        return
    follow(
        aws=aws,
        stack=outputs,
        state=submission.state,
        state_file=submission.state_file,
        prepared=prepared,
        poll=poll,
        timeout=timeout,
        output=output,
    )


@app.command()
def wait(
    file: Annotated[Path, typer.Argument(help="The file given to `zstc submit`.")],
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds.")] = 7200,
    poll: Annotated[float, typer.Option(help="Seconds between checks.", hidden=True)] = 5.0,
    output: Annotated[Path | None, typer.Option(help="Results file (default: FILE.results.csv/.jsonl).")] = None,
) -> None:
    """Resume waiting for a submitted file (after --no-wait, Ctrl-C or a timeout) and write its results."""
    from zstc.stack import find_stack, session
    from zstc.submit import SubmitState, resume_upload, state_path

    state_file = state_path(file)
    if not state_file.exists():
        raise InputError(f"Nothing was submitted for {file} (no {state_file.name}). Run `zstc submit {file}` first.")
    state = SubmitState.load(state_file)
    prepared = inputs.prepare(file, inputs.Options.from_json(state.options))
    if prepared.sha256 != state.sha256:
        raise InputError(
            f"{file} changed since it was submitted, so its results cannot be joined to it. "
            f"Restore it, or submit it again with `zstc submit {file} --force`."
        )
    aws = session(state.region)
    outputs = find_stack(aws, state.stack_name)
    with errors.aws_errors(state.region):
        resume_upload(aws, state, prepared, state_file, on_resume=err.print)
    err.print(results.plain(f"Following s3://{state.bucket}/{state.key}"))
    follow(
        aws=aws,
        stack=outputs,
        state=state,
        state_file=state_file,
        prepared=prepared,
        poll=poll,
        timeout=timeout,
        output=output,
    )


def _duration(start: Any, end: Any) -> str:
    if not start:
        return ""
    seconds = int(((end or time_now()) - start).total_seconds())
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def time_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@app.command()
def jobs(
    limit: Annotated[int, typer.Option(help="Show at most this many jobs, newest first.")] = 20,
    records: Annotated[
        bool, typer.Option("--records/--no-records", help="Count output records (reads the outputs).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    stack: StackOption = DEFAULT_STACK_NAME,
    region: RegionOption = None,
) -> None:
    """List this stack's transform jobs: state, inputs, records, duration, failure reason."""
    from zstc.jobs import list_jobs
    from zstc.stack import client

    aws, outputs = _stack(stack, region)
    with errors.aws_errors(outputs.region):
        rows = list_jobs(client(aws, "sagemaker"), client(aws, "s3"), outputs, limit=limit, count_records=records)
    if as_json:
        out.print_json(data=[row.to_json() for row in rows])
        return
    if not rows:
        out.print(f"No transform jobs yet for stack {stack} (prefix {outputs.transform_job_prefix}).")
        return
    table = Table(title=f"Transform jobs of {stack}", title_justify="left")
    for column in ("job", "state", "instance type", "inputs", "records", "created", "duration", "failure reason"):
        table.add_column(column, justify="right" if column in ("inputs", "records") else "left")
    for row in rows:
        table.add_row(
            row.name,
            row.state,
            row.instance_type or "",
            row.inputs_text,
            "" if row.records is None else str(row.records),
            row.created.strftime("%Y-%m-%d %H:%M:%S") if row.created else "",
            _duration(row.started, row.ended),
            row.failure_reason or "",
        )
    out.print(table)


def _stop_on_signals() -> None:
    """SIGTERM / SIGHUP (a process manager, a closed terminal, a notebook kernel) end `zstc serve` as Ctrl-C does:
    through its ``finally``, which stops Multi Model Server and every worker."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), stop)


@app.command()
def serve(
    model: Annotated[
        str, typer.Option(help="Model directory (Hugging Face format), or 'tiny' for a tiny random model.")
    ] = "tiny",
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (≤ 32767; default: a free one).")] = None,
    endpoint_name: Annotated[
        str | None,
        typer.Option(help="Answer /endpoints/NAME/invocations only for this name (default: any name)."),
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for Multi Model Server's logs (default: a new zstc-serve-logs-* temporary folder)."),
    ] = None,
) -> None:
    """Serve the handler with the real serving stack (toolkit + Multi Model Server): /ping, /invocations, and the
    SageMaker runtime API (POST /endpoints/NAME/invocations) for boto3 and the SageMaker SDK."""
    import tempfile

    from zstc.checkout import emulation

    with emulation("zstc serve"):
        from zstc_local.inprocess import resolve_model
        from zstc_local.serving import LocalServer

    _stop_on_signals()
    model_dir = resolve_model(model)
    if model == "tiny":
        err.print("[bold yellow]Tiny random model: the scores are meaningless (it only shows the plumbing).")
    logs = log_dir or Path(tempfile.mkdtemp(prefix="zstc-serve-logs-"))
    err.print("Starting Multi Model Server (Java) …")
    try:
        server = LocalServer(model_dir, port=port, runtime_api=True, endpoint_name=endpoint_name, log_dir=logs).start()
    except (ValueError, FileNotFoundError) as error:
        raise InputError(str(error)) from error
    except (RuntimeError, TimeoutError) as error:
        raise ZstcError(f"The model server did not start: {str(error).splitlines()[0]}") from error
    try:
        name = endpoint_name or "local"
        out.print(results.plain(f"Serving {model_dir} at {server.url} (Ctrl-C to stop)"))
        out.print(results.plain(f"  Multi Model Server logs: {logs}"))
        out.print(results.plain(f"  curl {server.url}/ping"))
        out.print(
            results.plain(
                f"  curl -H 'Content-Type: application/json' {server.url}/invocations "
                '-d \'{"inputs": "Run a marathon", "parameters": {"candidate_labels": ["Health", "Career"]}}\''
            )
        )
        out.print(
            results.plain(
                f'  boto3.client("sagemaker-runtime", endpoint_url="{server.url}")'
                f'.invoke_endpoint(EndpointName="{name}", ContentType="application/json", Body=...)'
            )
        )
        out.print(
            results.plain(f'  zstc.Classifier(endpoint_url="{server.url}", endpoint_name="{name}").classify(...)')
        )
        sys.stdout.flush()
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)
        raise ZstcError(f"The model server stopped unexpectedly; see {server.log_path} and {logs}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # Ctrl-C is how serving ends: no "interrupted" message
    finally:
        server.stop()
        err.print(results.plain(f"Stopped. Multi Model Server logs kept in {logs}"))


@app.command(name="eval")
def evaluate(
    file: Annotated[Path, typer.Argument(help="A labelled CSV file.")],
    text_column: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    label_column: Annotated[str, typer.Option(help="Column holding the true label.")] = "Resolution_Category",
    labels: Annotated[
        str | None, typer.Option("--labels", "-l", help="Candidate labels (default: the label column's values).")
    ] = None,
    template: TemplateOption = None,
    local: Annotated[
        str | None,
        typer.Option(
            "--local",
            metavar="MODEL",
            help="Classify in-process with a model directory ('tiny' for a "
            "tiny random model) instead of the deployed endpoint.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate a random sample of this many rows.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random sample.")] = 0,
    plot: Annotated[Path | None, typer.Option(help="Also draw the confusion matrix into this .png file.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    stack: StackOption = DEFAULT_STACK_NAME,
    region: RegionOption = None,
) -> None:
    """Classify a labelled CSV and print accuracy, macro-F1 and the confusion table."""
    from zstc import evaluate as evaluation

    dataset = evaluation.load_labelled(
        file, text_column=text_column, label_column=label_column, encoding=encoding, limit=limit, seed=seed
    )
    candidate = inputs.parse_labels(labels) or dataset.classes
    if len(candidate) < 2:
        raise InputError(f"Need at least two labels to evaluate; got {list(candidate)}. Pass --labels.")
    inputs.check_template(template)
    with _classifier(local, stack, region) as classifier:
        predictions = evaluation.classify_all(classifier, dataset.texts, candidate, template, progress_to=err)
    report = evaluation.metrics(dataset.truth, predictions, labels=list(candidate))
    if as_json:
        out.print_json(data=report.to_json())
    else:
        evaluation.show(out, report)
    if plot:
        evaluation.plot_confusion(report, plot)
        err.print(f"Confusion matrix drawn to {plot}")


@app.command(name="sample-data")
def sample_data(
    output: Annotated[Path, typer.Option(help="Where to save the CSV.")] = Path("new_years_resolutions_2015.csv"),
    url: Annotated[str | None, typer.Option(help="Download from this URL instead of the public mirror.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Download the public 2015 New Year's resolutions tweets (CrowdFlower "Data for Everyone", 5,011 rows)."""
    from zstc import sample_data as samples

    if output.exists() and not force:
        raise InputError(f"{output} already exists: pass --force to download it again, or --output PATH.")
    with Progress(TextColumn("downloading"), BarColumn(), DownloadColumn(), console=err, transient=True) as progress:
        task = progress.add_task("download", total=None)
        summary = samples.download(
            url or samples.DEFAULT_URL,
            output,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out.print(f"Saved {summary.rows} rows to {output} (sha256 {summary.sha256[:12]}…)")
    out.print(f"Columns: {', '.join(summary.columns)}")
    if summary.categories:
        out.print(f"Categories ({len(summary.categories)}): {', '.join(summary.categories)}")
    out.print(
        f'Try: zstc eval {output} --local tiny --limit 50   ·   zstc submit {output} --labels "'
        + ",".join(summary.categories[:4] or ["Health", "Career"])
        + '"'
    )


@app.command()
def demo(
    input_file: Annotated[
        Path | None, typer.Option("--input", help="JSON Lines file to classify (default: samples/resolutions.jsonl).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model directory (Hugging Face format). Default: a tiny random model built locally."),
    ] = None,
    labels: LabelsOption = None,
    output: Annotated[Path | None, typer.Option(help="Results file (default: FILE.results.jsonl).")] = None,
) -> None:
    """Run the whole batch path offline: moto stands in for AWS, the real functions and handler do the work."""
    from zstc.checkout import emulation

    with emulation("zstc demo"):
        from zstc_local.demo import run_demo

    run_demo(input_file=input_file, model=model, labels=labels, output=output, out=out, err=err)


app.command()(doctor)
app.command(name="estimate")(estimate_command)

INTERRUPTED = "Interrupted. Anything already uploaded is kept: `zstc wait FILE` resumes a submitted file."


def main() -> None:
    """Console entry point: run the app, turning known failures into one line and an exit code."""
    try:
        code = app(standalone_mode=False)
    except ZstcError as error:
        err.print("[bold red]error:[/] ", results.plain(error), sep="", highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(130)
    except Exception as error:
        message = errors.describe_aws_error(error)
        if message is None:
            import click

            if isinstance(error, click.exceptions.ClickException):
                error.show()
                sys.exit(error.exit_code)
            if isinstance(error, click.exceptions.Abort):  # click's wrapping of Ctrl-C
                err.print(INTERRUPTED)
                sys.exit(130)
            raise
        err.print("[bold red]error:[/] ", results.plain(message), sep="", highlight=False)
        sys.exit(errors.AwsSetupError.exit_code)
    if code == 130:  # typer turns Ctrl-C into exit code 130
        err.print(INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
