"""``zstc sample-data``: the public 2015 New Year's resolutions tweets (CrowdFlower "Data for Everyone").

5,011 tweets with a ``text`` and a ``Resolution_Category`` column (10 categories): the data the SageMaker JumpStart
zero-shot example uses. The file is downloaded to the user's machine, never shipped in the repository.
"""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zstc.errors import ZstcError

# CrowdFlower's (later Figure Eight's) public "Data for Everyone" library, served from its CDN.
DEFAULT_URL = "https://d1p17r2m4rzlbo.cloudfront.net/wp-content/uploads/2016/03/New-years-resolutions-DFE.csv"
TEXT_COLUMN = "text"
LABEL_COLUMN = "Resolution_Category"


@dataclass(frozen=True)
class Summary:
    rows: int
    columns: list[str]
    categories: list[str]
    sha256: str


def summarize(data: bytes) -> Summary:
    """Check that the bytes are the dataset (a CSV with text and category columns) and describe them."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")  # older copies of the file are Windows-1252
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [column for column in reader.fieldnames or [] if column]
    folded = {column.casefold(): column for column in columns}
    if TEXT_COLUMN not in folded:
        raise ZstcError(
            f"The download is not the resolutions CSV (no '{TEXT_COLUMN}' column; columns: "
            f"{', '.join(columns[:10]) or 'none'}). Check --url."
        )
    label = folded.get(LABEL_COLUMN.casefold())
    rows = list(reader)
    if not rows:
        raise ZstcError("The download has a header but no rows. Check --url.")
    categories = sorted({row[label] for row in rows if label and row.get(label)}) if label else []
    return Summary(rows=len(rows), columns=columns, categories=categories, sha256=hashlib.sha256(data).hexdigest())


def download(
    url: str, target: Path, *, on_progress: Callable[[int, int | None], None] | None = None, timeout: float = 60
) -> Summary:
    """Download ``url`` to ``target`` (atomically: a partial download never leaves a file behind)."""
    if not url.startswith(("https://", "http://")):
        raise ZstcError(f"--url {url!r} is not an http(s) URL.")
    request = urllib.request.Request(url, headers={"User-Agent": "zstc"})  # noqa: S310 - http(s) checked above
    chunks: list[bytes] = []
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(256 * 1024):
                chunks.append(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
    except urllib.error.HTTPError as error:
        raise ZstcError(
            f"Download failed: {url} answered HTTP {error.code}. Pass --url with a working copy."
        ) from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ZstcError(
            f"Download failed: cannot reach {url} ({reason}). Check your internet connection, or pass --url."
        ) from error
    data = b"".join(chunks)
    summary = summarize(data)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return summary
