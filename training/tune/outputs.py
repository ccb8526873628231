"""What a study writes: ``trials.parquet``, ``best.toml``, plots (Optuna's matplotlib backend), ``study.md``.

Every file is written atomically; ``trials.parquet`` and ``best.toml`` after every
finished trial, the plots and ``study.md`` at the end of a session. Only the best
completed trial keeps its weights (``trials/NNNNN/best.pt``); every trial keeps its
``metrics.csv`` and ``curves.png``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from siamese_audio.files import save_figure, write_parquet_atomic, write_text_atomic
from siamese_audio.training.tune.space import Space
from siamese_audio.training.tune.trial import trial_dir

TRIALS_PARQUET = "trials.parquet"
BEST_TOML = "best.toml"
STUDY_MD = "study.md"
PLOTS = {"history": "history.png", "importance": "importance.png", "parallel": "parallel.png",
         "intermediate": "intermediate.png"}


def _complete(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _scored(study: Any) -> list[Any]:
    """Trials with a best validation accuracy: completed ones, and pruned ones up to their pruning."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
            if t.user_attrs.get("value") is not None]


def best_trial(study: Any) -> Any:
    """The trial of highest best validation accuracy (the first of equals), or None.

    A pruned trial counts with its best validation before it was stopped: that checkpoint was
    measured on the same tasks as every other trial's, and retraining its configs (same seed)
    reaches it again. (Optuna's own ``best_trial`` and history plot count completed trials only.)
    """
    scored = _scored(study)
    return max(scored, key=lambda t: (t.user_attrs["value"], -t.number)) if scored else None


def best_summary(study: Any) -> dict[str, Any] | None:
    """``number``, ``state``, ``value``, ``n_tasks``, ``ci95``, ``best_epoch``, ``epochs``, ``params`` of the
    best trial."""
    best = best_trial(study)
    if best is None:
        return None
    attrs = best.user_attrs
    return {"number": best.number, "state": best.state.name, "value": attrs["value"], "n_tasks": attrs.get("n_tasks"),
            "ci95": attrs.get("ci95"), "best_epoch": attrs.get("best_epoch"), "epochs": attrs.get("epochs"),
            "params": dict(best.params)}


# ----------------------------------------------------------------------------- trials.parquet


def trials_table(study: Any) -> Any:
    """One row per trial: number, state, validation accuracy with its tasks and CI, epochs, seconds,
    why it stopped or failed, the worker, each parameter (``param.model.fc_units``, ...) and the
    full configs (JSON)."""
    import pyarrow as pa

    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    columns: dict[str, list[Any]] = {name: [] for name in (
        "number", "state", "val_accuracy", "val_n_tasks", "val_ci95_low", "val_ci95_high", "best_epoch", "epochs",
        "seconds", "cpu_seconds", "stopped", "failure", "retry_of", "worker", "model_config", "train_config")}
    columns.update({f"param.{name}": [] for name in param_names})
    for t in trials:
        a = t.user_attrs
        ci = a.get("ci95") or [None, None]
        row = {"number": t.number, "state": t.state.name, "val_accuracy": a.get("value"),
               "val_n_tasks": a.get("n_tasks"), "val_ci95_low": ci[0], "val_ci95_high": ci[1],
               "best_epoch": a.get("best_epoch"), "epochs": a.get("epochs"), "seconds": a.get("seconds"),
               "cpu_seconds": a.get("cpu_seconds"),
               "stopped": a.get("stopped"), "failure": a.get("failure"), "retry_of": a.get("retry_of"),
               "worker": a.get("worker"),
               "model_config": json.dumps(a["model_config"], sort_keys=True) if "model_config" in a else None,
               "train_config": json.dumps(a["train_config"], sort_keys=True) if "train_config" in a else None}
        row.update({f"param.{name}": t.params.get(name) for name in param_names})
        for key, value in row.items():
            columns[key].append(value)
    types = {"number": pa.int64(), "state": pa.string(), "val_accuracy": pa.float64(), "val_n_tasks": pa.int64(),
             "val_ci95_low": pa.float64(), "val_ci95_high": pa.float64(), "best_epoch": pa.int64(),
             "epochs": pa.int64(), "seconds": pa.float64(), "cpu_seconds": pa.float64(), "stopped": pa.string(), "failure": pa.string(),
             "retry_of": pa.int64(), "worker": pa.string(), "model_config": pa.string(), "train_config": pa.string()}
    arrays = {}
    for key, values in columns.items():
        if key in types:
            arrays[key] = pa.array(values, type=types[key])
        else:
            arrays[key] = _param_array(values)
    return pa.table(arrays)


