"""The one exception family of siamese-audio.

Every error the tool raises on purpose derives from :class:`SiameseAudioError`
(a ``ValueError``), and its message says what was expected and what was found,
naming the file, row or store concerned.
"""

from __future__ import annotations


class SiameseAudioError(ValueError):
    """Base class of every error siamese-audio raises on purpose."""


class DatasetLayoutError(SiameseAudioError):
    """A dataset directory does not have the layout its adapter expects."""


class AudioDecodeError(SiameseAudioError):
    """An audio file cannot be decoded or holds unusable samples."""


class FeatureConfigError(SiameseAudioError):
    """A feature configuration is invalid."""


class StoreError(SiameseAudioError):
    """A feature store or version is missing, unsealed, altered or busy."""


class SplitError(SiameseAudioError):
    """A class-split manifest is invalid or does not fit a dataset or store."""


class TrainingError(SiameseAudioError):
    """Training cannot start or continue (bad config, refused inputs, checkpoint problems)."""


class EvaluationError(SiameseAudioError):
    """Evaluation cannot run (refused checkpoint/split/feature combinations, bad settings)."""
