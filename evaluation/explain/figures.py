"""Figures of explanations (matplotlib, Agg): the authors' task layout, overlays, faithfulness curves.

Every figure that shows relevance says how to read it: colour is
``rho = -h``, and red means "this region alone keeps the match".
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siamese_audio.evaluation.explain.faithfulness import SupportFaithfulness, aopc, insertion_area
from siamese_audio.evaluation.explain.methods import SupportExplanation
from siamese_audio.features.config import FeatureConfig
from siamese_audio.features.mel import hz_to_mel, mel_to_hz
from siamese_audio.files import save_figure

#: The sentence every relevance figure carries.
SIGN_NOTE = ("colour: relevance (ρ = −h per pixel, or u − v per segment with --ranking u); red: this region alone "
             "keeps the match best, "
             "blue: it keeps least of it")
RELEVANCE_CMAP = "RdBu_r"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def band_centres_hz(config: FeatureConfig) -> np.ndarray:
    """Centre frequency of each mel band (Slaney), [shape=(n_mels,)]."""
    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(config.sample_rate / 2.0), config.n_mels + 2)
    return mel_to_hz(mels)[1:-1]


def frame_seconds(config: FeatureConfig) -> np.ndarray:
    """Centre time of each frame (centred STFT), [shape=(n_frames,)]."""
    return np.arange(config.n_frames) * config.hop_length / config.sample_rate


def _axes_in_hz_and_seconds(ax, config: FeatureConfig, *, n_ticks: int = 5, labels: bool = True) -> None:
    duration = config.n_samples / config.sample_rate
    ticks = np.linspace(0, config.n_mels - 1, n_ticks).round().astype(int)
    hz = band_centres_hz(config)[ticks]
    ax.set_yticks(ticks + 0.5, labels=[f"{h / 1000:.1f}k" if h >= 1000 else f"{h:.0f}" for h in hz], fontsize=7)
    xt = np.linspace(0, duration, 5)
    ax.set_xticks(xt, labels=[f"{t:.2g}" for t in xt], fontsize=7)
    if labels:
        ax.set_ylabel("Hz", fontsize=8)
        ax.set_xlabel("s", fontsize=8)


def _show_logmel(ax, image: np.ndarray, config: FeatureConfig, cmap: str = "magma"):
    duration = config.n_samples / config.sample_rate
    return ax.imshow(image, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest",
                     extent=(0.0, duration, 0.0, image.shape[0]))


def _name(e: SupportExplanation) -> str:
    return "ρ" if e.ranking == "rho" else "u − v"


def _label(e: SupportExplanation) -> str:
    return "ρ = −h" if e.ranking == "rho" else "u_i − v (segment alone)"


def _relevance_limits(explanations: Sequence[SupportExplanation]) -> tuple[float, float]:
    """Lowest and highest rho over all supports of a figure, so that its colours compare.

    The whole colour range spans the ranking: red is the highest rho of the
    figure and blue the lowest, whatever their sign (often every segment alone
    keeps less than the whole support, and every rho is negative); the
    colour bar gives the values.
    """
    low = min(float(e.relevance.min()) for e in explanations)
    high = max(float(e.relevance.max()) for e in explanations)
    if high <= low:
        low, high = low - 1e-12, high + 1e-12
    return low, high


def plot_task(path: Path, query: np.ndarray, supports: np.ndarray, explanations: Sequence[SupportExplanation], *,
              v: Sequence[float], positive: int, classes: Sequence[str], query_class: str, task: int,
              config: FeatureConfig) -> Path:
    """The authors' layout: the query; the C heatmaps; the supports with their similarity."""
    plt = _pyplot()
    n = len(explanations)
    fig, axes = plt.subplots(3, n, figsize=(2.6 * n + 0.8, 7.6), squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.06, top=0.88, hspace=0.45, wspace=0.25)
    for ax in axes[0]:
        ax.axis("off")
    mid = n // 2
    axes[0, mid].axis("on")
    _show_logmel(axes[0, mid], query, config)
    _axes_in_hz_and_seconds(axes[0, mid], config)
    axes[0, mid].set_title(f"query ({query_class})", fontsize=9)
    low, high = _relevance_limits(explanations)
    image = None
    for c, e in enumerate(explanations):
        duration = config.n_samples / config.sample_rate
        image = axes[1, c].imshow(e.relevance_map(), origin="lower", aspect="auto", cmap=RELEVANCE_CMAP, vmin=low,
                                  vmax=high, interpolation="nearest", extent=(0.0, duration, 0.0, e.labels.shape[0]))
        axes[1, c].set_title(f"{_name(e)}, {e.n_segments} segments", fontsize=8)
        _show_logmel(axes[2, c], supports[c], config)
        mark = " ✓ positive" if c == positive else ""
        axes[2, c].set_title(f"{classes[c]}: v = {v[c]:.3g}{mark}", fontsize=8,
                             color="tab:green" if c == positive else "black")
        for r in (1, 2):
            _axes_in_hz_and_seconds(axes[r, c], config, labels=c == 0)
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.88, 0.38, 0.015, 0.22)),
                     label=f"{_label(explanations[0])} (red: highest)")
    fig.suptitle(f"task {task}: which parts of each support keep its similarity to the query\n{SIGN_NOTE}",
                 fontsize=9)
    save_figure(fig, path, dpi=90)
    return Path(path)


