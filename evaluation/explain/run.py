"""Explain a checkpoint's one-shot decisions on evaluate's own tasks, and write the files.

Tasks are evaluate's: the split's evaluating rows and their source recordings
(:func:`~evaluation.planning.plan_split`), laid out by
:func:`~evaluation.tasks.make_pool` and drawn by :func:`~evaluation.tasks.draw_tasks`
with the same C, runs, seed and positive rule (``same_source_ok``), so task 17
here is task 17 of ``evaluate`` with those settings (its ``tasks.csv``). The same
refusals as ``evaluate`` apply (the checkpoint's training or validation classes
among the evaluating ones, a feature version computed differently, an input
shape the network cannot take).

Every clip the explained tasks use is read and embedded once (queries and
supports share that cache); each task's perturbations then go through one
batched queue (:mod:`evaluation.explain.engine`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siamese_audio import versions
from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import check_batch_size, embed_rows
from siamese_audio.evaluation.explain.faithfulness import FaithfulnessConfig, summarize_faithfulness
from siamese_audio.evaluation.explain.figures import plot_faithfulness, plot_overlay, plot_task
from siamese_audio.evaluation.explain.methods import MethodConfig
from siamese_audio.evaluation.explain.perturb import Fill, parse_fill
from siamese_audio.evaluation.explain.report import (
    EXPLAIN_JSON,
    FAITHFULNESS_CSV,
    FAITHFULNESS_PNG,
    FORMAT,
    RELEVANCE_NOTE,
    finite_or_none,
    run_summary,
    task_record,
    task_stem,
    write_faithfulness_csv,
    write_task_arrays,
)
from siamese_audio.evaluation.explain.sanity import SanityTask, run_sanity, sinex_on, summarize_sanity
from siamese_audio.evaluation.explain.segments import SegmenterConfig
from siamese_audio.evaluation.explain.task import TaskExplanation, TaskInputs, explain_task, faithfulness_columns
from siamese_audio.evaluation.planning import (
    SUBSETS,
    SplitSource,
    VersionLike,
    check_compatible,
    check_meta,
    plan_split,
)
from siamese_audio.evaluation.tasks import OneShotTasks, check_runs, draw_tasks, make_pool, validate_ways_runs
from siamese_audio.features.config import FeatureConfig
from siamese_audio.files import write_json_atomic


@dataclass(frozen=True)
class ExplainSettings:
    """What to explain and how (the ``explain`` subcommand's options).

    Attributes
    ----------
    ways, runs, seed : int
        evaluate's ``--ways``, ``--runs`` and ``--seed``: they fix the tasks and their ids.
    same_source_ok : bool
        evaluate's ``--same-source-ok`` (positives from the query's own recording allowed).
    task_ids : tuple[int, ...] or None
        Tasks to explain (ids in evaluate's draw); None: ``n_tasks`` spread evenly over the draw.
    n_tasks : int
    method : MethodConfig
    segmenter : SegmenterConfig
    fill : "floor" or float
    top_k : int
        Segments outlined in the overlays and kept in the sonified clips.
    sonify : bool
    sonify_tasks : int or None
        Sonify only the first this many explained tasks (None: all).
    faithfulness : FaithfulnessConfig
    sanity : bool
        Run the model-parameter randomisation check (needs a cascade from the shell).
    batch_size : int
        Perturbed spectrograms per embedding call.
    """

    ways: int = 5
    runs: int = 60
    seed: int = 0
    same_source_ok: bool = False
    task_ids: tuple[int, ...] | None = None
    n_tasks: int = 5
    method: MethodConfig = field(default_factory=MethodConfig)
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    fill: Fill = "floor"
    top_k: int = 3
    sonify: bool = True
    sonify_tasks: int | None = None
    faithfulness: FaithfulnessConfig = field(default_factory=FaithfulnessConfig)
    sanity: bool = False
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("ways", "runs", "n_tasks", "top_k", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EvaluationError(f"Expected {name} to be a positive integer. Got {value!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise EvaluationError(f"Expected seed to be a non-negative integer. Got {self.seed!r}.")
        if self.task_ids is not None and (not self.task_ids or any(
                isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in self.task_ids)):
            raise EvaluationError(f"Expected task ids to be non-negative integers. Got {self.task_ids!r}.")
        if self.sonify_tasks is not None and (not isinstance(self.sonify_tasks, int) or self.sonify_tasks < 0):
            raise EvaluationError(f"Expected sonify_tasks to be a non-negative integer. Got {self.sonify_tasks!r}.")
        check_runs(self.runs)
        check_batch_size(self.batch_size)
        object.__setattr__(self, "fill", parse_fill(self.fill))

    def to_dict(self) -> dict[str, Any]:
        return {
            "ways": self.ways, "runs": self.runs, "seed": self.seed, "same_source_ok": self.same_source_ok,
            "task_ids": None if self.task_ids is None else list(self.task_ids), "n_tasks": self.n_tasks,
            **self.method.to_dict(), "segmenter": self.segmenter.to_dict(),
            "fill": self.fill if self.fill == "floor" else float(self.fill),
            "fill_rule": ("each support's own floor: max(its max - top_db, its min)" if self.fill == "floor"
                          else f"constant {float(self.fill)} dB"),
            "top_k": self.top_k, "sonify": self.sonify, "sonify_tasks": self.sonify_tasks,
            "faithfulness": self.faithfulness.to_dict(), "sanity": self.sanity, "batch_size": self.batch_size,
            "relevance": RELEVANCE_NOTE,
        }


def select_tasks(n_total: int, settings: ExplainSettings) -> tuple[int, ...]:
    """The ids to explain: ``settings.task_ids`` (checked), or ``n_tasks`` spread evenly over ``0..n_total-1``.

    Spread evenly, consecutive ids fall in different classes (evaluate orders its
    tasks class after class).
    """
    if settings.task_ids is not None:
        bad = [t for t in settings.task_ids if t >= n_total]
        if bad:
            raise EvaluationError(f"Expected task ids from 0 to {n_total - 1} ({n_total} tasks drawn: classes x "
                                  f"--runs {settings.runs}). Got {bad}.")
        return tuple(dict.fromkeys(int(t) for t in settings.task_ids))
    n = min(settings.n_tasks, n_total)
    return tuple(int(t) for t in np.unique(np.linspace(0, n_total - 1, n).round().astype(np.int64)))


@dataclass(frozen=True, eq=False)
class ExplainResult:
    """What ``explain`` wrote and its headline numbers (``summary`` is what ``--json`` prints)."""

    out_dir: Path
    summary: dict[str, Any]
    record: dict[str, Any]


def _clip_ids(version: VersionLike) -> dict[int, str]:
    stored = version.stored()
    return dict(zip(stored["row"].astype(int).tolist(), stored["clip_id"].astype(str).tolist()))


def explain_checkpoint(
    embedder: Embedder,
    meta: Mapping[str, Any],
    version: VersionLike,
    source: SplitSource,
    settings: ExplainSettings,
    *,
    out_dir: str | Path,
    checkpoint: str,
    subset: str = "test",
    allow_overlap: bool = False,
    allow_feature_mismatch: bool = False,
    cascade: Iterable[tuple[str, Embedder]] | None = None,
    progress: bool = False,
) -> ExplainResult:
    """Explain evaluate's tasks ``settings.task_ids`` of ``source``'s ``subset`` classes; write ``out_dir``.

    Parameters
    ----------
    embedder : Embedder
        The checkpoint's network (on CUDA the shell hands one that runs in float32).
    meta : mapping
        The checkpoint's description (as ``evaluate`` gets it).
    version : VersionLike
    source : SplitSource
    settings : ExplainSettings
    out_dir : str or Path
    checkpoint : str
        Recorded in explain.json.
    subset : str
        ``"test"`` or ``"validation"``.
    allow_overlap, allow_feature_mismatch : bool
        As ``evaluate``'s (the run's notes say so).
    cascade : iterable of (str, Embedder), optional
        Model-parameter randomisation stages (required when ``settings.sanity``).
    progress : bool
        tqdm progress bar over tasks on stderr.

    Raises
    ------
    EvaluationError
        The refusals of ``evaluate``; task ids beyond the draw; ``sanity`` without a cascade.
    """
    t_start = time.perf_counter()
    if settings.sanity and cascade is None:
        raise EvaluationError("The sanity check needs a randomisation cascade of the model; none was given.")
    prepared = _prepare(meta, version, source, settings, checkpoint=checkpoint, subset=subset,
                        allow_overlap=allow_overlap, allow_feature_mismatch=allow_feature_mismatch)
    out_dir = Path(out_dir)
    (out_dir / "tasks").mkdir(parents=True, exist_ok=True)
    records, faith_rows, sanity_tasks = _explain_tasks(embedder, version, prepared, settings, out_dir,
                                                       progress=progress)

    sanity = None
    if settings.sanity:
        sanity_rows = run_sanity(cascade, sanity_tasks, batch_size=settings.batch_size)
        sanity = {"threshold": 0.5, "stages": summarize_sanity(sanity_rows, n_boot=settings.faithfulness.n_boot,
                                                                seed=settings.seed),
                  "rows": [r.to_dict() for r in sanity_rows],
                  "flagged": [r.to_dict() for r in sanity_rows if r.flagged]}
    faith_summary = None
    if faith_rows:
        write_faithfulness_csv(out_dir / FAITHFULNESS_CSV, faith_rows)
        plot_faithfulness(out_dir / FAITHFULNESS_PNG, faith_rows)
        faith_summary = summarize_faithfulness(faith_rows, n_boot=settings.faithfulness.n_boot, seed=settings.seed)

    record = _run_record(meta, version, source, settings, prepared, checkpoint=checkpoint, subset=subset,
                         allow_overlap=allow_overlap, allow_feature_mismatch=allow_feature_mismatch,
                         records=records, faithfulness=faith_summary, sanity=sanity,
                         seconds=time.perf_counter() - t_start)
    write_json_atomic(out_dir / EXPLAIN_JSON, record)
    return ExplainResult(out_dir=out_dir, summary=finite_or_none(run_summary(record, out_dir)), record=record)


@dataclass(frozen=True, eq=False)
class _Prepared:
    """The checked plan of one explain run: its tasks, the ids to explain, the notes and the features' config."""

    tasks: OneShotTasks
    ids: tuple[int, ...]
    notes: list[str]
    overlap: dict[str, Any]
    config: FeatureConfig


