"""Figures of the stored features: log-mel examples per class (the report's Figures 2.1/2.2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamese_audio.features.store import FeatureVersion
from siamese_audio.files import save_figure


def plot_logmel_examples(version: FeatureVersion, path: str | Path, *, classes: Sequence[str] | None = None,
                         max_classes: int = 8, seed: int = 0) -> Path:
    """One stored log-mel per class, in a grid, with class names and axes in seconds and mel bands.

    Parameters
    ----------
    version : FeatureVersion
    classes : sequence of str, optional
        Classes to show (default: the first ``max_classes`` stored classes).

    Returns
    -------
    Path
        The PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stored = version.stored()
    classes = list(classes or version.classes()[:max_classes])
    rng = np.random.default_rng(seed)
    rows = [int(rng.choice(stored.loc[stored["class"] == c, "row"].to_numpy())) for c in classes]
    data = version.read(rows)
    cfg = version.feature_config
    seconds = cfg["n_samples"] / cfg["sample_rate"]
    cols = min(4, len(classes))
    nrows = -(-len(classes) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), squeeze=False, constrained_layout=True)
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    for ax, label, spec in zip(axes.ravel(), classes, data):
        im = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, spec.shape[0]))
        ax.set_title(f"class {label}", fontsize=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mel band")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="dB (ref 1.0)", shrink=0.8)
    fig.suptitle(f"Log-mel spectrograms, one clip per class ({version.dataset}, version {version.version_id})")
    return save_figure(fig, path, dpi=110)
