"""Refusals that keep a re-evaluation honest: one-shot classes, matching features, matching shapes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from siamese_audio.errors import EvaluationError

#: Feature config keys that are labels, not settings (a differing name alone is not a mismatch).
LABEL_KEYS = ("name",)


def check_overlap(
    evaluating: Iterable[str], training: Iterable[str], *, allow_overlap: bool = False, where: str = ""
) -> list[str]:
    """Refuse evaluating classes the checkpoint was trained on.

    Parameters
    ----------
    evaluating, training : iterable of str
        Class ids.
    allow_overlap : bool
        Return the overlap instead of raising.
    where : str
        What is evaluated (e.g. ``"split 3fa2... (test)"``), for the message.

    Returns
    -------
    list[str]
        Sorted overlapping classes (empty when none).

    Raises
    ------
    EvaluationError
        Overlap and not ``allow_overlap``; the message names the classes.
    """
    overlap = sorted(set(map(str, evaluating)) & set(map(str, training)))
    if overlap and not allow_overlap:
        target = f" of {where}" if where else ""
        raise EvaluationError(
            f"Refusing to evaluate: {len(overlap)} evaluating class(es){target} are among the checkpoint's "
            f"training classes, so the test would not be one-shot: {overlap}. "
            f"Use a split whose evaluating classes are unseen, or pass --allow-overlap."
        )
    return overlap


def feature_config_differences(checkpoint: Mapping[str, Any], version: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings whose values differ, ``{key: (checkpoint value, version value)}``.

    Keys missing on one side count as differing (shown as ``None``); label keys
    (:data:`LABEL_KEYS`) are ignored.
    """
    keys = sorted((set(checkpoint) | set(version)) - set(LABEL_KEYS))
    return {k: (checkpoint.get(k), version.get(k)) for k in keys if checkpoint.get(k) != version.get(k)}


def check_feature_config(
    checkpoint: Mapping[str, Any], version: Mapping[str, Any], *, allow_feature_mismatch: bool = False,
    version_id: str = "",
) -> dict[str, tuple[Any, Any]]:
    """Refuse a feature version computed with other settings than the checkpoint's.

    Returns
    -------
    dict
        The differences (empty when none), when allowed.

    Raises
    ------
    EvaluationError
        Differences and not ``allow_feature_mismatch``; the message names each setting.
    """
    diffs = feature_config_differences(checkpoint, version)
    if diffs and not allow_feature_mismatch:
        listed = "; ".join(f"{k}: checkpoint {a!r}, version {b!r}" for k, (a, b) in diffs.items())
        target = f" {version_id}" if version_id else ""
        raise EvaluationError(
            f"Refusing to evaluate: the feature version{target} was computed with other settings than the "
            f"checkpoint was trained on ({listed}). Use a version built with the checkpoint's feature config, "
            f"or pass --allow-feature-mismatch."
        )
    return diffs


def check_input_shape(expected: Sequence[int] | None, found: Sequence[int], *, version_id: str = "") -> None:
    """Refuse spectrograms whose shape the network cannot take (no override: it would crash)."""
    if expected is not None and tuple(int(s) for s in expected) != tuple(int(s) for s in found):
        raise EvaluationError(
            f"The checkpoint's network takes spectrograms of shape (n_mels, n_frames) = {tuple(expected)}; "
            f"feature version {version_id or ''} holds {tuple(found)}. No override can evaluate it on these features."
        )
