"""Training-step speed by precision and memory layout, on this machine, in one run.

Times the ``cpu-esc50`` training step (:func:`training.loop.train_step`: its augmentations, the
supervised contrastive loss over a 32-class x 4-clip batch, AdamW) on generated clips at the
ESC-50 input size (128 mel bands x 431 frames, 4 s crops), for float32 and bf16 autocast, each with
channels-last and contiguous convolution weights. Prints each variant's seconds per step (median of
``--steps`` after one warm-up step) and its speed relative to float32 channels-last measured in the
same run, then what the presets' ``"bf16-native"`` resolves to here and the CPU flags it reads.
bf16 pays only where the CPU computes it in hardware (AVX-512 BF16, AMX); elsewhere PyTorch
emulates it. With ``--results-name`` the table goes to ``docs/results/<NAME>.md``::

    .venv/bin/python benchmarks/bench_precision.py [--steps 5] [--threads 2] [--results-name precision]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import cpu_model, write_results  # noqa: E402

from siamese_audio.memory import keep_training_buffers  # noqa: E402
from siamese_audio.training.config import preset  # noqa: E402
from siamese_audio.training.loop import train_step  # noqa: E402
from siamese_audio.training.model import build_model  # noqa: E402
from siamese_audio.training.precision import NATIVE_BF16_FLAGS, cpu_flags, resolve_precision  # noqa: E402
from siamese_audio.training.sampler import ClassBatch  # noqa: E402

SHAPE = (128, 431)  # the ESC-50 feature version's clip shape


def time_steps(precision: str, channels_last: bool, steps: int, preset_name: str) -> list[float]:
    """Seconds of each of ``steps`` training steps (after one warm-up step) of a fresh preset network."""
    model_cfg, train_cfg = preset(preset_name)
    train_cfg = dataclasses.replace(train_cfg, precision=precision, channels_last=channels_last)
    device = torch.device("cpu")
    model = build_model(model_cfg, SHAPE, seed=0)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    p, k = train_cfg.classes_per_batch, train_cfg.clips_per_class
    batch = ClassBatch(rows=np.arange(p * k, dtype=np.int64), labels=np.repeat(np.arange(p, dtype=np.int64), k),
                       classes=np.repeat(np.arange(p, dtype=np.int64), k))
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 1):
        x = -40.0 + 10.0 * torch.randn((p * k, *SHAPE), generator=gen)
        start = time.perf_counter()
        train_step(model, optimizer, x, batch, train_cfg, device, rng, precision)
        if i:  # the first step warms the allocator and the kernels' caches
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="cpu-esc50")
    parser.add_argument("--results-name", default="", help="also write docs/results/<NAME>.md")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"expected --steps >= 1; got {args.steps}")
    torch.set_num_threads(args.threads)
    keep_training_buffers()  # as training does: without it every step maps and unmaps its activations
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    resolved = resolve_precision("bf16-native", "cpu")
    print(f"CPU {cpu_model()}, {args.threads} threads; bf16 flags: {native or 'none'}; "
          f"'bf16-native' resolves to {resolved!r}", flush=True)
    variants = [("fp32", True), ("fp32", False), ("bf16", True), ("bf16", False)]
    rows = []  # (precision, weights layout, median, min, max seconds a step)
    for precision, channels_last in variants:
        times = time_steps(precision, channels_last, args.steps, args.preset)
        layout = "channels-last" if channels_last else "contiguous"
        rows.append((precision, layout, statistics.median(times), min(times), max(times)))
        print(f"  {precision} {layout}: median {rows[-1][2]:.2f} s a step ({rows[-1][3]:.2f}-{rows[-1][4]:.2f} s "
              f"over {len(times)} steps)", flush=True)
    base = rows[0][2]
    lines = ["| precision | weights | s / step (median) | range | speed vs fp32 channels-last |", "|---|---|---|---|---|"]
    for precision, layout, median, low, high in rows:
        lines.append(f"| {precision} | {layout} | {median:.2f} | {low:.2f}-{high:.2f} | **{base / median:.2f}x** |")
        print(f"  {precision} {layout}: {base / median:.2f}x float32 channels-last", flush=True)
    if args.results_name:
        train_cfg = preset(args.preset)[1]
        p, k = train_cfg.classes_per_batch, train_cfg.clips_per_class
        body = (f"`{args.preset}` training step (augmentations, supervised contrastive loss, AdamW) on a generated "
                f"{p} x {k}-clip batch at {SHAPE[0]} x {SHAPE[1]} (4 s crops), {args.threads} threads, median of "
                f"{args.steps} steps after a warm-up, each variant a fresh network; same run, glibc malloc set as training sets it. CPU flags: "
                f"{', '.join(flags) or 'none read'}; native bf16 flags: {', '.join(native) or 'none'}; the presets' "
                f"`bf16-native` resolves to `{resolved}` here.\n\n" + "\n".join(lines) + "\n")
        write_results(args.results_name, body, title="Training-step speed by precision on this CPU")


if __name__ == "__main__":
    main()