def _prepare(meta: Mapping[str, Any], version: VersionLike, source: SplitSource, settings: ExplainSettings, *,
             checkpoint: str, subset: str, allow_overlap: bool, allow_feature_mismatch: bool) -> _Prepared:
    """evaluate's refusals, then its tasks (same draw) and the ids to explain; nothing is read or written."""
    check_meta(meta, checkpoint)
    if subset not in SUBSETS:
        raise EvaluationError(f"Expected --subset among {list(SUBSETS)}. Got {subset!r}.")
    check_batch_size(settings.batch_size, version.shape, option="--batch-size")
    notes = check_compatible(meta, version, checkpoint=checkpoint, allow_feature_mismatch=allow_feature_mismatch)
    if "validation_classes" not in meta:
        notes.append(f"{checkpoint} does not record its validation classes: only its training classes "
                     f"could be kept out of the explained classes.")
    plan = plan_split(source, version, meta, subset=subset, allow_overlap=allow_overlap, notes=notes)
    pool = make_pool(plan.rows, plan.sources)
    validate_ways_runs(settings.ways, settings.runs, len(pool.classes))
    tasks = draw_tasks(pool, ways=settings.ways, runs=settings.runs, seed=settings.seed,
                       same_source_ok=settings.same_source_ok)
    return _Prepared(tasks=tasks, ids=select_tasks(tasks.n_tasks, settings), notes=notes,
                     overlap=dict(plan.overlap), config=FeatureConfig.from_dict(dict(version.feature_config)))


