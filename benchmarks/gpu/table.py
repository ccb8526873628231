"""The table of the prepared GPU check (device_run.sh), from the JSON each of its steps wrote.

    python benchmarks/gpu/table.py OUT [--minutes M] [--device cuda]

Reads OUT/train-{preset}.json, OUT/eval-{preset}.json and OUT/speed*.json; writes OUT/gpu-table.md
(with the card, the torch version, the date and the report's 0.87 beside our figure) and
OUT/gpu-table.json, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

#: The report's 5-way one-shot accuracy on ESC-50 (its network on a GPU, 300 tasks, any-clip positives).
REPORT_ACCURACY = 0.87
PRESETS = ("report-esc50", "cpu-esc50")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _gib(t: dict) -> str:
    peak = t.get("peak_gpu_bytes")
    return f"{peak / 2**30:.2f}" if peak else "—"


def accuracy_rows(out: Path) -> list[dict]:
    """One row per trained preset: epochs, speed, memory, loader share, accuracy with CI and baseline."""
    rows = []
    for preset in PRESETS:
        train, ev = _load(out / f"train-{preset}.json"), _load(out / f"eval-{preset}.json")
        if train is None or ev is None:
            continue
        t = train.get("timing") or {}
        rows.append({
            "preset": preset, "epochs": train["epochs_run"], "train_s": train["elapsed_s"],
            "epoch_s": t.get("epoch_s"), "pairs_per_s": t.get("pairs_per_s"), "peak_gpu_gib": _gib(t),
            "loader_share": t.get("loader_share"), "best_epoch": train["best_epoch"],
            "best_val": train["best_val_accuracy"], "accuracy": ev["accuracy"], "ci95": ev["ci95"],
            "n_tasks": ev["n_tasks"], "baseline": ev["baseline_accuracy"],
        })
    return rows


def speed_rows(out: Path) -> list[dict]:
    """The rows gpu_check.sh prints: report-esc50 per (store reads | resident) x (bf16 | fp32)."""
    rows = []
    for path in sorted(out.glob("speed*.json")):
        t = (_load(path) or {}).get("timing") or {}
        name = path.stem.removeprefix("speed-")
        rows.append({"config": name, "pairs_per_s": t.get("pairs_per_s"), "epoch_s": t.get("epoch_s"),
                     "peak_gpu_gib": _gib(t), "loader_share": t.get("loader_share"),
                     "epochs_timed": t.get("epochs_timed")})
    return rows


def _f(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(acc: list[dict], speed: list[dict], device: str, minutes: float) -> str:
    """The Markdown of the table, with its context."""
    try:
        import torch

        card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU)"
        torch_version = torch.__version__
    except ImportError:
        card, torch_version = "unknown", "unknown"
    lines = [
        "# GPU check on the report split (ESC-50 bundle)", "",
        f"{dt.date.today().isoformat()} · device {device} · card: {card} · torch {torch_version} · "
        f"python {platform.python_version()} · {minutes} minutes of training per preset · command: "
        "`bash benchmarks/gpu/device_run.sh`", "",
        "| preset | epochs | s/epoch | pairs/s | peak GPU GiB | loader share | best val (epoch) | "
        "5-way 1-shot accuracy [95% Wilson CI], tasks | baseline | report |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in acc:
        lines.append(
            f"| {r['preset']} | {r['epochs']} | {_f(r['epoch_s'], '.2f')} | {_f(r['pairs_per_s'], '.0f')} | "
            f"{r['peak_gpu_gib']} | {_f(r['loader_share'], '.1%')} | {_f(r['best_val'], '.3f')} ({r['best_epoch']}) | "
            f"{r['accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}], {r['n_tasks']} | "
            f"{_f(r['baseline'], '.3f')} | {REPORT_ACCURACY} |")
    lines += ["", "Positives come from another recording (the stricter default); the report's 0.87 let them come "
              "from any clip of the class (`--same-source-ok`) and trained ~1,900 epochs.", "",
              "| report-esc50 speed | pairs/s | s/epoch | peak GPU GiB | loader share | epochs timed |",
              "|---|---|---|---|---|---|"]
    for r in speed:
        lines.append(f"| {r['config']} | {_f(r['pairs_per_s'], '.0f')} | {_f(r['epoch_s'], '.3f')} | "
                     f"{r['peak_gpu_gib']} | {_f(r['loader_share'], '.1%')} | {r['epochs_timed']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--minutes", type=float, default=0.0)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    acc, speed = accuracy_rows(args.out), speed_rows(args.out)
    if not acc:
        print(f"{args.out}: no train-*.json / eval-*.json pairs to tabulate", file=sys.stderr)
        return 1
    text = markdown(acc, speed, args.device, args.minutes)
    (args.out / "gpu-table.md").write_text(text)
    (args.out / "gpu-table.json").write_text(json.dumps({"accuracy": acc, "speed": speed}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
