"""``siamese-audio demo``: the whole pipeline on an embedded default, end to end.

Generated audio in the AudioMNIST layout (or a real dataset with ``--data``) →
a sealed feature version (local Dask) → a class split (the report's for a
complete real dataset, else seeded random) → a network trained with validation
(``tiny`` on generated audio, in seconds; the dataset's CPU preset,
``cpu-esc50`` or ``cpu-audiomnist``, on real audio) → C-way one-shot evaluation
with a 95% CI, a baseline, per-class accuracy, confusion matrix and
accuracy-vs-C → a re-evaluation on regenerated splits of the classes the
checkpoint never saw (mean over splits with a t-interval, next to the pooled
Wilson interval) → figures → SINEX explanations of a few of the evaluated test
tasks (faithfulness, sanity check, the first task sonified).
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

#: The re-evaluation: splits regenerated from the classes the checkpoint never saw, and their size (= ways).
N_REGENERATED, REGENERATED_CLASSES = 5, 3


@dataclass(frozen=True)
class DemoConfig:
    """What ``demo`` runs on: generated audio under ``out`` unless ``data`` names a real dataset."""

    out: Path = Path("demo-output")
    data: Path | None = None
    dataset: str = "audiomnist"
    workers: int | None = None
    seed: int = 0
    max_epochs: int | None = None
    max_minutes: float | None = None
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
            f"over {s['best_val_n_tasks']} tasks, at epoch {s['best_epoch']} ({s['epochs_run']} epochs run in "
            f"{s['training_minutes']:.1f} min, stopped by {s['stopped']})",
            f"test accuracy    {s['accuracy']:.3f}  95% Wilson CI [{low:.3f}, {high:.3f}]  "
            f"over {s['n_tasks']} {N_EVAL}-way one-shot tasks",
            f"baseline         {s['baseline_accuracy']:.3f}  (cosine of raw log-mels, same tasks; "
            f"chance {1 / N_EVAL:.2f})",
            f"  seen classes   {_seen(s['overlap'])}",
            f"  positives      {s['positives']['description']}",
            f"  tied top score {s['n_tied_top']} of {s['n_tasks']} tasks (ranked by logits, never a saturating sigmoid)",
            f"report           {s['report']}",
            *_regenerated_lines(s["regenerated"]),
            *_explain_lines(s.get("explain")),
            "figures          " + "\n                 ".join(s["figures"]),
            f"took {s['seconds']} s",
        ])


def _seen(overlap: dict[str, dict[str, str]]) -> str:
    if not overlap:
        return "none: the test classes are neither training nor validation classes of the checkpoint"
    return "; ".join(", ".join(f"{c} ({how})" for c, how in classes.items()) for classes in overlap.values())


def _explain_lines(e: dict[str, Any] | None) -> list[str]:
    from siamese_audio.evaluation.explain.report import summary_lines

    if not e:
        return []
    return [f"explanations     SINEX of test tasks {e['task_ids']} -> {e['out_dir']}",
            *(f"  {line}" for line in summary_lines(e))]


def _regenerated_lines(r: dict[str, Any]) -> list[str]:
    head, pooled = r["headline"], r["pooled"]
    lines = [f"re-evaluation    {len(r['splits'])} regenerated splits of {REGENERATED_CLASSES} test classes "
             f"({REGENERATED_CLASSES}-way), drawn from the {r['n_unseen']} classes the checkpoint never saw"]
    lines += [f"  split {sp['split_id']}  [{', '.join(sp['classes'])}]  {sp['accuracy']:.3f}  "
              f"95% Wilson CI [{sp['ci95'][0]:.3f}, {sp['ci95'][1]:.3f}]" for sp in r["splits"]]
    lines += [
        f"  mean over splits {head['accuracy']:.3f}  95% t-interval over the {head['n_splits']} split means "
        f"[{head['ci95'][0]:.3f}, {head['ci95'][1]:.3f}]  sd {head['sd']:.3f}, min {head['min']:.3f}, "
        f"max {head['max']:.3f}",
        f"  pooled           {pooled['accuracy']:.3f}  95% Wilson CI of all {pooled['n_tasks']} tasks pooled as if "
        f"independent [{pooled['ci95'][0]:.3f}, {pooled['ci95'][1]:.3f}] (too narrow)",
        f"  report         {r['report']}",
    ]
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


def _split(dataset: str, classes: list[str], seed: int, out: Path, *, real: bool):
    """The report's split when every one of its classes is stored (real data), else a seeded random split
    keeping :data:`N_EVAL` classes each for validation and test."""
    from siamese_audio.manifests.splits import make_random_split, make_report_split, write_split

    split = make_report_split(dataset) if real else None
    if split is None or not set(split.all_classes()) <= set(classes):
        sizes = (len(classes) - 2 * N_EVAL, N_EVAL, N_EVAL)
        split = make_random_split(dataset, seed=seed, sizes=sizes, classes=classes)
    path = write_split(split, out / "split.parquet")
    sizes = split.sizes
    log.info(f"[demo] {split.scheme} split {split.split_id}: {sizes[0]}/{sizes[1]}/{sizes[2]} classes -> {path}")
    return split, path


def training_configs(cfg: DemoConfig, dataset: str):
    """``tiny`` (seconds) on generated audio; the dataset's CPU preset on real audio. Returns (name, model, train)."""
    from siamese_audio.training.config import preset as training_preset

    if cfg.data is None:
        name = "tiny"
        model_cfg, train_cfg = training_preset(name)
        train_cfg = dataclasses.replace(train_cfg, max_epochs=cfg.max_epochs or 300, eval_every=10, eval_tasks=100,
                                        patience=8)
    else:
        name = f"cpu-{dataset}"
        model_cfg, train_cfg = training_preset(name)
        if cfg.max_epochs is not None:
            train_cfg = dataclasses.replace(train_cfg, max_epochs=cfg.max_epochs)
    train_cfg = dataclasses.replace(train_cfg, seed=cfg.seed)
    if cfg.max_minutes is not None:
        train_cfg = dataclasses.replace(train_cfg, max_minutes=cfg.max_minutes)
    return name, model_cfg, train_cfg


