"""Which arithmetic a training or embedding pass runs in, and whether this CPU has bf16 in hardware.

bf16 autocast is fast only where the hardware multiplies bf16 natively: CUDA, and x86 CPUs with
AVX-512 BF16 or AMX. Elsewhere PyTorch emulates it and a CPU step gets slower, not faster: a
``cpu-esc50`` training step (128 clips x 345 frames, 2 threads, channels-last) took 0.74-0.80 s in
bf16 against 1.01-1.19 s in float32 on an AVX-512 BF16 CPU, but 19.4 s against 1.9 s on an AVX2-only
AMD EPYC (``benchmarks/bench_precision.py``, docs/results/precision-avx2.md). ``"bf16-native"``, the CPU presets'
precision, takes bf16 only where it pays.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from siamese_audio.errors import TrainingError
from siamese_audio.training.config import PRECISIONS

#: /proc/cpuinfo flags that mean bf16 arithmetic in hardware.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as the kernel lists them (empty where ``cpuinfo`` cannot be read, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where this CPU computes bf16 in hardware (AVX-512 BF16 or AMX, read from /proc/cpuinfo).

    False where the flags cannot be read (other systems): float32 is then the safe choice, since
    emulated bf16 is several times slower than float32.
    """
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a pass on ``device`` runs in: ``"bf16-native"`` becomes ``"auto"``, ``"bf16"`` or ``"fp32"``.

    Parameters
    ----------
    precision : str
        One of :data:`PRECISIONS`.
    device : torch.device or str
        Where the pass runs.

    Returns
    -------
    str
        ``precision`` itself unless it is ``"bf16-native"``; then ``"auto"`` on CUDA (bf16 autocast there),
        ``"bf16"`` on a CPU with native bf16 (:func:`cpu_has_native_bf16`) and ``"fp32"`` on any other CPU.
    """
    if precision not in PRECISIONS:
        raise TrainingError(f"Expected precision among {list(PRECISIONS)}. Got {precision!r}.")
    if precision != "bf16-native":
        return precision
    if torch.device(device).type == "cuda":
        return "auto"
    return "bf16" if cpu_has_native_bf16() else "fp32"
