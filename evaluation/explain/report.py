"""Files of an explanation run: explain.json, one .npz per task, faithfulness.csv.

Layout of ``OUT``::

    explain.json               settings, library versions, feature version and split ids, every task:
                               clips, classes, positive support, v, u of the all-filled support, and per
                               segment label, size, bounding box (Hz, s), u, h, rho, rank; faithfulness;
                               sanity check; sonification round trips. Written last: its presence means
                               the run is complete.
    faithfulness.csv           one row per explained support (AOPC, insertion area, win rate, flips)
    faithfulness.png           mean deletion / insertion curves: rho order vs random vs reverse (and u alone)
    tasks/task_NNNNN.npz       labels int16 (C, n_mels, n_frames), heatmaps float32 (rho per pixel), v, fills
    tasks/task_NNNNN.png       the authors' layout: query; the C heatmaps; the supports with their similarity
    tasks/task_NNNNN_overlay.png  log-mel, relevance at partial opacity, segment borders, top-k outlined
    audio/task_NNNNN/*.wav     query, each support, each support's top-k segments (PCM16)
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from siamese_audio.evaluation.explain.faithfulness import SupportFaithfulness
from siamese_audio.evaluation.explain.figures import band_centres_hz, frame_seconds
from siamese_audio.evaluation.explain.methods import SupportExplanation
from siamese_audio.evaluation.explain.sanity import spearman
from siamese_audio.evaluation.explain.task import TaskExplanation
from siamese_audio.evaluation.tasks import OneShotTasks
from siamese_audio.features.config import FeatureConfig
from siamese_audio.files import csv_text, write_atomic, write_text_atomic

FORMAT = "siamese-audio-explain/1"
EXPLAIN_JSON = "explain.json"
FAITHFULNESS_CSV = "faithfulness.csv"
FAITHFULNESS_PNG = "faithfulness.png"

#: How to read the stored scores (written into explain.json and every .npz).
RELEVANCE_NOTE = ("h_i = (v - u_i) / |R_i| where u_i is the similarity with only segment i kept (SINEX) or the "
                  "mean over coalitions containing i (SINEXC); relevance rho_i = -h_i: high rho means the segment "
                  "alone keeps the match; rank 0 is the most relevant segment")


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (strict JSON: a flip that never happens)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def task_stem(task: int) -> str:
    return f"task_{int(task):05d}"


def segment_table(e: SupportExplanation, config: FeatureConfig) -> list[dict[str, Any]]:
    """Per segment: label, size, bounding box (band centres in Hz, frame centres in s), u, h, rho, rank."""
    from scipy.ndimage import find_objects

    hz = band_centres_hz(config)
    seconds = frame_seconds(config)
    rank = e.rank
    rows = []
    for label, box in enumerate(find_objects(e.labels + 1)):
        bands, frames = box
        rows.append({
            "label": label, "size": int(e.sizes[label]),
            "bbox_hz": [float(hz[bands.start]), float(hz[bands.stop - 1])],
            "bbox_s": [float(seconds[frames.start]), float(seconds[frames.stop - 1])],
            "u": float(e.u[label]), "h": float(e.h[label]), "rho": float(-e.h[label]), "rank": int(rank[label]),
        })
    return rows


def write_task_arrays(path: Path, explanations: Sequence[SupportExplanation], *, query_row: int,
                      support_rows: Sequence[int]) -> Path:
    """One task's segments and heatmaps as a compressed .npz (written atomically)."""
    labels = np.stack([e.labels for e in explanations])
    dtype = np.int16 if labels.max() <= np.iinfo(np.int16).max else np.int32
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, labels=labels.astype(dtype), heatmaps=np.stack([e.rho_map() for e in explanations]),
        v=np.array([e.v for e in explanations], dtype=np.float32),
        u_empty=np.array([e.u_empty for e in explanations], dtype=np.float32),
        fill=np.array([e.fill for e in explanations], dtype=np.float32),
        query_row=np.int64(query_row), support_rows=np.asarray(support_rows, dtype=np.int64),
        heatmaps_are=np.array("rho = -h per pixel; " + RELEVANCE_NOTE),
    )
    write_atomic(path, buffer.getvalue())
    return Path(path)