def _explain_tasks(embedder: Embedder, version: VersionLike, prepared: _Prepared, settings: ExplainSettings,
                   out_dir: Path, *, progress: bool) -> tuple[list[dict[str, Any]], list[Any], list[SanityTask]]:
    """Explain each selected task and write its files; returns (task records, faithfulness rows, sanity tasks).

    Every clip the tasks use is read and embedded once (the evaluation's cache).
    """
    tasks, ids, config = prepared.tasks, prepared.ids, prepared.config
    pool = tasks.pool
    used = np.unique(np.concatenate([tasks.query[list(ids)], tasks.support[list(ids)].ravel()]))
    (cache,) = embed_rows([embedder], version.read, pool.rows[used], batch_size=settings.batch_size)
    position = {int(p): i for i, p in enumerate(used)}
    clip_ids = _clip_ids(version)

    from tqdm import tqdm

    records, faith_rows, sanity_tasks, sonified = [], [], [], 0
    for t in tqdm(ids, desc="explain", unit="task", file=sys.stderr, disable=not progress, dynamic_ncols=True):
        clips = np.concatenate([[tasks.query[t]], tasks.support[t]])
        images = version.read(pool.rows[clips]).astype(np.float32)
        if not np.isfinite(images).all():
            raise EvaluationError(f"Task {t}: expected finite log-mels; store rows {pool.rows[clips].tolist()} "
                                  f"hold NaN or infinity.")
        emb = cache[[position[int(p)] for p in clips]]
        v = np.asarray(embedder.similarity(np.repeat(emb[:1], settings.ways, axis=0), emb[1:]), dtype=np.float64)
        inputs = TaskInputs(task=t, query=images[0], supports=images[1:], query_embedding=emb[0], v=v,
                            positive=int(tasks.positive[t]))
        result = explain_task(embedder, inputs, method=settings.method, segmenter=settings.segmenter,
                              fill=settings.fill, top_db=config.top_db, faithfulness=settings.faithfulness,
                              seed=settings.seed, batch_size=settings.batch_size, top_k=settings.top_k)
        record = task_record(result, tasks, t, clip_ids, config)
        record["files"] = _write_task_files(out_dir, result, tasks, t, settings, config)
        if settings.sonify and (settings.sonify_tasks is None or sonified < settings.sonify_tasks):
            from siamese_audio.evaluation.explain.sonify import sonify_task

            audio_dir = out_dir / "audio" / task_stem(t)
            record["sonification"] = sonify_task(audio_dir, images[0], images[1:], result.explanations,
                                                 top_k=settings.top_k, config=config, seed=settings.seed, task=t)
            record["files"]["audio"] = str(audio_dir.relative_to(out_dir))
            sonified += 1
        records.append(record)
        faith_rows.extend(result.faithfulness)
        if settings.sanity:
            sanity_tasks.append(_sanity_task(embedder, result, settings))
    return records, faith_rows, sanity_tasks