def _param_array(values: list[Any]) -> Any:
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.int64())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array([None if v is None else str(v) for v in values], type=pa.string())


# ----------------------------------------------------------------------------- best.toml


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value!r} in TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {value!r} in TOML")


def best_toml(study: Any, settings: dict[str, Any]) -> str | None:
    """``best.toml`` of the best completed trial: every model and training field, for ``train --config``."""
    best = best_trial(study)
    if best is None:
        return None
    a = best.user_attrs
    ci = a.get("ci95") or [0.0, 0.0]
    lines = [
        f"# Best trial of the study in {settings.get('study_dir', '')}",
        f"# trial {best.number} ({best.state.name.lower()}): validation accuracy {a['value']:.4f} (95% CI "
        f"{ci[0]:.4f}-{ci[1]:.4f}, {a.get('n_tasks')} tasks) at epoch {a.get('best_epoch')} of {a.get('epochs')}",
        f"# features {settings['features']} (version {settings['feature_version_id']})",
        f"# split {settings['split']} (id {settings['split_id']}); test classes were never read",
        "# Train it:  siamese-audio train --config best.toml --features FEATURES --split SPLIT --out RUN_DIR",
        f"preset = {_toml_value(Space.from_dict(settings['space']).preset)}",
        "",
    ]
    for section, key in (("model", "model_config"), ("train", "train_config")):
        lines.append(f"[{section}]")
        for name, value in a[key].items():
            if name == "ratio":
                value = f"{value[0]}:{value[1]}"
            lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots


def _placeholder(message: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def write_plots(out: Path, study: Any) -> dict[str, str]:
    """History, parameter importance, parallel coordinates and intermediate values as PNG.

    A plot Optuna cannot draw yet (e.g. importance before two trials completed) is written
    as a figure saying why.
    """
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as plots

    drawers = {"history": plots.plot_optimization_history, "importance": plots.plot_param_importances,
               "parallel": plots.plot_parallel_coordinate, "intermediate": plots.plot_intermediate_values}
    files = {}
    for name, draw in drawers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is experimental in Optuna
            try:
                ax = draw(study)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(9, 5.5)
            except (ValueError, RuntimeError, ZeroDivisionError, IndexError, optuna.exceptions.OptunaError) as exc:
                fig = _placeholder(f"{name}: nothing to plot yet ({exc})")
            if len(_complete(study)) == 0 and name != "intermediate":
                import matplotlib.pyplot as plt

                plt.close(fig)
                fig = _placeholder(f"{name}: no completed trial yet")
        save_figure(fig, out / PLOTS[name], dpi=100, bbox_inches="tight")
        files[name] = str(out / PLOTS[name])
    return files


# ----------------------------------------------------------------------------- study.md


def _ci_text(attrs: dict[str, Any]) -> str:
    ci = attrs.get("ci95")
    if not ci or attrs.get("value") is None:
        return ""
    return f"{attrs['value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] ({attrs.get('n_tasks')} tasks)"


def study_markdown(out: Path, study: Any, space: Space, settings: dict[str, Any]) -> str:
    """The study's summary: objective, counts, best trial, space, every trial, files."""
    from collections import Counter

    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    epochs = sum(int(t.user_attrs.get("epochs") or 0) for t in trials)
    seconds = sum(float(t.user_attrs.get("seconds") or 0.0) for t in trials)
    train = space.train
    lines = [
        f"# Study `{out}`",
        "",
        f"Objective: the best **validation** accuracy of each trial ({train.ways}-way one-shot tasks on the "
        f"{len(settings['validation_classes'])} validation classes, {train.eval_tasks} tasks per validation every "
        f"{train.eval_every} epochs, the same tasks for every trial). The test classes are never read.",
        "",
        f"- features: `{settings['features']}` (version `{settings['feature_version_id']}`), split "
        f"`{settings['split']}` (id `{settings['split_id']}`)",
        f"- space: {space.source} on preset `{space.preset}`; sampler: TPE (seed {settings['seed']}, "
        f"{settings['startup_trials']} random start-up trials); pruner: {settings['pruner']}",
        f"- trials: {len(trials)} ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))}); "
        f"{epochs} epochs and {seconds / 60:.1f} trial-minutes in all",
        "",
    ]
    best = best_trial(study)
    if best is None:
        lines += ["No trial finished yet.", ""]
    else:
        a = best.user_attrs
        lines += [
            "## Best trial",
            "",
            f"Trial {best.number}: validation accuracy {_ci_text(a)}, at epoch {a.get('best_epoch')} of "
            f"{a.get('epochs')} (stopped by {a.get('stopped')}). Configs in `{BEST_TOML}`; weights in "
            f"`{trial_dir(out, best.number).relative_to(out)}/best.pt`. Pruned trials count with their best "
            "validation before they were stopped (Optuna's history plot shows completed trials only).",
            "",
            "| parameter | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in sorted(best.params.items())],
            "",
            "Validation accuracy picked as the best of many noisy trials is optimistic; evaluate the "
            "best configuration on the test classes once, with `siamese-audio evaluate`.",
            "",
        ]
    lines += ["## Space", "", *[f"- {line}" for line in space.describe()]]
    lines += [f"- left out for this data: {note}" for note in space.notes]
    lines += ["", "## Trials", "", "| trial | state | validation accuracy [95% CI] (tasks) | epochs | seconds | note |",
              "|---|---|---|---|---|---|"]
    for t in trials:
        a = t.user_attrs
        note = a.get("failure") or (f"retry of trial {a['retry_of']}" if "retry_of" in a else a.get("stopped") or "")
        seconds_text = f"{a['seconds']:.1f}" if a.get("seconds") is not None else ""
        lines.append(f"| {t.number} | {t.state.name.lower()} | {_ci_text(a)} | {a.get('epochs', '')} | "
                     f"{seconds_text} | {note} |")
    lines += ["", "## Files", "", f"`{TRIALS_PARQUET}` (every trial), `{BEST_TOML}` (`siamese-audio train --config "
              f"{BEST_TOML}`), " + ", ".join(f"`{f}`" for f in PLOTS.values())
              + ", `trials/NNNNN/` (each trial's metrics.csv and curves.png), `study.journal` (the Optuna study: "
              "`siamese-audio tune --out DIR --resume` continues it)", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- all of them


def drop_other_weights(out: Path, study: Any) -> None:
    """Delete ``best.pt`` of finished trials other than the best one (only that one is worth keeping)."""
    from optuna.trial import TrialState

    best = best_trial(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if best is None or t.number != best.number:
            (trial_dir(out, t.number) / "best.pt").unlink(missing_ok=True)


def write_outputs(out: Path, study: Any, space: Space, settings: dict[str, Any], *, final: bool) -> dict[str, str]:
    """Write ``trials.parquet`` and ``best.toml`` (and with ``final``, the plots and ``study.md``)."""
    out = Path(out)
    files = {"study_dir": str(out), "journal": str(out / "study.journal"), "trials": str(out / TRIALS_PARQUET)}
    write_parquet_atomic(out / TRIALS_PARQUET, trials_table(study))
    drop_other_weights(out, study)
    text = best_toml(study, {**settings, "study_dir": str(out)})
    if text is not None:
        write_text_atomic(out / BEST_TOML, text)
        files["best_toml"] = str(out / BEST_TOML)
        files["best_checkpoint"] = str(trial_dir(out, best_trial(study).number) / "best.pt")
    if final:
        files.update(write_plots(out, study))
        write_text_atomic(out / STUDY_MD, study_markdown(out, study, space, settings))
        files["study_md"] = str(out / STUDY_MD)
    return files


__all__ = ["BEST_TOML", "PLOTS", "STUDY_MD", "TRIALS_PARQUET", "best_summary", "best_toml", "best_trial",
           "study_markdown", "trials_table", "write_outputs", "write_plots"]
