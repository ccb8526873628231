"""The CPU recipe's ablation: one change at a time, scored on VALIDATION classes only.

Each variant is the current ``cpu-esc50`` preset with a few fields changed (or, for the ``post:``
variants, a trained checkpoint re-scored with another test-time setting, no training). Every variant
is trained with the same seed on the same split for ``--steps`` steps (the cosine schedule shortened
to that length), then its final weights are scored on ``--tasks`` 5-way one-shot tasks of the split's
validation classes (positives from another recording), with a 95% Wilson interval and the raw
log-mel cosine baseline on the same tasks. Test classes are never read.

    .venv/bin/python benchmarks/bench_recipe.py --features STORE/esc50/VERSION --split splits/report.parquet \
        [--variants recipe,+ema,...] [--steps 400] [--tasks 2000] [--threads 2] [--out bench-output/recipe]

``--list`` prints the variants. The table goes to ``docs/results/recipe-<split>.md``, or
``docs/results/<NAME>.md`` with ``--results-name`` (``benchmarks/results.py``); each row's command
is the same line with ``--variants NAME``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import write_results  # noqa: E402

from siamese_audio.evaluation import evaluate_one_shot  # noqa: E402
from siamese_audio.evaluation.baseline import RawCosineEmbedder  # noqa: E402
from siamese_audio.training.checkpoint import load_checkpoint, load_embedder  # noqa: E402
from siamese_audio.training.config import model_config_from_dict, preset  # noqa: E402
from siamese_audio.training.data import open_training_inputs  # noqa: E402
from siamese_audio.training.embedder import TorchEmbedder  # noqa: E402
from siamese_audio.training.loop import fit, run_data_from_inputs  # noqa: E402

BASE = "cpu-esc50"
#: Every lever issue 20 tried, as overrides of the preset (which keeps none of them: none won on validation).
LEVERS_MODEL = {"embed_center": True, "tta_crops": 3, "tta_frames": 345}
LEVERS_TRAIN = {"ema_decay": 0.995, "center_clips": 512, "aux_weight": 0.5, "mix_prob": 0.5, "gain_db": 6.0,
                "tilt_db": 6.0, "shift_bands": 3, "stretch": 0.15}
LEVELS = {"gain_db": 6.0, "tilt_db": 6.0, "shift_bands": 3, "stretch": 0.15}
NO_LEVELS = {"gain_db": 0.0, "tilt_db": 0.0, "shift_bands": 0, "stretch": 0.0}


def _levers(what: str, model: dict | None = None, train: dict | None = None) -> tuple[str, dict, dict]:
    return what, {**LEVERS_MODEL, **(model or {})}, {**LEVERS_TRAIN, **(train or {})}


#: name -> (what changes, model overrides, train overrides), relative to the preset.
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "recipe": ("the preset as it is (bf16 steps, no extra levers)", {}, {}),
    "fp32": ("float32 steps instead of bf16 autocast", {}, {"precision": "fp32"}),
    "+aux": ("+ auxiliary classifier (0.5)", {}, {"aux_weight": 0.5}),
    "+aux1": ("+ auxiliary classifier (1.0)", {}, {"aux_weight": 1.0}),
    "+ema": ("+ weight average (0.995)", {}, {"ema_decay": 0.995}),
    "+aux+ema": ("+ auxiliary classifier (0.5) + weight average (0.995)", {}, {"aux_weight": 0.5,
                                                                              "ema_decay": 0.995}),
    "+mix": ("+ mixing with another class's clip (p 0.5, 5-20 dB)", {}, {"mix_prob": 0.5}),
    "+levels": ("+ gain, tilt, band shift, stretch", {}, LEVELS),
    "+tta": ("+ test-time crops (3 x 4 s)", {"tta_crops": 3, "tta_frames": 345}, {}),
    "+center": ("+ centring by the training clips' mean", {"embed_center": True}, {"center_clips": 512}),
    "k8": ("16 classes x 8 clips a batch", {}, {"classes_per_batch": 16, "clips_per_class": 8}),
    "p40": ("40 classes x 4 clips a batch", {}, {"classes_per_batch": 40}),
    "tau0.2": ("supcon temperature 0.2", {}, {"temperature": 0.2}),
    "tau0.3": ("supcon temperature 0.3", {}, {"temperature": 0.3}),
    "tau0.05": ("supcon temperature 0.05", {}, {"temperature": 0.05}),
    "wide": ("width 48-96-192-384", {"conv_filters": (48, 96, 192, 384)}, {}),
    "fc256": ("256-wide embedding", {"fc_units": 256}, {}),
    "drop": ("dropout 0.2 on the embedding", {"dropout_fc": 0.2}, {}),
    "wd": ("weight decay 5e-2", {}, {"weight_decay": 5e-2}),
    "crop2s": ("random 2.5 s crops (216 frames) instead of 4 s", {}, {"crop_frames": 216, "time_mask_frames": 22}),
    "crop3s": ("random 3 s crops (259 frames) instead of 4 s", {}, {"crop_frames": 259, "time_mask_frames": 26}),
    "lr1e-3": ("peak learning rate 1e-3 instead of 2e-3", {}, {"lr": 1e-3}),
    "lr4e-3": ("peak learning rate 4e-3 instead of 2e-3", {}, {"lr": 4e-3}),
    "views2": ("2 augmented views of 2 clips per class (same batch cost)", {}, {"clips_per_class": 2, "views": 2}),
    "views2k4": ("2 augmented views of each of the 4 clips per class (2x the batch)", {}, {"views": 2}),
    "inst": ("2 views of 2 clips per class + instance term (0.5)", {},
             {"clips_per_class": 2, "views": 2, "instance_weight": 0.5}),
    "levers": _levers("all the levers: EMA, test-time crops, centring, aux classifier, mixing, levels"),
    "levers-no-levels": _levers("all the levers but gain / tilt / band shift / stretch", train=NO_LEVELS),
    "levers-no-aux": _levers("all the levers but the auxiliary classifier", train={"aux_weight": 0.0}),
    "levers-no-mix": _levers("all the levers but mixing", train={"mix_prob": 0.0}),
    "levers-no-tta": _levers("all the levers but test-time crops", model={"tta_crops": 1, "tta_frames": 0}),
    "levers-no-center": _levers("all the levers but centring", model={"embed_center": False},
                                train={"center_clips": 0}),
}
#: The ``post:RUN:VARIANT`` re-scorings use a variant's model overrides on RUN's weights.


def split_seed(name: str) -> tuple[str, int]:
    """``"+aux@1"`` -> ``("+aux", 1)``: the variant trained with another seed (run-to-run noise)."""
    base, _, seed = name.partition("@")
    return base, int(seed or 0)


def configs(name: str, steps: int | None, tasks: int):
    """Model and training configs of variant ``name`` (``NAME@SEED``; ``steps`` shortens the schedule)."""
    name, seed = split_seed(name)
    _, model_changes, train_changes = VARIANTS[name]
    model, train = preset(BASE)
    model = dataclasses.replace(model, **model_changes)
    train = dataclasses.replace(train, **train_changes)
    if steps:
        scale = steps / train.max_epochs
        train = dataclasses.replace(train, max_epochs=steps, warmup_epochs=max(1, round(train.warmup_epochs * scale)),
                                    eval_every=max(1, steps // 4), patience=1000, max_minutes=0.0)
    return model, dataclasses.replace(train, eval_tasks=tasks, seed=seed)


def score(embedder, data, train, tasks: int) -> dict:
    """Accuracy on ``tasks`` validation tasks, its Wilson interval, and the raw baseline on the same tasks.

    The tasks are drawn with seed 0 whatever the training seed, so that every variant meets the same tasks.
    """
    runs = math.ceil(tasks / len(data.val_rows))
    common = dict(read=data.read, class_rows=data.val_rows, ways=train.ways, runs=runs, seed=0,
                  class_sources=data.val_sources)
    ours = evaluate_one_shot(embedder, **common)
    raw = evaluate_one_shot(RawCosineEmbedder(), **common)
    return {"accuracy": ours.accuracy, "ci95": list(ours.ci95), "n_tasks": ours.n_tasks, "baseline": raw.accuracy}


def post_variant(checkpoint: Path, data, tasks: int, model_changes: dict) -> dict:
    """Re-score a trained checkpoint with other test-time settings (no training).

    Turning centring on measures the mean embedding of the recipe's 512 training clips with these weights.
    """
    from siamese_audio.training.averaging import center_rows, embedding_mean
    from siamese_audio.training.model import SiameseNet

    payload = load_checkpoint(checkpoint)
    config = dataclasses.replace(model_config_from_dict(payload["model_config"]), **model_changes)
    state = {k: v for k, v in payload["model_state"].items() if k != "embed_mean"}
    model = SiameseNet(config, tuple(payload["input_shape"]))
    model.load_state_dict(state, strict=False)
    model.eval()
    if config.embed_center:
        _, train = preset(BASE)
        rows = center_rows(data.train_rows, train.center_clips, train.seed)
        model.set_embed_mean(embedding_mean(model, data.read, rows, torch.device("cpu")))
    embedder = TorchEmbedder(model, torch.device("cpu"))
    _, train = preset(BASE)
    return score(embedder, data, train, tasks)


def verdict(rows: list[dict]) -> list[str]:
    """Lines comparing each variant with the preset against the run-to-run noise (the preset's seed repeats)."""
    by_name = {r["variant"]: r["accuracy"] for r in rows}
    repeats = [acc for name, acc in by_name.items() if split_seed(name)[0] == "recipe" and not name.startswith("post:")]
    if "recipe" not in by_name or len(repeats) < 2:
        return ["", "Run-to-run noise not measured (add `recipe@1` to the variants)."]
    noise = max(repeats) - min(repeats)
    above = [f"`{n}` ({a:.3f})" for n, a in by_name.items() if split_seed(n)[0] != "recipe" and a > max(repeats) + 0.0]
    clear = [f"`{n}` ({a:.3f})" for n, a in by_name.items() if split_seed(n)[0] != "recipe"
             and a - by_name["recipe"] > noise]
    return ["", f"Run-to-run noise: the preset trained with {len(repeats)} seeds spans {min(repeats):.3f}-"
                f"{max(repeats):.3f} ({noise:.3f}). Variants above every seed of the preset: "
                f"{', '.join(above) or 'none'}; above the preset by more than that noise: {', '.join(clear) or 'none'}."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=Path, required="--list" not in sys.argv)
    parser.add_argument("--split", type=Path, required="--list" not in sys.argv)
    parser.add_argument("--variants", default="recipe,fp32")
    parser.add_argument("--steps", type=int, default=None, help="steps per variant (default: the preset's)")
    parser.add_argument("--tasks", type=int, default=2000, help="validation tasks (default 2000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-output/recipe"))
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--results-name", default="",
                        help="docs/results/<NAME>.md (default recipe-<split>: a second ablation keeps the first)")
    args = parser.parse_args()
    if args.list:
        for name, (what, m, t) in VARIANTS.items():
            print(f"{name:18s} {what}  model {m}  train {t}")
        return
    torch.set_num_threads(args.threads)
    data = run_data_from_inputs(open_training_inputs(args.features, args.split))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    results_file = args.out / "recipe.json"
    done = json.loads(results_file.read_text()) if results_file.exists() else {}
    for name in filter(None, args.variants.split(",")):
        if name in done:
            row = done[name]
        elif name.startswith("post:"):  # post:RUN_NAME:VARIANT re-scores RUN_NAME's final weights as VARIANT
            _, run_name, variant = name.split(":")
            row = post_variant(args.out / run_name / "final.pt", data, args.tasks, VARIANTS[variant][1])
            row.update(variant=name, what=f"{run_name} re-scored: {VARIANTS[variant][0]}", minutes=0.0,
                       steps=0, s_per_step=0.0)
            done[name] = row
            results_file.write_text(json.dumps(done, indent=1) + "\n")
        else:
            model, train = configs(name, args.steps, args.tasks)
            run_dir = args.out / name
            t0 = time.perf_counter()
            trained = fit(data, model, train, run_dir, device="cpu", resident=True,
                          resume=(run_dir / "last.pt").exists(), progress=True)
            minutes = (time.perf_counter() - t0) / 60
            # the final weights (the averaged ones where the variant averages): what a fixed-length run ends with
            last = load_checkpoint(run_dir / "last.pt")
            final = {**last, "kind": "best", "model_state": (last.get("ema_state") or last)["model_state"]}
            torch.save({k: v for k, v in final.items() if k not in ("optimizer_state", "rng_states", "ema_state")},
                       run_dir / "final.pt")
            embedder, _ = load_embedder(run_dir / "final.pt", "cpu")
            row = score(embedder, data, train, args.tasks)
            best = next(r for r in trained.history if r.epoch == trained.best_epoch)
            what = VARIANTS[split_seed(name)[0]][0] + (f" (seed {split_seed(name)[1]})" if "@" in name else "")
            row.update(variant=name, what=what, minutes=round(minutes, 2), steps=trained.epochs_run,
                       s_per_step=round(trained.elapsed_s / max(trained.epochs_run, 1), 3),
                       best_val=best.val_accuracy, best_step=trained.best_epoch)
            done[name] = row
            results_file.write_text(json.dumps(done, indent=1) + "\n")
        rows.append(row)
        print(json.dumps(row), flush=True)
    split_name = args.split.stem
    lines = [f"Variants of `{BASE}` trained {args.steps or 'the preset'} steps each (seed 0), final weights scored on "
             f"{args.tasks} 5-way one-shot tasks of the `{split_name}` split's validation classes (positives from "
             f"another recording); 95% Wilson intervals; baseline = raw log-mel cosine on the same tasks.", "",
             "| variant | change | validation accuracy | 95% CI | tasks | baseline | steps | s/step | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['what']} | **{r['accuracy']:.3f}** | [{r['ci95'][0]:.3f}, "
                     f"{r['ci95'][1]:.3f}] | {r['n_tasks']} | {r['baseline']:.3f} | {r['steps']} | "
                     f"{r['s_per_step']:.2f} | {r['minutes']:.1f} |")
    lines += verdict(rows)
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(args.results_name or f"recipe-{split_name}", text,
                  title=f"CPU recipe ablation on {split_name} validation classes")


if __name__ == "__main__":
    main()
