"""Shared fixtures: the tiny model's handler in-process, the local pipeline on moto server, and a CLI runner."""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "new_years_resolutions_2015.csv"
STACK = "ZeroShotClassification"


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        """stdout + stderr with line wrapping undone, for substring checks."""
        return " ".join((self.out + "\n" + self.err).split())


@pytest.fixture
def zstc(capsys, monkeypatch):
    """Run ``zstc ARGS`` in-process through ``main()`` (exit codes and one-line errors included)."""
    from zstc.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["zstc", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_handler():
    from zstc_local.inprocess import InProcessHandler, resolve_model

    with InProcessHandler(resolve_model("tiny")) as handler:
        yield handler


@pytest.fixture(scope="module")
def pipeline(tiny_handler, tmp_path_factory):
    """The batch path on moto server with the real functions; the handler runs in-process (no model server)."""
    from zstc_local.pipeline import LocalPipeline

    def invoke(body: bytes, content_type: str, accept: str, timeout: float) -> bytes:
        return tiny_handler.invoke(body, content_type, accept)

    with LocalPipeline(invoke, workdir=tmp_path_factory.mktemp("pipeline")) as running, running.aws_environment():
        running.publish_stack(STACK)
        yield running
        # moto's state is per process, not per server: the next module's pipeline starts from nothing
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{running.endpoint_url}/moto-api/reset", method="POST"))


def tweets(count: int, *, with_newlines: int = 3, with_mojibake: int = 3) -> list[dict[str, str]]:
    """Real rows of the 2015 tweets: some with line breaks inside fields, some with replacement characters."""
    rows = list(csv.DictReader(io.StringIO(SHARED_CSV.read_text(encoding="utf-8"), newline="")))
    odd = [r for r in rows if "\n" in r["text"]][:with_newlines] + [r for r in rows if "\ufffd" in r["text"]][
        :with_mojibake
    ]
    plain = [r for r in rows if r not in odd][: count - len(odd)]
    return odd + plain


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
