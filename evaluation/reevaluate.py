"""Evaluate a checkpoint on one or several splits of its dataset, on any feature version.

This module composes the pieces the CLI needs without importing :mod:`training`:
it takes an embedder and the checkpoint's description (``meta``), refuses what
would not be a fair one-shot test (:mod:`evaluation.checks`), and evaluates each
split with :func:`evaluation.suite.evaluate_classes`.

Splits come from files (``--split``, any number) or are regenerated
(``--regenerate K --seed S``): K distinct splits, each testing the first ``n_classes`` of
:func:`manifests.splits.seeded_order` with seed ``S``, ``S + 1``, ... (skipping seeds
that repeat a set) over the stored classes
that are *neither* the checkpoint's training classes *nor* its validation classes
(the classes that chose ``best.pt``); the checkpoint's validation classes are its
validation classes, every other class is in train. When fewer than ``n_classes``
such classes remain that is impossible; the run is refused, or with
``allow_overlap`` the draw is made over every stored class and the report says
which drawn classes were seen, and how.

An explicit split whose evaluating classes include the checkpoint's training or
validation classes is refused naming them (:func:`evaluation.checks.check_unseen`),
unless ``allow_overlap``.

With several splits the headline is the mean of the per-split accuracies with a
95% t-interval over the split means (:func:`evaluation.metrics.t_interval`); the
Wilson interval of all tasks pooled is reported beside it, labelled as pooled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.checks import (
    SEEN_IN_TRAINING,
    SEEN_IN_VALIDATION,
)
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import check_batch_size
from siamese_audio.evaluation.metrics import (
    ACROSS_SPLITS_CI_METHOD,
    CI_METHOD,
    POOLED_CI_METHOD,
    Spread,
    per_class_counts,
    spread,
    wilson_interval,
)
from siamese_audio.evaluation.planning import (
    SUBSETS,
    SplitSource,
    VersionLike,
    check_compatible,
    check_meta,
    plan_split,
)
from siamese_audio.evaluation.suite import ClassesEvaluation, EvaluationSettings, evaluate_classes
from siamese_audio.evaluation.tasks import POSITIVES_ANY_CLIP, POSITIVES_OTHER_RECORDING, check_runs
from siamese_audio.manifests.split_catalog import SOURCE_COLUMN


@dataclass(frozen=True, eq=False)
class SplitRun:
    """The evaluation of one split's ``subset`` classes."""

    source: SplitSource
    subset: str
    evaluation: ClassesEvaluation
    overlap: Mapping[str, str] = field(default_factory=dict)
    """Evaluating classes the checkpoint had seen (allowed): class -> ``"training"`` or ``"validation"``."""

    @property
    def split_id(self) -> str:
        return self.source.split.split_id

    def seen_in(self, how: str) -> list[str]:
        """Overlapping classes seen in ``how`` (``"training"`` or ``"validation"``), sorted."""
        return sorted(c for c, h in self.overlap.items() if h == how)

    def to_dict(self) -> dict[str, Any]:
        split = self.source.split
        return {
            "split_id": split.split_id, "split_path": self.source.path, "scheme": split.scheme,
            "split_seed": split.seed, "subset": self.subset, "classes": list(self.evaluation.result.classes),
            "overlap": dict(self.overlap),
            "overlap_with_training": self.seen_in(SEEN_IN_TRAINING),
            "overlap_with_validation": self.seen_in(SEEN_IN_VALIDATION),
            **self.evaluation.to_dict(),
        }


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Everything one ``evaluate`` command found, ready for :mod:`evaluation.report`.

    Attributes
    ----------
    context : dict
        Checkpoint path, feature version id and path, dataset, the checkpoint's
        own feature version and split ids, settings, allowances used.
    runs : tuple[SplitRun, ...]
    notes : tuple[str, ...]
        Things a reader must know (overlaps allowed, feature mismatch allowed,
        regenerated splits that could not avoid training classes).
    """

    context: dict[str, Any]
    runs: tuple[SplitRun, ...]
    notes: tuple[str, ...] = field(default=())

    def pooled(self) -> dict[str, Any]:
        """Numbers over the tasks of every split together.

        With one split these are that split's numbers and ``ci95`` its Wilson
        interval. With several, ``ci95`` is the Wilson interval of all tasks
        pooled as if independent (:data:`~evaluation.metrics.POOLED_CI_METHOD`),
        too narrow to be the headline: see :meth:`headline`.
        """
        n_tasks = sum(r.evaluation.result.n_tasks for r in self.runs)
        n_correct = sum(r.evaluation.result.n_correct for r in self.runs)
        hits: dict[str, list[int]] = {}
        for run in self.runs:
            res = run.evaluation.result
            class_hits, totals = per_class_counts(res.tasks.query_class, res.correct, len(res.classes))
            for c, h, n in zip(res.classes, class_hits, totals):
                pair = hits.setdefault(c, [0, 0])
                pair[0] += int(h)
                pair[1] += int(n)
        baselines = [r.evaluation.baseline for r in self.runs if r.evaluation.baseline is not None]
        out: dict[str, Any] = {
            "accuracy": n_correct / n_tasks, "n_tasks": n_tasks, "n_correct": n_correct,
            "ci95": list(wilson_interval(n_correct, n_tasks)),
            "ci_method": CI_METHOD if len(self.runs) == 1 else POOLED_CI_METHOD,
            "per_class": {c: h / n for c, (h, n) in hits.items()},
            "baseline_accuracy": None, "baseline_ci95": None,
        }
        if baselines:
            b_correct = sum(b.n_correct for b in baselines)
            b_tasks = sum(b.n_tasks for b in baselines)
            out["baseline_accuracy"] = b_correct / b_tasks
            out["baseline_ci95"] = list(wilson_interval(b_correct, b_tasks))
        return out

    def distribution(self) -> dict[str, Spread]:
        """Spread over splits of the network's and the baseline's accuracy (mean, sd, min, max, t-interval)."""
        out = {"accuracy": spread([r.evaluation.result.accuracy for r in self.runs])}
        base = [r.evaluation.baseline.accuracy for r in self.runs if r.evaluation.baseline is not None]
        if base:
            out["baseline_accuracy"] = spread(base)
        return out

    def headline(self) -> dict[str, Any]:
        """The accuracy to quote, and what its interval is.

        One split: its accuracy and Wilson interval (``kind: "single_split"``).
        Several: the mean of the per-split accuracies with a 95% t-interval over
        the split means, and their sd, min and max (``kind: "mean_over_splits"``).
        ``baseline_accuracy`` / ``baseline_ci95`` are the baseline's, computed the same way.
        """
        pooled = self.pooled()
        if len(self.runs) == 1:
            res = self.runs[0].evaluation.result
            return {"kind": "single_split", "accuracy": res.accuracy, "ci95": list(res.ci95),
                    "ci_method": CI_METHOD, "n_splits": 1, "n_tasks": res.n_tasks,
                    "baseline_accuracy": pooled["baseline_accuracy"], "baseline_ci95": pooled["baseline_ci95"]}
        dist = self.distribution()
        acc = dist["accuracy"]
        base = dist.get("baseline_accuracy")
        return {"kind": "mean_over_splits", "accuracy": acc.mean, "ci95": list(acc.ci95),
                "ci_method": ACROSS_SPLITS_CI_METHOD, "n_splits": acc.n, "sd": acc.sd, "min": acc.min,
                "max": acc.max, "n_tasks": pooled["n_tasks"],
                "baseline_accuracy": None if base is None else base.mean,
                "baseline_ci95": None if base is None else list(base.ci95)}

    def ties(self) -> dict[str, Any]:
        """Headline tasks whose top network score was tied (the tie rule chose), over all splits."""
        n_tied = sum(r.evaluation.result.n_tied_top for r in self.runs)
        n_tasks = sum(r.evaluation.result.n_tasks for r in self.runs)
        return {"n_tied_top": n_tied, "tied_top_share": n_tied / n_tasks}

    def positives(self) -> dict[str, Any]:
        """Which positive-support rule was used, whether it applied, and the tasks it could not help.

        Counts are over the headline tasks of every split; None when the catalog
        records no source recording.
        """
        summaries = [r.evaluation.result.tasks.positives_summary() for r in self.runs]
        known = all(s["sources_known"] for s in summaries)
        same_source_ok = self.context["settings"]["same_source_ok"]
        rule = POSITIVES_ANY_CLIP if same_source_ok else POSITIVES_OTHER_RECORDING
        out: dict[str, Any] = {
            "rule": rule, "source_column": SOURCE_COLUMN if known else None,
            "applied": known and not same_source_ok, "n_tasks": sum(s["n_tasks"] for s in summaries),
            "n_positive_same_recording": None, "n_without_other_recording": None,
            "classes_without_other_recording": sorted({c for s in summaries
                                                       for c in s["classes_without_other_recording"]}),
        }
        if known:
            out["n_positive_same_recording"] = sum(s["n_positive_same_recording"] for s in summaries)
            out["n_without_other_recording"] = sum(s["n_without_other_recording"] for s in summaries)
        out["description"] = describe_positives(out)
        return out

    def overlap(self) -> dict[str, dict[str, str]]:
        """Split id -> {class: "training" | "validation"} for the splits that evaluated seen classes."""
        return {r.split_id: dict(r.overlap) for r in self.runs if r.overlap}

    def summary(self) -> dict[str, Any]:
        """What ``evaluate --json`` prints: the headline, the pooled numbers, the spread, rules and splits."""
        head = self.headline()
        pooled = self.pooled()
        return {
            "accuracy": head["accuracy"], "ci95": head["ci95"], "ci_method": head["ci_method"],
            "n_tasks": pooled["n_tasks"], "n_correct": pooled["n_correct"], "per_class": pooled["per_class"],
            "baseline_accuracy": head["baseline_accuracy"], "baseline_ci95": head["baseline_ci95"],
            "headline": head, "pooled": pooled,
            "distribution": {k: v.to_dict() for k, v in self.distribution().items()},
            **self.ties(), "positives": self.positives(), "overlap": self.overlap(),
            "split_ids": [r.split_id for r in self.runs],
            "splits": [{"split_id": r.split_id, "classes": list(r.evaluation.result.classes),
                        "accuracy": r.evaluation.result.accuracy, "ci95": list(r.evaluation.result.ci95),
                        "n_tasks": r.evaluation.result.n_tasks, "overlap": dict(r.overlap)} for r in self.runs],
            "notes": list(self.notes),
        }

    def to_dict(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {**self.context, **self.summary(), "splits": [r.to_dict() for r in self.runs]}


def describe_positives(positives: Mapping[str, Any]) -> str:
    """One sentence on the positive-support rule of :meth:`EvaluationReport.positives`."""
    if positives["rule"] == POSITIVES_ANY_CLIP:
        text = "any other clip of the query's class (--same-source-ok, the report's protocol)"
        if positives["n_positive_same_recording"] is not None:
            text += (f"; {positives['n_positive_same_recording']} of {positives['n_tasks']} tasks have a positive "
                     f"from the query's own recording ({positives['source_column']})")
        return text
    if not positives["applied"]:
        return (f"not controlled: the catalog records no source recording ({SOURCE_COLUMN}), so positives are "
                f"any other clip of the query's class")
    text = f"from another recording than the query's ({positives['source_column']})"
    if positives["n_without_other_recording"]:
        text += (f"; {positives['n_without_other_recording']} of {positives['n_tasks']} tasks had no clip of their "
                 f"class from another recording (classes {', '.join(positives['classes_without_other_recording'])}): "
                 f"their positive is from the query's own recording")
    return text




def evaluate_checkpoint(
    embedder: Embedder,
    meta: Mapping[str, Any],
    version: VersionLike,
    sources: Sequence[SplitSource],
    settings: EvaluationSettings,
    *,
    checkpoint: str,
    subset: str = "test",
    allow_overlap: bool = False,
    allow_feature_mismatch: bool = False,
    notes: Sequence[str] = (),
) -> EvaluationReport:
    """Evaluate ``embedder`` (from ``checkpoint``) on the ``subset`` classes of every split.

    Parameters
    ----------
    embedder : Embedder
    meta : mapping
        The checkpoint's description: at least :data:`REQUIRED_META`;
        ``input_shape`` when present is checked against the version.
    version : VersionLike
        The feature version to read clips from.
    sources : sequence of SplitSource
        At least one; each must be a split of ``version.dataset``.
    settings : EvaluationSettings
    checkpoint : str
        Path recorded in the report.
    subset : str
        ``"test"`` or ``"validation"``.
    allow_overlap, allow_feature_mismatch : bool
        Evaluate anyway (the report notes it) instead of raising.
    notes : sequence of str
        Notes from resolving the splits (e.g. :func:`regenerate_splits`).

    Raises
    ------
    EvaluationError
        Missing checkpoint description, evaluating classes the checkpoint trained
        or was validated on (naming them), differing feature settings (naming
        them), unusable input shape, unknown subset, no splits.
    SplitError
        A split of another dataset, or classes missing from the version.
    """
    check_meta(meta, checkpoint)
    if subset not in SUBSETS:
        raise EvaluationError(f"Expected --subset among {list(SUBSETS)}. Got {subset!r}.")
    if not sources:
        raise EvaluationError("Expected at least one split to evaluate (--split FILE or --regenerate K).")
    all_notes = list(notes) + check_compatible(meta, version, checkpoint=checkpoint,
                                               allow_feature_mismatch=allow_feature_mismatch)
    if "validation_classes" not in meta:
        all_notes.append(f"{checkpoint} does not record its validation classes: only its training classes "
                         f"could be kept out of the evaluated classes.")
    # Refuse before any embedding work: check every split first.
    planned = [plan_split(source, version, meta, subset=subset, allow_overlap=allow_overlap, notes=all_notes)
               for source in sources]
    check_batch_size(settings.batch_size, version.shape, option="--batch-size")
    for plan in planned:
        check_runs(settings.runs, n_classes=len(plan.rows), ways=settings.ways)
    runs = tuple(
        SplitRun(source=plan.source, subset=subset, overlap=plan.overlap,
                 evaluation=evaluate_classes(embedder, version.read, plan.rows, settings, plan.sources))
        for plan in planned
    )
    all_notes += _positive_notes(runs)
    context = {
        "checkpoint": str(checkpoint),
        "dataset": version.dataset,
        "feature_version_id": version.version_id,
        "features_path": str(version.path),
        "checkpoint_feature_version_id": meta["feature_version_id"],
        "checkpoint_split_id": meta["split_id"],
        "n_training_classes": len(meta["training_classes"]),
        "checkpoint_validation_classes": list(meta.get("validation_classes") or []),
        "subset": subset,
        "seed": settings.seed,
        "settings": settings.to_dict(),
        "allow_overlap": allow_overlap,
        "allow_feature_mismatch": allow_feature_mismatch,
    }
    return EvaluationReport(context=context, runs=runs, notes=tuple(all_notes))




def _positive_notes(runs: Sequence[SplitRun]) -> list[str]:
    """Say, per split, how many tasks had no positive from another recording (never a silent fallback)."""
    notes = []
    for run in runs:
        summary = run.evaluation.result.tasks.positives_summary()
        if summary["applied"] and summary["n_without_other_recording"]:
            notes.append(
                f"Split {run.split_id}: {summary['n_without_other_recording']} of {summary['n_tasks']} tasks had no "
                f"clip of the query's class from another recording (classes "
                f"{', '.join(summary['classes_without_other_recording'])}): their positive support is from the "
                f"query's own recording ({SOURCE_COLUMN}).")
    return notes
