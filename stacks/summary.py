"""Print what a synthesized cloud assembly would deploy, stack by stack in deploy order:
``python -m stacks.summary cdk.out``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def _dependencies(outdir: Path) -> dict[str, list[str]]:
    """Each stack's stacks it is deployed after (the cloud assembly's manifest), by artifact id."""
    manifest_file = outdir / "manifest.json"
    if not manifest_file.exists():
        return {}
    artifacts = json.loads(manifest_file.read_text()).get("artifacts", {})
    stacks = {name for name, a in artifacts.items() if a.get("type") == "aws:cloudformation:stack"}
    return {name: sorted(d for d in artifacts[name].get("dependencies", []) if d in stacks) for name in stacks}


def summarize(outdir: Path) -> str:
    lines = []
    dependencies = _dependencies(outdir)

    def depth(name: str) -> int:
        return 1 + max((depth(d) for d in dependencies.get(name, [])), default=0)

    def stack_name(template_file: Path) -> str:
        return template_file.name.removesuffix(".template.json")

    # In deploy order: a stack after those it depends on.
    by_order = sorted(outdir.glob("*.template.json"), key=lambda f: (depth(stack_name(f)), stack_name(f)))
    for template_file in by_order:
        template = json.loads(template_file.read_text())
        resources = template.get("Resources", {})
        counts = Counter(resource["Type"] for resource in resources.values())
        name = stack_name(template_file)
        after = dependencies.get(name)
        lines.append(f"{name}: {len(resources)} resources" + (f" (deployed after {', '.join(after)})" if after else ""))
        lines.extend(f"  {count:3d}  {kind}" for kind, count in sorted(counts.items()))
        outputs = template.get("Outputs", {})
        if outputs:
            lines.append("  outputs: " + ", ".join(sorted(outputs)))
    return "\n".join(lines) if lines else f"No templates in {outdir}: run `make synth` first."


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out")))
