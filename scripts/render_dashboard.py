"""Draw the layout of the stack's CloudWatch dashboard from its synthesized body (no AWS needed).

    .venv/bin/python scripts/render_dashboard.py                       # → docs/img/dashboard.png (serverless)
    .venv/bin/python scripts/render_dashboard.py --endpoint-mode none --output /tmp/dashboard-none.png
    .venv/bin/python scripts/render_dashboard.py --template cdk.out/ZeroShotClassification.template.json

Each widget is drawn where the dashboard places it (24-column grid), with its title and its metrics (left axis, right
axis, math expressions), its query (Logs Insights) or its alarms. Values are not drawn: this is the layout.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacks.monitoring import dashboard_body  # noqa: E402

COLUMN = 56  # pixels per grid column
ROW = 44  # pixels per grid row
MARGIN = 16
GAP = 6
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(FONT_DIR / name), size)
    except OSError:
        return ImageFont.load_default(size=size)


def synthesized_template(endpoint_mode: str) -> dict[str, Any]:
    """Synthesize the app with cdk.json's context (as `cdk synth` does) and return the stack's template."""
    from stacks.application import build_app

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    with tempfile.TemporaryDirectory() as outdir:
        app, stack = build_app({**context, "endpoint_mode": endpoint_mode}, outdir=outdir)
        app.synth()
        return json.loads((Path(outdir) / f"{stack.artifact_id}.template.json").read_text())


def alarm_names(template: dict[str, Any]) -> dict[str, str]:
    """``<LogicalId.Arn>`` placeholder → alarm name."""
    return {
        f"<{logical_id}.Arn>": resource["Properties"].get("AlarmName", logical_id)
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def metric_labels(properties: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, axis) of each visible line of a metric widget."""
    labels = []
    for line in properties.get("metrics", []):
        options = line[-1] if isinstance(line[-1], dict) else {}
        if options.get("visible") is False:
            continue
        values = [v for v in line if not isinstance(v, dict)]
        if "expression" in options:
            label = options.get("label") or options["expression"]
        else:
            namespace, name = values[0], values[1]
            stat = options.get("stat", properties.get("stat", "Average"))  # CloudWatch's default
            label = options.get("label") or name
            if stat and stat not in ("Sum",) and stat.lower() not in label.lower():
                label = f"{label} [{stat}]"
            if namespace.startswith("AWS/") or namespace.startswith("/aws/"):
                label = f"{label}  ({namespace.split('/')[-1]})"
        labels.append((label, options.get("yAxis", "left")))
    return labels


def draw_widget(
    draw: ImageDraw.ImageDraw, widget: dict[str, Any], box: tuple[int, int, int, int], alarms: dict[str, str]
) -> None:
    x0, y0, x1, y1 = box
    props = widget["properties"]
    kind = widget["type"]
    small, normal, title_font = font(12), font(13), font(15, bold=True)
    if kind == "text":
        draw.rectangle(box, fill="#eef3f8", outline="#c5d3e3")
        lines = [re.sub(r"[#`*]", "", line).strip() for line in props["markdown"].splitlines() if line.strip()]
        draw.text((x0 + 10, y0 + 8), lines[0], font=font(18, bold=True), fill="#16325c")
        width = max(20, (x1 - x0 - 20) // 7)
        y = y0 + 34
        for line in lines[1:]:
            for part in textwrap.wrap(line, width):
                draw.text((x0 + 10, y), part, font=normal, fill="#333333")
                y += 17
        return
    draw.rectangle(box, fill="white", outline="#bbbbbb")
    title = props.get("title", kind)
    draw.text((x0 + 10, y0 + 8), title, font=title_font, fill="#111111")
    top = y0 + 32
    if kind == "metric":
        # a faint plot area, then the legend
        plot = (x0 + 10, top, x1 - 10, top + (y1 - top) // 3)
        draw.rectangle(plot, outline="#e5e5e5")
        for i in range(1, 4):
            y = plot[1] + i * (plot[3] - plot[1]) // 4
            draw.line((plot[0], y, plot[2], y), fill="#f0f0f0")
        for annotation in props.get("annotations", {}).get("horizontal", []):
            y = plot[1] + (plot[3] - plot[1]) // 4
            draw.line((plot[0], y, plot[2], y), fill="#d62728", width=2)
            draw.text((plot[2] - 8, y - 15), str(annotation.get("label", "")), font=small, fill="#d62728", anchor="ra")
        y = plot[3] + 8
        for i, (label, axis) in enumerate(metric_labels(props)):
            color = PALETTE[i % len(PALETTE)]
            draw.rectangle((x0 + 12, y + 3, x0 + 22, y + 13), fill=color)
            text = label + ("  → right axis" if axis == "right" else "")
            draw.text((x0 + 28, y), text, font=small, fill="#333333")
            y += 17
            if y > y1 - 16:
                break
    elif kind == "log":
        query = props.get("query", "")
        parts = [p.strip() for p in query.split("|")]
        y = top
        for part in parts[1:]:
            for line in textwrap.wrap(part, max(20, (x1 - x0 - 20) // 7)):
                draw.text((x0 + 12, y), line, font=font(12), fill="#555555")
                y += 16
        draw.text((x0 + 12, y + 6), "(table of the latest 20 jobs)", font=small, fill="#888888")
    elif kind == "alarm":
        y = top
        for arn in props.get("alarms", []):
            name = alarms.get(arn, arn)
            draw.ellipse((x0 + 12, y + 3, x0 + 22, y + 13), fill="#2ca02c")
            draw.text((x0 + 28, y), name, font=small, fill="#333333")
            y += 18


def render(template: dict[str, Any], output: Path) -> Path:
    body = dashboard_body(template)
    widgets = body["widgets"]
    rows = max(w["y"] + w["height"] for w in widgets)
    image = Image.new("RGB", (2 * MARGIN + 24 * COLUMN, 2 * MARGIN + rows * ROW + 30), "#f7f7f7")
    draw = ImageDraw.Draw(image)
    names = [
        r["Properties"]["DashboardName"] for r in template["Resources"].values() if r["Type"].endswith("Dashboard")
    ]
    draw.text((MARGIN, 8), f"CloudWatch dashboard {names[0]} (layout)", font=font(16, bold=True), fill="#111111")
    alarms = alarm_names(template)
    for w in widgets:
        x0 = MARGIN + w["x"] * COLUMN
        y0 = MARGIN + 24 + w["y"] * ROW
        box = (x0, y0, x0 + w["width"] * COLUMN - GAP, y0 + w["height"] * ROW - GAP)
        draw_widget(draw, w, box, alarms)
    output.parent.mkdir(parents=True, exist_ok=True)
    image.save(output, optimize=True)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, help="a synthesized template (default: synthesize the app)")
    parser.add_argument("--endpoint-mode", default="serverless", choices=["serverless", "provisioned", "none"])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "img" / "dashboard.png")
    args = parser.parse_args(argv)
    template = json.loads(args.template.read_text()) if args.template else synthesized_template(args.endpoint_mode)
    print(render(template, args.output))


if __name__ == "__main__":
    main()