def _train(cfg: DemoConfig, dataset: str, version_path: Path, split_path: Path, run_dir: Path):
    """Train from scratch in ``run_dir`` (:func:`training_configs`)."""
    from siamese_audio.training.data import open_training_inputs
    from siamese_audio.training.loop import fit, run_data_from_inputs

    name, model_cfg, train_cfg = training_configs(cfg, dataset)
    if (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir)
    budget = f", at most {train_cfg.max_minutes:g} minutes" if train_cfg.max_minutes else ""
    log.info(f"[demo] training the {name!r} network (max {train_cfg.max_epochs} epochs{budget}, "
             f"validation every {train_cfg.eval_every})")
    inputs = open_training_inputs(version_path, split_path)
    return fit(run_data_from_inputs(inputs), model_cfg, train_cfg, run_dir, device=cfg.device,
               resident=cfg.data is not None)


def _eval_runs(cfg: DemoConfig) -> int:
    """Test tasks per class of the demo's evaluation (explained task ids refer to this draw)."""
    return 100 if cfg.data is None else 200


def _evaluate(cfg: DemoConfig, checkpoint: Path, version, split_path: Path, report_dir: Path):
    """Evaluate ``checkpoint`` on the split's test classes; write the report; return it and its files."""
    from siamese_audio.evaluation.reevaluate import evaluate_checkpoint
    from siamese_audio.evaluation.report import write_report
    from siamese_audio.evaluation.suite import EvaluationSettings
    from siamese_audio.training.inputs import open_inputs

    log.info(f"[demo] evaluating the best checkpoint on the test classes ({N_EVAL}-way one-shot)")
    inputs = open_inputs(checkpoint, version, [split_path], device=cfg.device)
    settings = EvaluationSettings(ways=N_EVAL, runs=_eval_runs(cfg), seed=cfg.seed)
    report = evaluate_checkpoint(inputs.embedder, inputs.meta, version, inputs.sources, settings,
                                 checkpoint=str(checkpoint), subset="test")
    return report, write_report(report, report_dir)


