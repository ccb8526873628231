"""``tune`` speed and pruning, measured side by side in one run on generated data.

(a) Trials per hour with 2 local workers against 1 (one trial per worker process). tune's
    default gives each trial the cores of its worker: 1 worker trains with 2 torch threads
    on 2 cores; 1 worker with 1 thread is measured too (process parallelism alone). The
    space draws only the learning rate, so every trial costs the same (no pruning, no early
    stop). Both the whole command (cluster start and stop, outputs) and the trials' own span
    (first trial start to last trial end, from the study) are given. Target: >= 1.8x.
(b) Pruning against no pruning on the same trial budget, same seed, the default space
    (Table 2.2 on the ``tiny`` preset) with the report's tuning patience (10 validations)
    and a short schedule, 2 workers: epochs spent over all trials, and the best validation
    accuracy each study found with its 95% interval and tasks. Both pruners (median and
    successive halving) are run, for each of ``--seeds``. Target: pruning spends >= 40%
    fewer epochs for a best within (or above) the interval of the other's.
(c) Why this pruner: pruner settings replayed on the no-pruning study's learning curves (the
    same trials for each, in the order they ran), epochs spent and the best kept.

    nice -n 10 .venv/bin/python benchmarks/bench_tune.py [--speed-trials 8] [--repeats 2] [--prune-trials 16]
        [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.manifests.splits import make_random_split, write_split
from siamese_audio.training.tune import TuneConfig, default_space, open_run_data, tune

SPEED_SPACE = """preset = "tiny"
[train]
lr = {{ low = 1e-3, high = 1e-2, log = true }}
max_epochs = {epochs}
eval_every = {eval_every}
eval_tasks = {eval_tasks}
patience = 1000
"""

def make_data(root: Path, classes: int, clips: int, separation: float) -> tuple[Path, Path]:
    names = [f"{i:02d}" for i in range(1, classes + 1)]
    version = make_synthetic_version(root, dataset="audiomnist", classes=names, clips_per_class=clips,
                                     shape=(16, 24), seed=5, separation=separation)
    n_val, n_test = 8, 2
    split = make_random_split("audiomnist", seed=0, sizes=(classes - n_val - n_test, n_val, n_test), classes=names)
    return version, write_split(split, root / "split.parquet")


def trial_stats(out: Path) -> tuple[float, float]:
    """Seconds from the first trial's start to the last one's end (the study's own clock), and the
    mean CPU seconds of a trial's worker process."""
    import optuna

    from siamese_audio.training.tune.trial import STUDY_NAME, journal_storage

    trials = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(out)).trials
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return span, sum(t.user_attrs["cpu_seconds"] for t in trials) / len(trials)


#: Pruner settings replayed on the curves of the no-pruning study: (name, make_pruner's kind, settings).
REPLAYED = (("median, 2 start-up, from validation 1", "median", {"n_startup_trials": 2, "warmup": 1}),
            ("median, 5 start-up, from validation 1", "median", {"n_startup_trials": 5, "warmup": 1}),
            ("median, 5 start-up, from validation 2", "median", {"n_startup_trials": 5, "warmup": 2}),
            ("halving, rungs from validation 1, 1/3 kept", "halving", {"min_validations": 1, "rf": 3}),
            ("halving, rungs from validation 2, 1/3 kept", "halving", {"min_validations": 2, "rf": 3}),
            ("halving, rungs from validation 2, 1/2 kept", "halving", {"min_validations": 2, "rf": 2}))


def replay(out: Path, eval_every: int) -> list[str]:
    """Replay pruners on the learning curves of a no-pruning study, trial by trial in the order they
    started: the epochs each would have spent and the best completed trial each would have kept (same
    trials for every pruner, so TPE's draws do not differ between them)."""
    import optuna

    from siamese_audio.training.tune.trial import STUDY_NAME, journal_storage

    trials = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(out)).trials
    full = sum(t.user_attrs["epochs"] for t in trials)
    best_all = max(trials, key=lambda t: (t.value, -t.number))
    lines = [f"(c) replay on the {len(trials)} no-pruning trials ({full} epochs; best trial {best_all.number}: "
             f"{best_all.value:.3f} [{best_all.user_attrs['ci95'][0]:.3f}, {best_all.user_attrs['ci95'][1]:.3f}])"]
    for label, kind, cfg in REPLAYED:
        if kind == "median":
            pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg["n_startup_trials"],
                                                 n_warmup_steps=cfg["warmup"] * eval_every)
        else:
            pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=cfg["min_validations"] * eval_every,
                                                            reduction_factor=cfg["rf"])
        study = optuna.create_study(direction="maximize", pruner=pruner)
        spent, completed, found = 0, 0, []  # found: (best validation so far, trial number)
        for t in sorted(trials, key=lambda t: t.datetime_start):
            trial = study.ask()
            curve = sorted(t.intermediate_values.items())
            for step, value in curve:
                trial.report(value, step)
                if step < curve[-1][0] and trial.should_prune():
                    spent += step
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    found.append((max(v for s, v in curve if s <= step), t.number))
                    break
            else:
                spent += t.user_attrs["epochs"]
                study.tell(trial, max(v for _, v in curve))
                found.append((max(v for _, v in curve), t.number))
                completed += 1
        value, number = max(found, key=lambda f: (f[0], -f[1]))
        lo = best_all.user_attrs["ci95"][0]
        lines.append(f"(c)   {label:44s}: {100 * (1 - spent / full):3.0f}% fewer epochs, {completed:2d} completed, "
                     f"best {value:.3f} (trial {number}): {'within' if value >= lo else 'BELOW'} the no-pruning "
                     "best's interval")
    return lines


