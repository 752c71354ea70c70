"""The README's links into the repository (the architecture map among them) name files and folders that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_relative_link_in_the_readme_exists():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = {
        m.group(1).split("#")[0]
        for m in re.finditer(r"\]\(([^)\s]+)\)", text)
        if not m.group(1).startswith(("http://", "https://", "#", "mailto:"))
    }
    assert targets, "the README links no file: the pattern is wrong"
    missing = sorted(t for t in targets if t and not (REPO / t).exists())
    assert missing == []


def test_the_architecture_map_names_the_contract_package():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "[`zstc_contract/`](zstc_contract)" in text