def faithfulness_frame(rows: Sequence[SupportFaithfulness]):
    """One row per explained support (pandas DataFrame)."""
    import pandas as pd

    columns = ["task", "column", "positive", "aopc_rho", "aopc_random_mean", "aopc_random_sd", "aopc_reverse",
               "delta_aopc", "area_rho", "area_random_mean", "area_reverse", "delta_area", "win_rate",
               "win_rate_insertion", "flip_rho", "flip_random_mean", "flip_reverse", "flip_random_never",
               "aopc_u", "area_u", "flip_u", "aopc_size", "area_size", "aopc_size_small", "area_size_small",
               "win_size", "win_size_small", "gap_rho", "gap_random_mean", "gap_reverse", "gap_u", "gap_size",
               "gap_size_small"]
    records = [{"task": r.task, "column": r.column, "positive": r.positive, **r.measures()} for r in rows]
    return pd.DataFrame(records, columns=columns)


def write_faithfulness_csv(path: Path, rows: Sequence[SupportFaithfulness]) -> Path:
    write_text_atomic(path, csv_text(faithfulness_frame(rows), index=False))
    return Path(path)


def task_record(result: TaskExplanation, tasks: OneShotTasks, t: int, clip_ids: Mapping[int, str],
                config: FeatureConfig) -> dict[str, Any]:
    """The explain.json entry of task ``t``: clips, classes, decision, per-support and per-segment scores."""
    inputs = result.inputs
    classes = tasks.pool.classes
    q_row = int(tasks.query_rows()[t])
    s_rows = tasks.support_rows()[t]
    supports = []
    for c, e in enumerate(result.explanations):
        supports.append({
            "column": c, "row": int(s_rows[c]), "clip_id": clip_ids.get(int(s_rows[c])),
            "class": classes[int(tasks.support_class[t, c])], "positive": c == inputs.positive,
            "v": e.v, "u_empty": e.u_empty, "fill_db": e.fill, "n_segments": e.n_segments,
            "n_perturbations": e.n_perturbations,
            # How much of the ranking is segment size: h is divided by |R_i|, so segments that change
            # little rank by size alone (sign: that of v - u_empty).
            "rho_size_spearman": spearman(e.rho, e.sizes), "segments": segment_table(e, config),
            **({} if result.top_k_scores is None else {"v_top_kept": float(result.top_k_scores[c, 0]),
                                                      "v_top_removed": float(result.top_k_scores[c, 1])}),
        })
    return {
        "task": t, "query": {"row": q_row, "clip_id": clip_ids.get(q_row), "class": classes[int(tasks.query_class[t])]},
        "positive": inputs.positive, "chosen": inputs.chosen, "correct": inputs.chosen == inputs.positive,
        "positive_same_recording": (None if tasks.pool.sources is None else bool(
            tasks.pool.sources[tasks.query[t]] == tasks.pool.sources[tasks.support[t, inputs.positive]])),
        "supports": supports, "faithfulness": [f.to_dict() for f in result.faithfulness],
        "embeddings": result.embeddings, "seconds": round(result.seconds, 3),
    }


def _finite_mean(values: list[float]) -> float | None:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else None


