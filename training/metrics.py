"""Training metrics on disk: ``metrics.csv`` (one row per validation) and a curves PNG like the report's Figure 2.5."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from siamese_audio.files import save_figure, write_atomic


@dataclass(frozen=True)
class EvalRecord:
    """One validation.

    Attributes
    ----------
    epoch : int
        Epochs completed when validating.
    train_loss, train_accuracy : float
        Means over the epochs since the previous validation.
    val_accuracy : float
        Mean 5-way one-shot accuracy on the validation classes.
    val_n_tasks : int
        Number of one-shot tasks behind ``val_accuracy``.
    val_ci95_low, val_ci95_high : float
        Its 95% confidence interval (the evaluator's: Wilson score).
    elapsed_s : float
        Wall-clock seconds of the run (training and validations) at this validation.
    lr : float
        Learning rate of the last epoch before it.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    val_n_tasks: int = 0
    val_ci95_low: float = 0.0
    val_ci95_high: float = 0.0
    elapsed_s: float = field(default=0.0, compare=False)  # wall clock: not part of a run's identity
    lr: float = 0.0


METRICS_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_accuracy", "val_n_tasks", "val_ci95_low",
                   "val_ci95_high", "elapsed_s", "lr")


def write_metrics_csv(path: Path, history: Sequence[EvalRecord]) -> None:
    """Write :data:`METRICS_COLUMNS`, one row per validation, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(METRICS_COLUMNS)
    for record in history:
        writer.writerow([record.epoch, f"{record.train_loss:.6f}", f"{record.train_accuracy:.6f}",
                         f"{record.val_accuracy:.6f}", record.val_n_tasks, f"{record.val_ci95_low:.6f}",
                         f"{record.val_ci95_high:.6f}", f"{record.elapsed_s:.1f}", f"{record.lr:.6g}"])
    write_atomic(path, buffer.getvalue().encode())


def plot_curves(
    path: Path, epoch_losses: Sequence[float], epoch_accuracies: Sequence[float], history: Sequence[EvalRecord],
    *, title: str | None = None,
) -> None:
    """Draw training accuracy (blue), loss (red) per epoch and validation accuracy (orange) to a PNG.

    Parameters
    ----------
    path : Path
        PNG written atomically.
    epoch_losses, epoch_accuracies : Sequence[float] [shape=(epochs,)]
        Per-epoch training batch loss and accuracy.
    history : Sequence[EvalRecord]
        Validations.
    title : str, optional
        Prefix of the figure title (e.g. the dataset); the best validation is appended.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    epochs = range(1, len(epoch_losses) + 1)
    ax.plot(epochs, epoch_accuracies, color="tab:blue", linewidth=0.8, label="training accuracy")
    ax.plot(epochs, epoch_losses, color="tab:red", linewidth=0.8, label="training loss")
    if history:
        ax.plot([r.epoch for r in history], [r.val_accuracy for r in history], color="tab:orange",
                marker="o", linewidth=1.5, label="5-way one-shot validation accuracy")
        best = max(history, key=lambda r: r.val_accuracy)
        ax.axvline(best.epoch, color="tab:orange", linestyle=":", linewidth=1)
        ax.set_title(f"{title + ': ' if title else ''}best validation accuracy {best.val_accuracy:.3f} "
                     f"at epoch {best.epoch}", fontsize="medium")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy / loss")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