def plot_overlay(path: Path, supports: np.ndarray, explanations: Sequence[SupportExplanation], *,
                 v: Sequence[float], positive: int, classes: Sequence[str], top_k: int, task: int,
                 config: FeatureConfig, columns: Sequence[int] | None = None, after: np.ndarray | None = None,
                 query_class: str | None = None) -> Path:
    """Each support's log-mel (grey), relevance at partial opacity, segment borders, top-k outlined.

    ``after`` [shape=(C, 2)], when given: the similarity with only the top-k
    segments kept and with them removed (:func:`~evaluation.explain.faithfulness.top_k_scores`),
    written beside ``v`` in each title.
    """
    from skimage.segmentation import find_boundaries

    plt = _pyplot()
    columns = list(range(len(explanations))) if columns is None else list(columns)
    aspect = config.n_frames / config.n_mels
    width = 7.5
    height = len(columns) * min(3.2, width / aspect * 0.8) + 0.9
    fig, axes = plt.subplots(len(columns), 1, figsize=(width, height), squeeze=False)
    height += 0.35 * len(columns)  # room for two-line titles and the axis label between panels
    fig.set_size_inches(width, height)
    fig.subplots_adjust(left=0.1, right=0.8, bottom=0.5 / height, top=1 - 1.35 / height, hspace=0.75)
    low, high = _relevance_limits([explanations[c] for c in columns])
    duration = config.n_samples / config.sample_rate
    extent = (0.0, duration, 0.0, config.n_mels)
    image = None
    for ax, c in zip(axes[:, 0], columns):
        e = explanations[c]
        _show_logmel(ax, supports[c], config, cmap="gray")
        image = ax.imshow(e.relevance_map(), origin="lower", aspect="auto", cmap=RELEVANCE_CMAP, vmin=low, vmax=high,
                          alpha=0.55, interpolation="nearest", extent=extent)
        borders = np.ma.masked_where(~find_boundaries(e.labels, mode="inner"), np.ones(e.labels.shape))
        ax.imshow(borders, origin="lower", aspect="auto", cmap="Greys_r", vmin=0, vmax=1, alpha=0.6,
                  interpolation="nearest", extent=extent)
        top = np.isin(e.labels, e.top_segments(top_k)).astype(float)
        ys = np.arange(config.n_mels) + 0.5
        xs = (np.arange(config.n_frames) + 0.5) * duration / config.n_frames
        ax.contour(xs, ys, top, levels=[0.5], colors="yellow", linewidths=1.4)
        mark = ", positive" if c == positive else ""
        scores = f"v = {v[c]:.3g}"
        if after is not None:
            scores += f"; top {top_k} only: {after[c, 0]:.3g}, top {top_k} removed: {after[c, 1]:.3g}"
        ax.set_title(f"support {c} ({classes[c]}{mark}): {scores}\ntop {top_k} segments by {_name(e)} outlined in yellow",
                     fontsize=8)
        _axes_in_hz_and_seconds(ax, config)
    if image is not None:
        fig.colorbar(image, cax=fig.add_axes((0.83, 0.3, 0.02, 0.4)),
                     label=f"{_label(explanations[columns[0]])} (red: highest)")
    heading = f"task {task}" + (f", query: {query_class}" if query_class else "")
    fig.suptitle(f"{heading}\n" + "\n".join(textwrap.wrap(SIGN_NOTE, 110)), fontsize=8)
    save_figure(fig, path, dpi=90)
    return Path(path)


