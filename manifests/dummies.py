"""Seeded factories of small generated datasets in the real release layouts.

Used by the tests and the demo. Classes differ the way speakers or sound
classes do: each class has its own fundamental frequency, harmonic timbre and
noise colour; clips vary in duration, onset, pitch jitter and noise.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def synth_clip(rng: np.random.Generator, *, class_index: int, sr: int, seconds: float,
               channels: int = 1) -> np.ndarray:
    """One generated clip of class ``class_index``.

    Returns
    -------
    np.ndarray [shape=(n,) or (n, channels), dtype=float32], values in [-1, 1]
    """
    n = max(1, int(round(seconds * sr)))
    t = np.arange(n) / sr
    class_rng = np.random.default_rng(1000 + class_index)
    f0 = 110.0 * 2 ** (class_index * 5 / 12 % 3) * (1 + 0.03 * rng.standard_normal())
    amps = class_rng.uniform(0.1, 1.0, size=8) / np.arange(1, 9)
    y = sum(a * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps))
    env = np.minimum(1.0, t / 0.02) * np.exp(-t * class_rng.uniform(0.5, 4.0))
    y = y * env + 0.02 * rng.standard_normal(n)
    y = (0.5 * y / max(1e-6, np.abs(y).max())).astype(np.float32)
    if channels > 1:
        y = np.stack([y * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return y


def make_audiomnist(root: str | Path, *, speakers: Sequence[str] = ("01", "02", "03"), digits: int = 2,
                    reps: int = 2, sr: int = 48_000, seed: int = 0, meta: bool = True,
                    max_seconds: float = 0.9) -> Path:
    """Write ``root/data/NN/{digit}_{NN}_{rep}.wav`` (+ ``audioMNIST_meta.txt``); return ``root``."""
    import soundfile as sf

    root = Path(root)
    rng = np.random.default_rng(seed)
    for s_i, speaker in enumerate(speakers):
        folder = root / "data" / speaker
        folder.mkdir(parents=True, exist_ok=True)
        for digit in range(digits):
            for rep in range(reps):
                y = synth_clip(rng, class_index=s_i, sr=sr, seconds=rng.uniform(0.3, max_seconds))
                sf.write(folder / f"{digit}_{speaker}_{rep}.wav", y, sr, subtype="PCM_16")
    if meta:
        info = {s: {"accent": "generated", "age": "30", "gender": "female" if i % 2 else "male"}
                for i, s in enumerate(speakers)}
        (root / "data" / "audioMNIST_meta.txt").write_text(json.dumps(info, indent=1))
    return root


def make_esc50(root: str | Path, *, classes: Sequence[str] = ("dog", "rain", "siren"), clips_per_class: int = 2,
               sr: int = 44_100, seed: int = 0, seconds: float = 5.0) -> Path:
    """Write ``root/audio/{fold}-{src}-{take}-{target}.wav`` and ``root/meta/esc50.csv``; return ``root``."""
    import soundfile as sf

    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for target, category in enumerate(classes):
        for k in range(clips_per_class):
            fold, src, take = 1 + k % 5, f"{100000 + 37 * target + k}", "A"
            name = f"{fold}-{src}-{take}-{target}.wav"
            y = synth_clip(rng, class_index=target, sr=sr, seconds=rng.uniform(0.5 * seconds, seconds))
            sf.write(root / "audio" / name, y, sr, subtype="PCM_16")
            rows.append({"filename": name, "fold": fold, "target": target, "category": category,
                         "esc10": "False", "src_file": src, "take": take})
    write_esc50_csv(root / "meta" / "esc50.csv", rows)
    return root


def write_esc50_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ESC50_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
