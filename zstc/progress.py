"""What the command line shows while a submitted file is processed: the input's problems, live progress, the summary.

Used by ``zstc submit`` / ``zstc wait`` and by the offline demo (``zstc_local.demo``), which shows the same lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from zstc import errors, inputs, results
from zstc.stack import StackOutputs

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def report_problems(prepared: inputs.PreparedInput) -> None:
    """Warnings about the file and its problem lines (user text escaped: never read as markup)."""
    if prepared.blank_lines:
        err.print(f"[dim]{prepared.blank_lines} blank line(s) skipped.")
    for warning in prepared.warnings:
        err.print(results.plain(f"warning: {warning}"), style="yellow")
    if prepared.problem_count:
        err.print(
            f"[yellow]{prepared.problem_count} of {prepared.count} record(s) have problems; they are sent anyway and "
            "come back as error rows:"
        )
        for record in prepared.problems[:5]:
            err.print(results.plain(f"  line {record.line} (id {record.id}): {record.problem}"), style="yellow")
        if prepared.problem_count > 5:
            err.print(f"[yellow]  … and {prepared.problem_count - 5} more")


def follow(
    *,
    aws: Any,
    stack: StackOutputs,
    state: Any,
    state_file: Path,
    prepared: inputs.PreparedInput,
    poll: float,
    timeout: float,
    output: Path | None,
    rows: int = 10,
    on_poll: Any = None,
) -> results.Summary:
    """Wait for the output of an uploaded file with a live display, then join, write and summarise the results."""
    from zstc.submit import Submission, finish

    submission = Submission(aws=aws, stack=stack, prepared=prepared, state=state, state_file=state_file)
    seen: list[str] = []
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as progress:
        task = progress.add_task("queued", total=None)

        def on_progress(update: Any) -> None:
            if on_poll is not None:
                on_poll()
            if update.stage not in seen:
                seen.append(update.stage)
                label = {"queued": "queued: waiting for the batch trigger", "outputs ready": "outputs ready"}.get(
                    update.stage, update.stage
                )
                job = f" ({update.job_name})" if update.job_name and update.stage.startswith("job") else ""
                progress.console.print("[green]✓[/] ", results.plain(f"{label}{job}"), sep="")
            detail = f" — {update.detail}" if update.detail else ""
            progress.update(task, description=escape(results.terminal_safe(f"{update.stage}{detail}")))

        with errors.aws_errors(stack.region):
            target, summary = finish(
                submission, poll=poll, timeout=timeout, output=output, on_progress=on_progress, rows=rows
            )
    results.show_summary(out, summary, target=target, rows=rows)
    return summary