def plot_faithfulness(path: Path, rows: Sequence[SupportFaithfulness], *, title: str = "") -> Path:
    """Mean deletion and insertion curves over explained supports: rho order vs random, reverse and size.

    A dotted reference line orders segments by ``u_i`` alone (``rho_i |R_i|``, not per pixel).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.86, wspace=0.22)
    x = rows[0].fractions
    for ax, kind in zip(axes, ("deletion", "insertion")):
        rho = np.stack([getattr(r, f"{kind}_rho") for r in rows]).astype(np.float64)
        rev = np.stack([getattr(r, f"{kind}_reverse") for r in rows]).astype(np.float64)
        rand = np.stack([getattr(r, f"{kind}_random") for r in rows]).astype(np.float64)  # (S, R, N+1)
        rand_mean = rand.mean(axis=(0, 1))
        # spread of single random orders around the mean (over supports and orders)
        rand_sd = (rand - rand.mean(axis=1, keepdims=True)).std(axis=(0, 1)) if rand.shape[1] > 1 else 0 * rand_mean
        score = aopc if kind == "deletion" else insertion_area
        label = "AOPC" if kind == "deletion" else "area"
        ax.plot(x, rho.mean(axis=0), "-", color="tab:red", lw=2,
                label=f"by ρ (most relevant first), {label} {float(score(rho).mean()):.3g}")
        if rho.shape[0] > 1:  # 95% normal interval of the mean curve over supports
            half = 1.96 * rho.std(axis=0, ddof=1) / np.sqrt(rho.shape[0])
            ax.fill_between(x, rho.mean(axis=0) - half, rho.mean(axis=0) + half, color="tab:red", alpha=0.18)
        ax.plot(x, rand_mean, "-", color="grey", label=f"random segment orders, {label} "
                f"{float(score(rand).mean()):.3g}")
        ax.fill_between(x, rand_mean - rand_sd, rand_mean + rand_sd, color="grey", alpha=0.25)
        ax.plot(x, rev.mean(axis=0), "--", color="tab:blue",
                label=f"reverse (least relevant first), {label} {float(score(rev).mean()):.3g}")
        size = np.stack([getattr(r, f"{kind}_size") for r in rows]).astype(np.float64)
        ax.plot(x, size.mean(axis=0), "-.", color="tab:green",
                label=f"segment size alone (largest first), {label} {float(score(size).mean()):.3g}")
        alone = np.stack([getattr(r, f"{kind}_u") for r in rows]).astype(np.float64)
        ax.plot(x, alone.mean(axis=0), ":", color="black",
                label=f"reference: by u (segment alone, not per pixel), {label} {float(score(alone).mean()):.3g}")
        ax.set_xlabel("fraction of pixels " + ("filled (deleted)" if kind == "deletion" else "kept (inserted)"))
        ax.set_ylabel("similarity to the query (mean over supports)")
        ax.set_title(f"{kind} curves", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"faithfulness over {len(rows)} explained supports (red band: 95% interval of ρ's mean; grey: ±1 sd of a random order)",
                 fontsize=10)
    save_figure(fig, path, dpi=100)
    return Path(path)
