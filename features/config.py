"""Feature configurations: one frozen dataclass, one preset per dataset.

The presets follow the authors' preprocessing code (see ``shared/reference``):
the report's text says 41 kHz and hop 216 for AudioMNIST, the code resamples to
44,100 Hz with scipy's FFT method and uses hop 197 (224 frames).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from siamese_audio.errors import FeatureConfigError

RESAMPLERS = ("scipy",)


@dataclass(frozen=True)
class FeatureConfig:
    """How one clip becomes a log-mel spectrogram.

    Attributes
    ----------
    name : str
        Preset name (``"audiomnist"`` or ``"esc50"``), or a user's own label.
    sample_rate : int
        Rate every clip is resampled to, in Hz.
    n_samples : int
        Length every clip is zero-padded to, in samples at ``sample_rate``.
    n_fft, hop_length, n_mels : int
        STFT size, hop and number of mel bands (hann window, centred frames,
        constant zero padding, Slaney mel filters; librosa's defaults).
    resampler : str
        ``"scipy"``: ``scipy.signal.resample`` (librosa's ``res_type="scipy"``).
    top_db : float
        Floor of ``power_to_db``: each clip's own maximum minus ``top_db``.
    power : float
        Exponent of the STFT magnitude before the mel projection (librosa's
        ``melspectrogram(power=...)``): 2.0 (the presets, as the authors) for
        power, 1.0 for magnitude. ``power_to_db`` is applied either way, as
        ``librosa.power_to_db(melspectrogram(..., power=p))`` does.
    """

    name: str
    sample_rate: int
    n_samples: int
    n_fft: int
    hop_length: int
    n_mels: int
    resampler: str = "scipy"
    top_db: float = 80.0
    power: float = 2.0

    def __post_init__(self) -> None:
        for field in ("sample_rate", "n_samples", "n_fft", "hop_length", "n_mels"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise FeatureConfigError(
                    f"Feature config {self.name!r}: expected {field} to be a positive integer. "
                    f"Got {value!r} instead."
                )
        if (isinstance(self.power, bool) or not isinstance(self.power, (int, float))
                or not math.isfinite(self.power) or self.power <= 0):
            raise FeatureConfigError(
                f"Feature config {self.name!r}: expected power to be a positive number (2.0: power, "
                f"1.0: magnitude). Got {self.power!r} instead."
            )
        if not isinstance(self.top_db, (int, float)) or isinstance(self.top_db, bool) or not self.top_db > 0:
            raise FeatureConfigError(
                f"Feature config {self.name!r}: expected top_db to be a positive number. Got {self.top_db!r} instead."
            )
        if self.resampler not in RESAMPLERS:
            raise FeatureConfigError(
                f"Feature config {self.name!r}: expected resampler in {RESAMPLERS}. "
                f"Got {self.resampler!r} instead."
            )
        if self.n_mels > self.n_fft // 2 + 1:
            raise FeatureConfigError(
                f"Feature config {self.name!r}: n_mels ({self.n_mels}) exceeds the "
                f"{self.n_fft // 2 + 1} frequency bins of n_fft={self.n_fft}."
            )

    @property
    def n_frames(self) -> int:
        """Frames of a padded clip (centred STFT): ``1 + n_samples // hop_length``."""
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one clip's features: ``(n_mels, n_frames)``."""
        return (self.n_mels, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (the store's attributes hold it)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise FeatureConfigError(
                f"Expected feature config keys among {sorted(names)}. Got unknown {unknown}."
            )
        return cls(**data)


PRESETS: dict[str, FeatureConfig] = {
    "audiomnist": FeatureConfig(
        name="audiomnist", sample_rate=44_100, n_samples=44_100,
        n_fft=4096, hop_length=197, n_mels=224,
    ),
    "esc50": FeatureConfig(
        name="esc50", sample_rate=44_100, n_samples=220_500,
        n_fft=2048, hop_length=512, n_mels=128,
    ),
}


def preset(name: str) -> FeatureConfig:
    """Return the feature preset ``name`` (``"audiomnist"`` or ``"esc50"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise FeatureConfigError(
            f"Expected a feature preset among {sorted(PRESETS)}. Got {name!r} instead."
        ) from None
