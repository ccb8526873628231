"""``siamese-audio demo``: the whole pipeline on an embedded default, end to end.

Generated audio in the AudioMNIST layout (or a real dataset with ``--data``) →
a sealed feature version (local Dask) → a seeded class split → a small network
trained with validation → C-way one-shot evaluation with a 95% CI, a baseline,
per-class accuracy, confusion matrix and accuracy-vs-C → figures → SINEX
explanations of a few of the evaluated test tasks (faithfulness, sanity check,
the first task sonified).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siamese_audio.errors import SiameseAudioError

log = logging.getLogger(__name__)

#: Evaluating classes of the demo's split (validation and test each), and the ways of its tasks.
N_EVAL = 5
#: Test tasks per class the demo evaluates (explained task ids refer to this draw).
EVAL_RUNS = 100


@dataclass(frozen=True)
class DemoConfig:
    """What ``demo`` runs on: generated audio under ``out`` unless ``data`` names a real dataset."""

    out: Path = Path("demo-output")
    data: Path | None = None
    dataset: str = "audiomnist"
    workers: int | None = None
    seed: int = 0
    max_epochs: int = 300
    device: str = "auto"
    explain_tasks: int = 3
    sonify: bool = True


@dataclass(frozen=True)
class DemoResult:
    """What the demo made: ``summary`` is what ``demo --json`` prints."""

    summary: dict[str, Any]

    def text(self) -> str:
        s = self.summary
        low, high = s["ci95"]
        val_low, val_high = s["best_val_ci95"]
        return "\n".join([
            f"feature version  {s['version_id']}  ({s['n_stored']} clips stored, {s['n_rejected']} rejected)",
            f"  store          {s['store']}",
            f"split            {s['split_id']}  {s['split']}",
            f"checkpoint       {s['checkpoint']}",
            f"validation       best {s['best_val_accuracy']:.3f}  95% Wilson CI [{val_low:.3f}, {val_high:.3f}]  "
            f"over {s['best_val_n_tasks']} tasks, at epoch {s['best_epoch']} ({s['epochs_run']} epochs run)",
            f"test accuracy    {s['accuracy']:.3f}  95% Wilson CI [{low:.3f}, {high:.3f}]  "
            f"over {s['n_tasks']} {N_EVAL}-way one-shot tasks",
            f"baseline         {s['baseline_accuracy']:.3f}  (cosine of raw log-mels, same tasks; "
            f"chance {1 / N_EVAL:.2f})",
            f"report           {s['report']}",
            *self._explain_lines(),
            "figures          " + "\n                 ".join(s["figures"]),
            f"took {s['seconds']} s",
        ])

    def _explain_lines(self) -> list[str]:
        e = self.summary.get("explain")
        if not e:
            return []
        lines = [f"explanations     SINEX of test tasks {e['task_ids']} -> {e['out_dir']}"]
        faith = e.get("faithfulness")
        if faith and faith["aopc_rho"]["mean"] is not None:
            lines.append(f"  faithfulness   AOPC by relevance {faith['aopc_rho']['mean']:.3f}, random orders "
                         f"{faith['aopc_random_mean']['mean']:.3f}, reverse {faith['aopc_reverse']['mean']:.3f} "
                         f"({faith['n_supports']} positive supports)")
        for stage in e.get("sanity", [])[-1:]:
            mean = stage["spearman_mean"]
            lines.append(f"  sanity check   all layers re-initialised: Spearman "
                         f"{'n/a' if mean is None else f'{mean:.2f}'} with the trained model's scores")
        return lines


def _source(cfg: DemoConfig, out: Path) -> tuple[str, Path]:
    """The dataset and its directory: ``cfg.data``, or audio generated under ``out`` (once)."""
    if cfg.data is not None:
        return cfg.dataset, cfg.data
    from siamese_audio.manifests.dummies import make_audiomnist

    source = out / "data" / "audiomnist"
    if not (source / "data").is_dir():
        log.info("[demo] generating 20 speakers x 12 clips of synthetic speech-like audio (AudioMNIST layout)")
        make_audiomnist(source, speakers=[f"{i:02d}" for i in range(1, 21)], digits=6, reps=2, seed=cfg.seed)
    return "audiomnist", source


def _split(dataset: str, classes: list[str], seed: int, out: Path):
    """A seeded random split keeping :data:`N_EVAL` classes each for validation and test."""
    from siamese_audio.manifests.splits import make_random_split, write_split

    sizes = (len(classes) - 2 * N_EVAL, N_EVAL, N_EVAL)
    split = make_random_split(dataset, seed=seed, sizes=sizes, classes=classes)
    path = write_split(split, out / "split.parquet")
    log.info(f"[demo] split {split.split_id}: {sizes[0]}/{sizes[1]}/{sizes[2]} classes -> {path}")
    return split, path


def _train(cfg: DemoConfig, version_path: Path, split_path: Path, run_dir: Path):
    """Train the ``tiny`` preset from scratch in ``run_dir``."""
    from siamese_audio.training.config import preset as training_preset
    from siamese_audio.training.data import open_training_inputs
    from siamese_audio.training.loop import fit, run_data_from_inputs

    model_cfg, train_cfg = training_preset("tiny")
    train_cfg = dataclasses.replace(train_cfg, max_epochs=cfg.max_epochs, eval_every=10, eval_tasks=100,
                                    patience=8, seed=cfg.seed)
    if (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir)
    log.info(f"[demo] training the 'tiny' network (max {train_cfg.max_epochs} epochs, "
             f"validation every {train_cfg.eval_every})")
    inputs = open_training_inputs(version_path, split_path)
    return fit(run_data_from_inputs(inputs), model_cfg, train_cfg, run_dir, device=cfg.device)


def _evaluate(cfg: DemoConfig, checkpoint: Path, version, split, split_path: Path, report_dir: Path):
    """Evaluate ``checkpoint`` on the split's test classes; write the report; return it and its files."""
    from siamese_audio.evaluation.reevaluate import SplitSource, evaluate_checkpoint
    from siamese_audio.evaluation.report import write_report
    from siamese_audio.evaluation.suite import EvaluationSettings
    from siamese_audio.training.checkpoint import load_embedder

    log.info(f"[demo] evaluating the best checkpoint on the test classes ({N_EVAL}-way one-shot)")
    embedder, meta = load_embedder(checkpoint, cfg.device)
    settings = EvaluationSettings(ways=N_EVAL, runs=EVAL_RUNS, seed=cfg.seed)
    report = evaluate_checkpoint(embedder, meta, version, [SplitSource(split=split, path=str(split_path))],
                                 settings, checkpoint=str(checkpoint), subset="test")
    return report, write_report(report, report_dir)


