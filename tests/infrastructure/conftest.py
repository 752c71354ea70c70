"""Synthesizes the app in-process with the cdk.json context (as `cdk synth` does), once per configuration."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from stacks.application import build_app
from stacks.endpoint_stack import EndpointStack, endpoint_stack_name

ROOT = Path(__file__).resolve().parents[2]
CONTEXT: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]


@dataclass(frozen=True)
class Synthesized:
    """One synthesized stack: the main stack as ``synth()`` returns it, with the endpoint's stack (``endpoint_mode``
    other than ``none``) as ``endpoint``."""

    template: Template
    raw: dict[str, Any]
    template_file: Path
    stack: Any  # ZeroShotStack or EndpointStack
    endpoint: Synthesized | None = None

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.raw["Resources"].items() if v["Type"] == kind}

    def only(self, kind: str) -> dict[str, Any]:
        found = list(self.resources(kind).values())
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]


def _read(outdir: Path, stack: cdk.Stack, endpoint: Synthesized | None = None) -> Synthesized:
    template_file = outdir / f"{stack.artifact_id}.template.json"
    raw = json.loads(template_file.read_text())
    return Synthesized(Template.from_json(raw), raw, template_file, stack, endpoint)


def synthesize(outdir: Path, **overrides: Any) -> Synthesized:
    app, stack = build_app({**CONTEXT, **overrides}, outdir=str(outdir))
    app.synth()  # runs the cdk-nag packs on every stack: an unacknowledged finding raises here
    endpoint_stack = (
        app.node.try_find_child(endpoint_stack_name(stack.settings)) if stack.settings.has_endpoint else None
    )
    assert stack.settings.has_endpoint == isinstance(endpoint_stack, EndpointStack)
    endpoint = _read(outdir, endpoint_stack) if isinstance(endpoint_stack, EndpointStack) else None
    return _read(outdir, stack, endpoint)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Synthesized]:
    """``synth(**context_overrides)``: the synthesized stack for that configuration (cached per session)."""
    cache: dict[tuple[tuple[str, str], ...], Synthesized] = {}

    def _synth(**overrides: Any) -> Synthesized:
        key = tuple(sorted((k, json.dumps(v)) for k, v in overrides.items()))
        if key not in cache:
            cache[key] = synthesize(tmp_path_factory.mktemp("cdk"), **overrides)
        return cache[key]

    return _synth


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    """The cdk.json context (a copy per session)."""
    return dict(CONTEXT)


@pytest.fixture(scope="session")
def fresh_synth() -> Callable[..., Synthesized]:
    """``fresh_synth(outdir, **overrides)``: an uncached synthesis."""
    return synthesize


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
