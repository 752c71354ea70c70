"""``zstc eval``: classify a labelled CSV and measure accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zstc.errors import InputError
from zstc.inputs import csv_dicts
from zstc.results import plain


@dataclass(frozen=True)
class Dataset:
    texts: list[str]
    truth: list[str]
    classes: tuple[str, ...]


def load_labelled(
    path: Path, *, text_column: str, label_column: str, encoding: str = "utf-8", limit: int | None = None, seed: int = 0
) -> Dataset:
    header, reader = csv_dicts(path, encoding)
    columns = [column for column in header if column]
    for name, option in ((text_column, "--text-column"), (label_column, "--label-column")):
        if name not in columns:
            raise InputError(f"{path.name} has no column '{name}'. Its columns: {', '.join(columns)}. Pass {option}.")
    rows = [
        {text_column: row[text_column], label_column: row[label_column]}
        for _, row in reader
        if row[text_column].strip() and row[label_column].strip()
    ]
    if not rows:
        raise InputError(f"{path.name} has no rows with both a '{text_column}' and a '{label_column}'.")
    if limit is not None and limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    truth = [row[label_column].strip() for row in rows]
    return Dataset(texts=[row[text_column] for row in rows], truth=truth, classes=tuple(sorted(set(truth))))


def classify_all(
    classifier: Any,
    texts: Sequence[str],
    labels: Sequence[str],
    template: str | None,
    *,
    progress_to: Console | None = None,
) -> list[str | None]:
    """Top label per text (None where the model answered with an error), through the Python API's classifier."""
    with Progress(
        TextColumn("classifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=progress_to, transient=True, disable=progress_to is None,
    ) as progress:  # fmt: skip
        task = progress.add_task("classify", total=len(texts))
        answers = classifier.classify(
            list(texts),
            list(labels),
            hypothesis_template=template,
            progress=lambda done: progress.advance(task, done),
        )
    return [answer.label for answer in answers]


@dataclass(frozen=True)
class Report:
    labels: list[str]  # rows/columns of the matrix: true classes, then predicted-only ones
    matrix: list[list[int]]  # matrix[true][predicted]
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    total: int
    errors: int

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.total,
            "errors": self.errors,
            "accuracy": round(self.accuracy, 6),
            "macro_f1": round(self.macro_f1, 6),
            "per_class": self.per_class,
            "labels": self.labels,
            "confusion_matrix": self.matrix,
        }


def metrics(truth: Sequence[str], predicted: Sequence[str | None], *, labels: Sequence[str]) -> Report:
    """Accuracy over all records (an error counts as wrong) and macro-F1 over the true classes and the labels."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    classes = list(dict.fromkeys([*sorted(set(truth)), *labels]))
    index = {label: i for i, label in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    errors = 0
    for gold, guess in zip(truth, predicted, strict=True):
        if guess is None:
            errors += 1
            continue
        if guess not in index:
            index[guess] = len(classes)
            classes.append(guess)
            for row in matrix:
                row.append(0)
            matrix.append([0] * len(classes))
        matrix[index[gold]][index[guess]] += 1
    per_class: dict[str, dict[str, float]] = {}
    for label, i in index.items():
        tp = matrix[i][i]
        predicted_count = sum(row[i] for row in matrix)
        actual = sum(matrix[i]) + sum(1 for g, p in zip(truth, predicted, strict=True) if p is None and g == label)
        precision = tp / predicted_count if predicted_count else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": float(actual)}
    scored = [label for label in classes if per_class[label]["support"] > 0 or label in labels]
    macro = sum(per_class[label]["f1"] for label in scored) / len(scored) if scored else 0.0
    correct = sum(matrix[i][i] for i in range(len(classes)))
    return Report(
        labels=classes,
        matrix=matrix,
        accuracy=correct / len(truth) if truth else 0.0,
        macro_f1=macro,
        per_class=per_class,
        total=len(truth),
        errors=errors,
    )


def show(console: Console, report: Report) -> None:
    console.print(
        f"[bold]{report.total} records · accuracy {report.accuracy:.1%} · macro-F1 {report.macro_f1:.3f}"
        + (f" · {report.errors} error(s)" if report.errors else "")
    )
    table = Table(title="Per class", title_justify="left")
    for column in ("label", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label in report.labels:
        stats = report.per_class[label]
        table.add_row(
            plain(label),
            f"{stats['precision']:.3f}",
            f"{stats['recall']:.3f}",
            f"{stats['f1']:.3f}",
            str(int(stats["support"])),
        )
    console.print(table)
    short = [f"{i + 1}" for i in range(len(report.labels))]
    matrix = Table(title="Confusion (rows: true label, columns: predicted, numbered as the rows)", title_justify="left")
    matrix.add_column("true \\ predicted")
    for name in short:
        matrix.add_column(name, justify="right")
    for i, (label, row) in enumerate(zip(report.labels, report.matrix, strict=True)):
        cells = [f"[bold]{v}[/]" if j == i and v else (str(v) if v else "·") for j, v in enumerate(row)]
        matrix.add_row(plain(f"{i + 1}. {label}"), *cells)
    console.print(matrix)


def plot_confusion(report: Report, target: Path) -> Path:
    """Draw the confusion matrix as a PNG heat map with Pillow (row-normalised shading, counts in the cells)."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(report.labels)
    cell, label_width, header = 56, 260, 110
    font = ImageFont.load_default()
    width, height = label_width + n * cell + 20, header + n * cell + 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (10, 10),
        f"Confusion matrix: {report.total} records, accuracy {report.accuracy:.1%}, macro-F1 {report.macro_f1:.3f}",
        fill="black",
        font=font,
    )
    draw.text((10, header - 20), "true \\ predicted", fill="black", font=font)
    for j in range(n):
        draw.text((label_width + j * cell + cell // 2 - 4, header - 20), str(j + 1), fill="black", font=font)
    for i, (label, row) in enumerate(zip(report.labels, report.matrix, strict=True)):
        y = header + i * cell
        draw.text((10, y + cell // 2 - 6), f"{i + 1}. {label}"[:40], fill="black", font=font)
        total = sum(row) or 1
        for j, value in enumerate(row):
            share = value / total
            shade = int(255 - 200 * share)
            colour = (shade, shade, 255) if i != j else (shade, 255, shade)
            x = label_width + j * cell
            draw.rectangle((x, y, x + cell - 2, y + cell - 2), fill=colour, outline=(200, 200, 200))
            draw.text((x + 8, y + cell // 2 - 6), str(value), fill="black", font=font)
    draw.text((10, height - 40), "Rows: true label; columns: predicted label (numbered as the rows).", fill="black")
    draw.text((10, height - 24), "Shade: share of the row; green: correct.", fill="black")
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
    return target