def run_summary(record: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The ``--json`` line: where the files are and the headline numbers."""
    tasks = record["tasks"]
    faith = record["faithfulness"]
    summary: dict[str, Any] = {
        "out_dir": str(out_dir), "explain_json": str(out_dir / EXPLAIN_JSON),
        "feature_version_id": record["feature_version_id"], "split_id": record["split_id"],
        "subset": record["subset"], "method": record["settings"]["method"], "ways": record["settings"]["ways"],
        "runs": record["settings"]["runs"], "seed": record["settings"]["seed"], "task_ids": record["task_ids"],
        "n_tasks_drawn": record["n_tasks_drawn"], "correct": [t["correct"] for t in tasks],
        "rho_size_abs_spearman_mean": _finite_mean([abs(s["rho_size_spearman"]) for t in tasks
                                                    for s in t["supports"] if s["rho_size_spearman"] is not None]),
        "embeddings": record["cost"]["embeddings"], "seconds": record["cost"]["seconds"],
        "figures": sorted([t["files"]["figure"] for t in tasks] + [t["files"]["overlay"] for t in tasks]
                          + ([FAITHFULNESS_PNG] if faith else [])),
        "wavs": sum(len(t.get("sonification", [])) for t in tasks), "notes": record["notes"],
    }
    if faith:
        summary["faithfulness"] = {k: faith[k] for k in ("n_supports", "aopc_rho", "aopc_random_mean", "aopc_reverse",
                                                         "delta_aopc", "delta_area", "win_rate", "flip_rho",
                                                         "flip_random_mean", "flip_reverse", "aopc_u", "flip_u",
                                                         "aopc_size", "aopc_size_small", "win_size",
                                                         "win_size_small", "gap_rho", "gap_random_mean")}
    if record["sanity"]:
        keys = ("randomised_down_to", "spearman_mean", "spearman_h", "spearman_vu", "n_flagged", "n_inverted",
                "n_flagged_vu", "passes", "n")
        summary["sanity"] = [{k: s.get(k) for k in keys} for s in record["sanity"]["stages"]]
    sonified = [s for t in tasks for s in t.get("sonification", [])]
    if sonified:
        summary["round_trip_median_db"] = float(np.median([s["round_trip"]["median_db"] for s in sonified
                                                           if s["kind"] in ("query", "support")]))
    return summary


def stat_text(stat: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``mean [low, high]`` of a :func:`~evaluation.explain.faithfulness.bootstrap_mean` result; ``n/a`` if empty."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    low, high = stat["ci95"]
    return f"{stat['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The headline numbers of an explain run as text lines (``explain``'s output and the demo's).

    Parameters
    ----------
    summary : mapping
        :func:`run_summary`'s dictionary.

    Returns
    -------
    list of str
        Faithfulness (mean and 95% bootstrap CI of each order), each sanity stage, relevance versus
        segment size and the sonification round trip, where the run measured them.
    """
    lines: list[str] = []
    faith = summary.get("faithfulness")
    if faith:
        lines += [
            f"faithfulness over {faith['n_supports']} supports (mean, 95% bootstrap CI; logits):",
            f"  AOPC by rho {stat_text(faith['aopc_rho'])}, random {stat_text(faith['aopc_random_mean'])}, "
            f"reverse {stat_text(faith['aopc_reverse'])}",
            f"  delta AOPC {stat_text(faith['delta_aopc'])}, delta insertion area {stat_text(faith['delta_area'])}, "
            f"win rate {stat_text(faith['win_rate'], 2)}",
            f"  decision flip at {stat_text(faith['flip_rho'], 2)} of pixels by rho, random "
            f"{stat_text(faith['flip_random_mean'], 2)}, reverse {stat_text(faith['flip_reverse'], 2)}",
            f"  segment size alone: AOPC largest first {stat_text(faith.get('aopc_size'))}, smallest first "
            f"{stat_text(faith.get('aopc_size_small'))}; rho beats them on {stat_text(faith.get('win_size'), 2)} / "
            f"{stat_text(faith.get('win_size_small'), 2)} of the supports",
            f"  insertion - deletion area by rho {stat_text(faith.get('gap_rho'))}, random "
            f"{stat_text(faith.get('gap_random_mean'))}",
            f"  reference, segments by u alone (not per pixel): AOPC {stat_text(faith['aopc_u'])}, "
            f"flip at {stat_text(faith['flip_u'], 2)}",
        ]
    for stage in summary.get("sanity", []):
        verdict = {True: "passes", False: "FAILS", None: "n/a"}[stage.get("passes")]
        lines.append(f"sanity: randomised down to {stage['randomised_down_to']}: Spearman with the trained model "
                     f"on h {stat_text(stage.get('spearman_h'), 2)}, on v-u {stat_text(stage.get('spearman_vu'), 2)}; "
                     f"{stage['n_flagged']}/{stage['n']} survived (h > 0.5), {stage.get('n_inverted', 0)} inverted "
                     f"(< -0.5); {verdict}")
    if summary.get("rho_size_abs_spearman_mean") is not None:
        lines.append(f"segment size vs rho: mean |Spearman| {summary['rho_size_abs_spearman_mean']:.2f} over the "
                     f"supports (h is divided by |R_i|; near 1, the ranking is mostly segment size)")
    if "round_trip_median_db" in summary:
        lines.append(f"{summary['wavs']} WAVs; round trip median |error| {summary['round_trip_median_db']:.2f} dB")
    return lines