def _explain(cfg: DemoConfig, checkpoint: Path, version, split_path: Path, out_dir: Path):
    """SINEX of ``cfg.explain_tasks`` of the evaluated test tasks (the same draw), the first one sonified."""
    from siamese_audio.evaluation.explain.run import ExplainSettings, explain_checkpoint
    from siamese_audio.training.embedder import randomisation_cascade
    from siamese_audio.training.inputs import open_inputs

    log.info(f"[demo] explaining {cfg.explain_tasks} test tasks (SINEX, faithfulness, sanity check"
             f"{', first task sonified' if cfg.sonify else ''})")
    inputs = open_inputs(checkpoint, version, [split_path], device=cfg.device, precision="fp32")
    settings = ExplainSettings(ways=N_EVAL, runs=_eval_runs(cfg), seed=cfg.seed, n_tasks=cfg.explain_tasks,
                               sonify=cfg.sonify, sonify_tasks=1, sanity=True)
    return explain_checkpoint(inputs.embedder, inputs.meta, version, inputs.sources[0], settings,
                              out_dir=out_dir, checkpoint=str(checkpoint), subset="test",
                              cascade=randomisation_cascade(inputs.embedder, seed=cfg.seed))


def _reevaluate(cfg: DemoConfig, checkpoint: Path, version, report_dir: Path) -> dict[str, Any]:
    """``evaluate --regenerate``: splits of the classes the checkpoint neither trained nor validated on."""
    from siamese_audio.evaluation.planning import regenerate_splits
    from siamese_audio.evaluation.reevaluate import evaluate_checkpoint
    from siamese_audio.evaluation.report import write_report
    from siamese_audio.evaluation.suite import EvaluationSettings
    from siamese_audio.training.inputs import open_inputs

    inputs = open_inputs(checkpoint, version, device=cfg.device)
    embedder, meta = inputs.embedder, inputs.meta
    log.info(f"[demo] re-evaluating on {N_REGENERATED} regenerated splits of {REGENERATED_CLASSES} unseen classes")
    sources, notes = regenerate_splits(version, meta["training_classes"], validation_classes=meta["validation_classes"],
                                       k=N_REGENERATED, seed=cfg.seed, n_classes=REGENERATED_CLASSES)
    settings = EvaluationSettings(ways=REGENERATED_CLASSES, runs=100, seed=cfg.seed)
    report = evaluate_checkpoint(embedder, meta, version, sources, settings, checkpoint=str(checkpoint),
                                 subset="test", notes=notes)
    written = write_report(report, report_dir)
    seen = set(meta["training_classes"]) | set(meta["validation_classes"])
    summary = report.summary()
    return {
        "n_unseen": len([c for c in version.classes() if c not in seen]),
        "headline": summary["headline"], "pooled": summary["pooled"], "splits": summary["splits"],
        "report": str(written["report.md"]),
    }


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
    split, split_path = _split(dataset, classes, cfg.seed, out, real=cfg.data is not None)
    run_dir, report_dir = out / "run", out / "report"
    trained = _train(cfg, dataset, built.path, split_path, run_dir)
    report, written = _evaluate(cfg, trained.best_checkpoint, version, split_path, report_dir)
    regenerated = _reevaluate(cfg, trained.best_checkpoint, version, out / "report-regenerated")
    examples = plot_logmel_examples(version, out / "logmel_examples.png", classes=split.classes["test"])
    explained = (_explain(cfg, trained.best_checkpoint, version, split_path, out / "explain")
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
        "epochs_run": trained.epochs_run, "training_minutes": round(trained.elapsed_s / 60, 2),
        "stopped": trained.stopped, "accuracy": pooled["accuracy"], "ci95": pooled["ci95"],
        "n_tasks": pooled["n_tasks"], "baseline_accuracy": pooled["baseline_accuracy"],
        "n_tied_top": report.ties()["n_tied_top"], "positives": report.positives(), "overlap": report.overlap(),
        "regenerated": regenerated,
        "report": str(written.get("report.md", report_dir / "report.md")), "figures": figures,
        "explain": explained.summary if explained else None,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return DemoResult(summary)
