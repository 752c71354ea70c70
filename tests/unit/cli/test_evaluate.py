"""Evaluation metrics and the confusion-matrix picture (no AWS)."""

from __future__ import annotations

import pytest
from PIL import Image

from zstc.evaluate import metrics, plot_confusion


def test_accuracy_macro_f1_and_matrix_match_a_hand_computed_example():
    truth = ["a", "a", "b", "b", "c"]
    guess = ["a", "b", "b", "b", None]  # one error counts as wrong
    report = metrics(truth, guess, labels=["a", "b", "c"])
    assert report.accuracy == pytest.approx(3 / 5)
    # a: P=1 R=.5 F=.667; b: P=2/3 R=1 F=.8; c: P=0 R=0 F=0
    assert report.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert report.matrix == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert report.errors == 1


def test_a_prediction_outside_the_true_classes_gets_its_own_column():
    report = metrics(["a"], ["zzz"], labels=["a"])
    assert report.labels == ["a", "zzz"] and report.matrix == [[0, 1], [0, 0]]


def test_the_plot_is_a_png_sized_to_the_labels(tmp_path):
    report = metrics(["a", "b"], ["a", "a"], labels=["a", "b"])
    target = plot_confusion(report, tmp_path / "cm.png")
    with Image.open(target) as image:
        assert image.format == "PNG" and image.width > 300


def test_labels_with_markup_are_shown_literally():
    import io

    from rich.console import Console

    from zstc.evaluate import show

    report = metrics(["[/bold]", "b"], ["[/bold]", "[red]"], labels=["[/bold]", "b"])
    buffer = io.StringIO()
    show(Console(file=buffer, width=200), report)
    assert "[/bold]" in buffer.getvalue() and "[red]" in buffer.getvalue()
