"""Write an evaluation to a report directory: report.json, report.md, CSVs and PNGs.

Layout of ``REPORT_DIR``::

    report.json               every number, with checkpoint, feature version id, split ids, seed; the
                              headline (one split: Wilson; several: mean of split accuracies with a
                              t-interval), the pooled Wilson interval, the positive-support rule,
                              tied top scores, and which evaluated classes the checkpoint had seen
    report.md                 the tables a person reads (links to the figures)
    {split_id}/per_class.csv  class, accuracy, ci95 low/high, tasks, baseline accuracy
    {split_id}/confusion.csv  rows: query class, columns: class of the chosen support (counts)
    {split_id}/curve.csv      accuracy (and baseline) for C = 2 .. number of classes
    {split_id}/tasks.csv      one row per task: rows, classes, chosen support, correctness
    {split_id}/confusion.png
    {split_id}/accuracy_vs_ways.png
    {split_id}/split.parquet  regenerated splits only, reusable with --split

``report.json`` is written last: its presence means the report is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.baseline import BASELINE_NAME
from siamese_audio.evaluation.evaluator import OneShotResult
from siamese_audio.evaluation.metrics import ACROSS_SPLITS_CI_METHOD, CI_METHOD, POOLED_CI_METHOD
from siamese_audio.evaluation.plots import plot_accuracy_vs_ways, plot_confusion
from siamese_audio.evaluation.reevaluate import EvaluationReport, SplitRun
from siamese_audio.files import csv_text, refuse_inside_version, write_text_atomic

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def per_class_frame(run: SplitRun) -> pd.DataFrame:
    """One row per evaluating class: network accuracy, its CI, tasks, baseline accuracy."""
    res = run.evaluation.result
    cis = res.per_class_ci95()
    totals = np.bincount(res.tasks.query_class, minlength=len(res.classes))
    base = run.evaluation.baseline
    return pd.DataFrame({
        "class": list(res.classes),
        "accuracy": [res.per_class[c] for c in res.classes],
        "ci95_low": [cis[c][0] for c in res.classes],
        "ci95_high": [cis[c][1] for c in res.classes],
        "n_tasks": totals.astype(np.int64),
        "baseline_accuracy": [base.per_class[c] if base is not None else np.nan for c in res.classes],
    })


def confusion_frame(result: OneShotResult) -> pd.DataFrame:
    """Counts, index = class of the query, columns = class of the chosen support."""
    frame = pd.DataFrame(result.confusion, index=list(result.classes), columns=list(result.classes))
    frame.index.name = "query_class"
    return frame


def curve_frame(run: SplitRun) -> pd.DataFrame:
    """Accuracy (and CI, baseline) for each C of the curve."""
    rows = run.evaluation.curve_dict()
    return pd.DataFrame([{
        "ways": r["ways"], "accuracy": r["accuracy"], "ci95_low": r["ci95"][0], "ci95_high": r["ci95"][1],
        "n_tasks": r["n_tasks"], "chance": r["chance"],
        "baseline_accuracy": r.get("baseline_accuracy", np.nan),
        "baseline_ci95_low": r.get("baseline_ci95", [np.nan, np.nan])[0],
        "baseline_ci95_high": r.get("baseline_ci95", [np.nan, np.nan])[1],
    } for r in rows])


def tasks_frame(run: SplitRun) -> pd.DataFrame:
    """One row per headline task: query and support rows, chosen support, correctness."""
    res = run.evaluation.result
    tasks = res.tasks
    classes = np.array(res.classes, dtype=object)
    idx = np.arange(tasks.n_tasks)
    support_rows = tasks.support_rows()
    frame = pd.DataFrame({
        "task": idx,
        "query_class": classes[tasks.query_class],
        "query_row": tasks.query_rows(),
        "positive_row": support_rows[idx, tasks.positive],
        "support_rows": [" ".join(map(str, r)) for r in support_rows],
        "support_classes": [" ".join(classes[r]) for r in tasks.support_class],
        "chosen_row": support_rows[idx, res.chosen],
        "chosen_class": classes[tasks.support_class[idx, res.chosen]],
        "correct": res.correct,
        "top_score_tied": res.tied,
    })
    if tasks.positive_same_recording is not None:
        frame["positive_same_recording"] = tasks.positive_same_recording
    if run.evaluation.baseline is not None:
        frame["baseline_correct"] = run.evaluation.baseline.correct
    return frame


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}%"


def _ci(ci: Any) -> str:
    return "–" if ci is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def _ci_or_dash(ci: Any) -> str:
    return _ci(ci) if ci is not None else "–"


def render_markdown(report: EvaluationReport) -> str:
    """``report.md``: headline (and pooled), spread over splits, rules, notes, then per split the tables."""
    data = report.to_dict()
    ctx = report.context
    settings = ctx["settings"]
    head = data["headline"]
    pooled = data["pooled"]
    positives = data["positives"]
    several = len(report.runs) > 1
    validation = ctx.get("checkpoint_validation_classes") or []
    lines = [
        "# One-shot evaluation", "",
        f"- Checkpoint: `{ctx['checkpoint']}`",
        f"- Dataset: {ctx['dataset']}; feature version `{ctx['feature_version_id']}` (`{ctx['features_path']}`)",
        f"- Checkpoint trained on feature version `{ctx['checkpoint_feature_version_id']}`, split "
        f"`{ctx['checkpoint_split_id']}` ({ctx['n_training_classes']} training classes; validation classes "
        f"{', '.join(validation) if validation else 'not recorded'})",
        f"- Evaluated: {settings['ways']}-way one-shot, {settings['runs']} tasks per {ctx['subset']} class, "
        f"seed {settings['seed']}, {len(report.runs)} split(s)",
        "- Seen classes: " + (
            "; ".join(f"split `{sid}`: " + ", ".join(f"{c} ({how})" for c, how in seen.items())
                      for sid, seen in data["overlap"].items()) + " (--allow-overlap: not one-shot)"
            if data["overlap"] else "none of the evaluated classes is a training or validation class of the checkpoint"),
        f"- Positive supports: {positives['description']}",
        f"- Scores: the embedder's similarity (a network's logit, or minus its distance; never a saturating "
        f"sigmoid); tasks with a tied top score: {data['n_tied_top']} of "
        f"{data['n_tasks']} ({_pct(data['tied_top_share'])}); ties go to the first support, supports are in "
        f"random order.",
        f"- Baseline: {BASELINE_NAME}, on the same tasks",
        "",
    ]
    if several:
        lines += ["## Accuracy across splits (headline)", "",
                  f"Headline over {head['n_splits']} splits: {ACROSS_SPLITS_CI_METHOD}. It covers how much "
                  f"these splits' accuracies differ; it treats them as independent, which splits drawn from "
                  f"one pool of held-out classes are not, and it does not cover other datasets or recordings.",
                  ""]
        lines += _table(["scorer", "splits", "mean", "95% t-interval", "sd", "min", "max"], [
            [{"accuracy": "network", "baseline_accuracy": "baseline"}.get(name, name), str(s.n), _pct(s.mean),
             _ci_or_dash(s.ci95), _pct(s.sd), _pct(s.min), _pct(s.max)]
            for name, s in report.distribution().items()
        ] + [["chance (1/C)", "", _pct(1.0 / settings["ways"]), "", "", "", ""]])
        lines += ["## Pooled over all splits' tasks (not the headline)", "",
                  f"Interval: {POOLED_CI_METHOD}.", ""]
        lines += _table(["scorer", "accuracy", "95% CI (pooled Wilson)", "tasks"], [
            ["network", _pct(pooled["accuracy"]), _ci(pooled["ci95"]), str(pooled["n_tasks"])],
            ["baseline", _pct(pooled["baseline_accuracy"]), _ci_or_dash(pooled["baseline_ci95"]),
             str(pooled["n_tasks"])],
        ])
        lines += ["## Per split", ""]
        lines += _table(["split", "scheme", "seed", "classes", "accuracy", "95% CI (Wilson)", "baseline"], [
            [f"`{r.split_id}`", r.source.split.scheme, str(r.source.split.seed),
             ", ".join(r.evaluation.result.classes), _pct(r.evaluation.result.accuracy),
             _ci(r.evaluation.result.ci95),
             _pct(r.evaluation.baseline.accuracy if r.evaluation.baseline is not None else None)]
            for r in report.runs
        ])
    else:
        lines += ["## Accuracy", "", f"Interval: {CI_METHOD}.", ""]
        lines += _table(["scorer", "accuracy", "95% CI", "tasks"], [
            ["network", _pct(head["accuracy"]), _ci(head["ci95"]), str(head["n_tasks"])],
            ["baseline", _pct(head["baseline_accuracy"]), _ci_or_dash(head["baseline_ci95"]), str(head["n_tasks"])],
            ["chance (1/C)", _pct(1.0 / settings["ways"]), "", ""],
        ])
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    for run in report.runs:
        res = run.evaluation.result
        source = run.source
        lines += [
            f"## Split `{run.split_id}`", "",
            f"Scheme {source.split.scheme}, seed {source.split.seed}, "
            f"{'file `' + source.path + '`' if source.path else f'regenerated (`{run.split_id}/split.parquet`)'}; "
            f"{run.subset} classes: {', '.join(res.classes)}. "
            f"Accuracy {_pct(res.accuracy)} {_ci(res.ci95)} (Wilson) over {res.n_tasks} tasks; "
            f"tied top scores: {res.n_tied_top}."
            + (" Seen by the checkpoint: " + ", ".join(f"{c} ({how})" for c, how in run.overlap.items()) + "."
               if run.overlap else ""), "",
            "### Per-class accuracy", "",
        ]
        pc = per_class_frame(run)
        lines += _table(["class", "accuracy", "95% CI", "tasks", "baseline"], [
            [str(r["class"]), _pct(r["accuracy"]), _ci((r["ci95_low"], r["ci95_high"])), str(r["n_tasks"]),
             _pct(r["baseline_accuracy"])] for _, r in pc.iterrows()
        ])
        lines += ["### Confusion matrix (rows: query class, columns: class of the chosen support)", ""]
        lines += _table(["query \\ chosen", *res.classes],
                        [[c, *map(str, res.confusion[i])] for i, c in enumerate(res.classes)])
        lines += [f"![confusion matrix]({run.split_id}/confusion.png)", ""]
        if run.evaluation.curve:
            lines += ["### Accuracy as C grows", ""]
            lines += _table(["C", "accuracy", "95% CI", "baseline", "chance"], [
                [str(r["ways"]), _pct(r["accuracy"]), _ci(r["ci95"]), _pct(r.get("baseline_accuracy")),
                 _pct(r["chance"])] for r in run.evaluation.curve_dict()
            ])
            lines += [f"![accuracy vs C]({run.split_id}/accuracy_vs_ways.png)", ""]
    return "\n".join(lines)


def write_report(report: EvaluationReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write every file of the report; return ``{name: path}`` of what was written.

    Parameters
    ----------
    report : EvaluationReport
    out_dir : path
        Created if needed; files of a previous report there are overwritten.
    """
    from siamese_audio.manifests.splits import write_split

    out = Path(out_dir)
    refuse_inside_version(out, option="report directory", error=EvaluationError)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for run in report.runs:
        folder = out / run.split_id
        folder.mkdir(exist_ok=True)
        res = run.evaluation.result
        write_text_atomic(folder / "per_class.csv", csv_text(per_class_frame(run), index=False))
        write_text_atomic(folder / "confusion.csv", csv_text(confusion_frame(res)))
        write_text_atomic(folder / "tasks.csv", csv_text(tasks_frame(run), index=False))
        plot_confusion(res, folder / "confusion.png", title=(
            f"{res.ways}-way one-shot confusion, split {run.split_id} ({run.subset})\n"
            f"{res.n_tasks} tasks, accuracy {res.accuracy:.3f}"))
        written[f"{run.split_id}/confusion.png"] = folder / "confusion.png"
        if run.evaluation.curve:
            write_text_atomic(folder / "curve.csv", csv_text(curve_frame(run), index=False))
            plot_accuracy_vs_ways(run.evaluation.curve, folder / "accuracy_vs_ways.png",
                                  baseline=run.evaluation.baseline_curve)
            written[f"{run.split_id}/accuracy_vs_ways.png"] = folder / "accuracy_vs_ways.png"
        if run.source.path is None:
            write_split(run.source.split, folder / "split.parquet")
    write_text_atomic(out / REPORT_MD, render_markdown(report))
    written[REPORT_MD] = out / REPORT_MD
    write_text_atomic(out / REPORT_JSON, json.dumps(report.to_dict(), indent=2, sort_keys=True, default=_jsonable) + "\n")
    written[REPORT_JSON] = out / REPORT_JSON
    return written


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot write {type(value).__name__} to report.json")