def run(out: Path, version: Path, split: Path, space, *, trials: int, workers: int, pruner: str, seed: int,
        threads: int | None = None):
    start = time.perf_counter()
    result = tune(TuneConfig(out=out, features=version, split=split, space=space, trials=trials, workers=workers,
                             threads=threads, pruner=pruner, seed=seed, progress=False))
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed-trials", type=int, default=8)
    parser.add_argument("--speed-epochs", type=int, default=40)
    parser.add_argument("--prune-trials", type=int, default=16)
    parser.add_argument("--prune-epochs", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--separation", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of the speed runs")
    parser.add_argument("--seeds", default="0", help="sampler seeds of the pruning runs, e.g. 0,1")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of the speed runs")
    parser.add_argument("--pruners", default="median,halving")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        root = Path(tmp)
        version, split = make_data(root, classes=40, clips=10, separation=args.separation)
        print(f"data: 40 generated classes x 10 clips, 16 x 24, split 30/8/2, separation {args.separation}")

        if not args.skip_speed:
            space = root / "speed.toml"
            space.write_text(SPEED_SPACE.format(epochs=args.speed_epochs, eval_every=args.eval_every,
                                                eval_tasks=args.eval_tasks))
            configs = (("1 worker x 2 threads", 1, None), ("1 worker x 1 thread", 1, 1),
                       ("2 workers x 1 thread", 2, None))
            rows: dict[str, list[tuple[float, float, float]]] = {label: [] for label, _, _ in configs}
            for repeat in range(args.repeats):  # interleaved: the machine's load drifts
                for label, workers, threads in configs:
                    out = root / f"speed-{workers}-{threads}-{repeat}"
                    load = os.getloadavg()[0]
                    result, wall = run(out, version, split, space, trials=args.speed_trials, workers=workers,
                                       threads=threads, pruner="none", seed=args.seed)
                    span, cpu = trial_stats(out)
                    rows[label].append((wall, span, cpu))
                    print(f"(a) {label}: {args.speed_trials} trials of {args.speed_epochs} epochs; whole command "
                          f"{wall:.1f} s = {3600 * args.speed_trials / wall:.0f} trials/h; trials' span {span:.1f} s "
                          f"= {3600 * args.speed_trials / span:.0f} trials/h; {cpu:.1f} CPU-s per trial; "
                          f"load average {load:.1f} at start", flush=True)
            two = rows["2 workers x 1 thread"]
            for label in ("1 worker x 2 threads", "1 worker x 1 thread"):
                whole = [one[0] / both[0] for one, both in zip(rows[label], two)]
                span = [one[1] / both[1] for one, both in zip(rows[label], two)]
                print(f"(a) 2 workers vs {label}: trials/h x{min(whole):.2f}-{max(whole):.2f} whole command, "
                      f"x{min(span):.2f}-{max(span):.2f} trials' span (target >= 1.8x)")

        data = open_run_data(str(version), str(split))
        space = default_space("tiny", shape=data.shape, train_rows=data.train_rows)
        space = dataclasses.replace(space, train=dataclasses.replace(
            space.train, max_epochs=args.prune_epochs, eval_every=args.eval_every, eval_tasks=args.eval_tasks,
            patience=args.patience))
        for seed in [int(x) for x in args.seeds.split(",")]:
            found = {}
            for pruner in ["none", *args.pruners.split(",")]:
                result, wall = run(root / f"prune-{pruner}-{seed}", version, split, space, trials=args.prune_trials,
                                   workers=2, pruner=pruner, seed=seed)
                best = result.best
                found[pruner] = (result.epochs, best)
                ci = best["ci95"]
                print(f"(b) seed {seed}, pruner {pruner:8s}: {args.prune_trials} trials ({result.counts}), "
                      f"{result.epochs} epochs, {wall:.0f} s; best trial {best['number']}: {best['value']:.3f} "
                      f"[{ci[0]:.3f}, {ci[1]:.3f}] ({best['n_tasks']} tasks)", flush=True)
            for line in replay(root / f"prune-none-{seed}", args.eval_every):
                print(line, flush=True)
            epochs_none, best_none = found["none"]
            for pruner in args.pruners.split(","):
                epochs, best = found[pruner]
                if best["value"] > best_none["ci95"][1]:
                    verdict = "above the other's 95% interval"
                elif best["value"] >= best_none["ci95"][0]:
                    verdict = "within the other's 95% interval"
                else:
                    verdict = "BELOW the other's 95% interval"
                print(f"(b) seed {seed}, {pruner} vs none: {100 * (1 - epochs / epochs_none):.0f}% fewer epochs "
                      f"({epochs} vs {epochs_none}; target >= 40%); best {best['value']:.3f} vs "
                      f"{best_none['value']:.3f}: {verdict}", flush=True)

if __name__ == "__main__":
    main()
