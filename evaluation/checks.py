"""Refusals that keep a re-evaluation honest: one-shot classes, matching features, matching shapes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from siamese_audio.errors import EvaluationError

#: Feature config keys that are labels, not settings (a differing name alone is not a mismatch).
LABEL_KEYS = ("name",)


#: How an evaluating class was seen by the checkpoint (values of :func:`check_unseen`'s result).
SEEN_IN_TRAINING = "training"
SEEN_IN_VALIDATION = "validation"


def check_unseen(
    evaluating: Iterable[str], *, training: Iterable[str], validation: Iterable[str] = (),
    allow_overlap: bool = False, where: str = "",
) -> dict[str, str]:
    """Refuse evaluating classes the checkpoint trained on or was selected on.

    A checkpoint's validation classes chose its best weights: scoring them as
    a test would report the selection's own numbers as one-shot accuracy.

    Parameters
    ----------
    evaluating : iterable of str
        Class ids to be scored.
    training, validation : iterable of str
        The checkpoint's training classes and validation classes.
    allow_overlap : bool
        Return the overlap instead of raising.
    where : str
        What is evaluated (e.g. ``"the test classes of split 3fa2..."``), for the message.

    Returns
    -------
    dict of str to str
        Overlapping class -> :data:`SEEN_IN_TRAINING` or :data:`SEEN_IN_VALIDATION`,
        sorted by class (empty when none).

    Raises
    ------
    EvaluationError
        Overlap and not ``allow_overlap``; the message names the classes and how each was seen.
    """
    evaluating = set(map(str, evaluating))
    seen_training = sorted(evaluating & set(map(str, training)))
    seen_validation = sorted((evaluating & set(map(str, validation))) - set(seen_training))
    overlap = {c: SEEN_IN_TRAINING for c in seen_training}
    overlap.update({c: SEEN_IN_VALIDATION for c in seen_validation})
    if overlap and not allow_overlap:
        target = f" {where}" if where else ""
        parts = []
        if seen_training:
            parts.append(f"training classes {seen_training}")
        if seen_validation:
            parts.append(f"validation classes {seen_validation} (they selected the checkpoint's best weights)")
        raise EvaluationError(
            f"Refusing to evaluate{target}: {len(overlap)} of the evaluating classes were seen by the checkpoint, "
            f"so the test would not be one-shot: {'; '.join(parts)}. "
            f"Use a split whose evaluating classes are unseen, or pass --allow-overlap."
        )
    return dict(sorted(overlap.items()))


def check_overlap(
    evaluating: Iterable[str], training: Iterable[str], *, allow_overlap: bool = False, where: str = ""
) -> list[str]:
    """Refuse evaluating classes the checkpoint was trained on (:func:`check_unseen` without validation classes).

    Returns
    -------
    list[str]
        Sorted overlapping classes (empty when none).

    Raises
    ------
    EvaluationError
        Overlap and not ``allow_overlap``; the message names the classes.
    """
    return list(check_unseen(evaluating, training=training, allow_overlap=allow_overlap, where=where))


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
