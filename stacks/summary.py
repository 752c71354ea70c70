"""Print what a synthesized cloud assembly would deploy: ``python -m stacks.summary cdk.out``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def summarize(outdir: Path) -> str:
    lines = []
    for template_file in sorted(outdir.glob("*.template.json")):
        template = json.loads(template_file.read_text())
        resources = template.get("Resources", {})
        counts = Counter(resource["Type"] for resource in resources.values())
        lines.append(f"{template_file.name.removesuffix('.template.json')}: {len(resources)} resources")
        lines.extend(f"  {count:3d}  {kind}" for kind, count in sorted(counts.items()))
        outputs = template.get("Outputs", {})
        if outputs:
            lines.append("  outputs: " + ", ".join(sorted(outputs)))
    return "\n".join(lines) if lines else f"No templates in {outdir}: run `make synth` first."


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1] if len(sys.argv) > 1 else "cdk.out")))
