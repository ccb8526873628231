"""Figures of an evaluation (matplotlib, Agg backend; nothing is shown on screen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamese_audio.evaluation.evaluator import OneShotResult
from siamese_audio.files import save_figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(result: OneShotResult, path: Path, *, title: str = "") -> Path:
    """Confusion matrix (Figure 2.7): rows the query's class, columns the chosen support's class.

    Cells are coloured by the row fraction and labelled with task counts.

    Parameters
    ----------
    result : OneShotResult
    path : Path
        PNG to write.
    title : str
    """
    plt = _pyplot()
    matrix = result.confusion
    n = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    frac = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = min(14.0, max(4.0, 0.45 * n + 2.5))
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the query class's tasks")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8 if n > 10 else 10,
                        color="white" if frac[i, j] > 0.5 else "black")
    tick_size = 10 if n <= 20 else 6
    ax.set_xticks(range(n), labels=list(result.classes), rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=tick_size)
    ax.set_yticks(range(n), labels=list(result.classes), fontsize=tick_size)
    ax.set_xlabel("class of the chosen support")
    ax.set_ylabel("class of the query")
    ax.set_title(title or f"{result.ways}-way one-shot confusion ({result.n_tasks} tasks, "
                          f"accuracy {result.accuracy:.3f})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return path


def plot_accuracy_vs_ways(
    curve: Sequence[OneShotResult], path: Path, *, baseline: Sequence[OneShotResult] = (), title: str = ""
) -> Path:
    """Accuracy as C goes from 2 to the number of classes (Figure 2.6), with 95% Wilson intervals.

    Parameters
    ----------
    curve : sequence of OneShotResult
        The network, one result per C.
    path : Path
        PNG to write.
    baseline : sequence of OneShotResult
        The no-learning baseline on the same tasks (optional).
    title : str
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    ways = np.array([p.ways for p in curve])

    def draw(points: Sequence[OneShotResult], label: str, fmt: str) -> None:
        acc = np.array([p.accuracy for p in points])
        low = np.array([p.ci95[0] for p in points])
        high = np.array([p.ci95[1] for p in points])
        ax.errorbar(ways, acc, yerr=[acc - low, high - acc], fmt=fmt, capsize=3, label=label)

    draw(curve, "network", "o-")
    if baseline:
        draw(baseline, "baseline: cosine of raw log-mels", "s--")
    grid = np.linspace(ways.min(), ways.max(), 100) if ways.size > 1 else ways
    ax.plot(grid, 1.0 / grid, ":", color="grey", label="chance (1/C)")
    ax.set_xticks(ways)
    ax.set_xlabel("C (ways)")
    ax.set_ylabel("one-shot accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    runs = curve[0].runs if curve else 0
    ax.set_title(title or f"C-way one-shot accuracy ({runs} tasks per class, 95% Wilson CI)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return path