def _run_record(meta: Mapping[str, Any], version: VersionLike, source: SplitSource, settings: ExplainSettings,
                prepared: _Prepared, *, checkpoint: str, subset: str, allow_overlap: bool,
                allow_feature_mismatch: bool, records: list[dict[str, Any]], faithfulness: Any, sanity: Any,
                seconds: float) -> dict[str, Any]:
    """explain.json's content (non-finite numbers as null)."""
    tasks = prepared.tasks
    record = {
        "format": FORMAT, "checkpoint": str(checkpoint), "dataset": version.dataset,
        "feature_version_id": version.version_id, "features_path": str(version.path),
        "feature_config": prepared.config.to_dict(), "checkpoint_feature_version_id": meta["feature_version_id"],
        "checkpoint_split_id": meta["split_id"], "split_id": source.split.split_id, "split_path": source.path,
        "subset": subset, "classes": list(tasks.pool.classes), "seen_by_checkpoint": dict(prepared.overlap),
        "positives": tasks.positives_summary(),
        "allow_overlap": allow_overlap, "allow_feature_mismatch": allow_feature_mismatch,
        "n_tasks_drawn": tasks.n_tasks, "task_ids": list(prepared.ids), "settings": settings.to_dict(),
        "library_versions": {**versions.library_versions(
            ("numpy", "scipy", "scikit-image", "librosa", "torch", "matplotlib"), python=True),
            "siamese-audio": versions.package_version()},
        "notes": list(prepared.notes), "tasks": records, "faithfulness": faithfulness, "sanity": sanity,
        "cost": {"embeddings": int(sum(r["embeddings"] for r in records)), "seconds": round(seconds, 2)},
    }
    return finite_or_none(record)


def _write_task_files(out_dir: Path, result: TaskExplanation, tasks: OneShotTasks, t: int,
                      settings: ExplainSettings, config: FeatureConfig) -> dict[str, str]:
    stem = out_dir / "tasks" / task_stem(t)
    inputs = result.inputs
    classes = [tasks.pool.classes[int(k)] for k in tasks.support_class[t]]
    write_task_arrays(stem.with_suffix(".npz"), result.explanations, query_row=int(tasks.query_rows()[t]),
                      support_rows=tasks.support_rows()[t].tolist())
    plot_task(stem.with_suffix(".png"), inputs.query, inputs.supports, result.explanations, v=inputs.v.tolist(),
              positive=inputs.positive, classes=classes, query_class=tasks.pool.classes[int(tasks.query_class[t])],
              task=t, config=config)
    overlay = stem.parent / f"{stem.name}_overlay.png"
    plot_overlay(overlay, inputs.supports, result.explanations, v=inputs.v.tolist(), positive=inputs.positive,
                 classes=classes, top_k=settings.top_k, task=t, config=config, after=result.top_k_scores,
                 query_class=tasks.pool.classes[int(tasks.query_class[t])])
    return {name: str(path.relative_to(out_dir)) for name, path in
            (("arrays", stem.with_suffix(".npz")), ("figure", stem.with_suffix(".png")), ("overlay", overlay))}


def _sanity_task(embedder: Embedder, result: TaskExplanation, settings: ExplainSettings) -> SanityTask:
    """The positive support (or the faithfulness scope's supports) with the trained model's SINEX scores."""
    inputs = result.inputs
    columns = tuple(faithfulness_columns(settings.faithfulness.scope, settings.ways, inputs.positive)) \
        or (inputs.positive,)
    task = SanityTask(task=inputs.task, query=inputs.query, supports=inputs.supports, columns=columns,
                      labels=tuple(result.explanations[c].labels for c in columns),
                      fills=tuple(result.explanations[c].fill for c in columns), trained_h=())
    trained = sinex_on(embedder, task, batch_size=settings.batch_size)
    return SanityTask(task=task.task, query=task.query, supports=task.supports, columns=columns, labels=task.labels,
                      fills=task.fills, trained_h=tuple(e.h for e in trained),
                      trained_vu=tuple(e.v - e.u for e in trained))