def _explain(cfg: DemoConfig, checkpoint: Path, version, split, split_path: Path, out_dir: Path):
    """SINEX of ``cfg.explain_tasks`` of the evaluated test tasks (same draw), the first one sonified."""
    from siamese_audio.evaluation.explain.run import ExplainSettings, explain_checkpoint
    from siamese_audio.evaluation.explain.segments import SegmenterConfig
    from siamese_audio.evaluation.reevaluate import SplitSource
    from siamese_audio.training.checkpoint import load_embedder
    from siamese_audio.training.embedder import randomisation_cascade

    log.info(f"[demo] explaining {cfg.explain_tasks} test tasks (SINEX, faithfulness, sanity check"
             f"{', first task sonified' if cfg.sonify else ''})")
    embedder, meta = load_embedder(checkpoint, cfg.device, autocast=False)
    settings = ExplainSettings(ways=N_EVAL, runs=EVAL_RUNS, seed=cfg.seed, n_tasks=cfg.explain_tasks,
                               segmenter=SegmenterConfig.defaults("sinex"), sonify=cfg.sonify, sonify_tasks=1,
                               sanity=True)
    return explain_checkpoint(embedder, meta, version, SplitSource(split=split, path=str(split_path)), settings,
                              out_dir=out_dir, checkpoint=str(checkpoint), subset="test",
                              cascade=randomisation_cascade(embedder, seed=cfg.seed))


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Generate (or take) audio, build, split, train, evaluate and draw the figures under ``cfg.out``."""
    from siamese_audio.features.figures import plot_logmel_examples
    from siamese_audio.features.store import open_version
    from siamese_audio.pipeline.build import BuildConfig, build

    t0 = time.perf_counter()
    out = cfg.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    dataset, source = _source(cfg, out)
    log.info(f"[demo] building the feature version of {source}")
    built = build(BuildConfig(dataset=dataset, source_dir=source, store_root=out / "store", seed=cfg.seed,
                              workers=cfg.workers, crop_long=cfg.data is not None))
    version = open_version(built.path)
    classes = version.classes()
    if len(classes) < 2 * N_EVAL + 2:
        raise SiameseAudioError(
            f"The demo needs at least {2 * N_EVAL + 2} classes with stored clips; {built.path} has {len(classes)}.")
    split, split_path = _split(dataset, classes, cfg.seed, out)
    run_dir, report_dir = out / "run", out / "report"
    trained = _train(cfg, built.path, split_path, run_dir)
    report, written = _evaluate(cfg, trained.best_checkpoint, version, split, split_path, report_dir)
    examples = plot_logmel_examples(version, out / "logmel_examples.png", classes=split.classes["test"])
    explained = (_explain(cfg, trained.best_checkpoint, version, split, split_path, out / "explain")
                 if cfg.explain_tasks > 0 else None)

    pooled = report.pooled()
    best = next((r for r in trained.history if r.epoch == trained.best_epoch), None)
    explain_figures = [explained.out_dir / f for f in explained.summary["figures"]] if explained else []
    figures = sorted(str(p) for p in [examples, *report_dir.rglob("*.png"), *run_dir.glob("*.png"),
                                      *explain_figures])
    summary: dict[str, Any] = {
        "dataset": dataset, "source": str(source), "store": str(built.path), "version_id": built.version_id,
        "n_stored": built.n_stored, "n_rejected": built.n_rejected,
        "split": str(split_path), "split_id": split.split_id, "checkpoint": str(trained.best_checkpoint),
        "best_val_accuracy": trained.best_val_accuracy,
        "best_val_ci95": [best.val_ci95_low, best.val_ci95_high] if best else [0.0, 0.0],
        "best_val_n_tasks": best.val_n_tasks if best else 0, "best_epoch": trained.best_epoch,
        "epochs_run": trained.epochs_run, "accuracy": pooled["accuracy"], "ci95": pooled["ci95"],
        "n_tasks": pooled["n_tasks"], "baseline_accuracy": pooled["baseline_accuracy"],
        "report": str(written.get("report.md", report_dir / "report.md")), "figures": figures,
        "explain": explained.summary if explained else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return DemoResult(summary)
