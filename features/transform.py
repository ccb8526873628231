"""Pure transforms: mono → resample → pad → log-mel.

Every function here is a pure function of its inputs (the mel filter bank is
memoised per configuration, never rebuilt per clip). The log-mel equals
``librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft,
hop_length=hop, n_mels=n_mels), ref=1.0)`` to within a few thousandths of a dB;
it is faster because it windows frames straight from a strided view into one
reused float32 buffer, builds the filter bank once, and multiplies only the
bins each group of mel bands covers (the bank is >99% zeros).
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np
import scipy.fft

from siamese_audio.features.config import FeatureConfig

AMIN = 1e-10


def to_mono(y: np.ndarray) -> np.ndarray:
    """Downmix by averaging channels, as ``librosa.to_mono`` does.

    Parameters
    ----------
    y : np.ndarray [shape=(n,) or (n, channels)]
        Samples as soundfile returns them (frames first).

    Returns
    -------
    np.ndarray [shape=(n,)]
    """
    if y.ndim == 1:
        return y
    return np.mean(np.ascontiguousarray(y.T), axis=0)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with scipy's FFT method, exactly as librosa's ``res_type="scipy"``.

    ``scipy.signal.resample(y, num)`` for a real signal and no window, written
    out with ``scipy.fft`` (the same calls in the same order, so the output is
    identical; tested): importing scipy.signal costs ~0.7 s per worker process.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32]
    orig_sr, target_sr : int

    Returns
    -------
    np.ndarray [shape=(ceil(n * target_sr / orig_sr),), dtype=y.dtype]
    """
    if orig_sr == target_sr:
        return y
    n_x = y.shape[-1]
    num = int(math.ceil(n_x * (float(target_sr) / orig_sr)))
    s_fac = n_x / num
    m = min(num, n_x)
    spectrum = scipy.fft.rfft(y)[: m // 2 + 1]
    if m % 2 == 0 and num != n_x:  # the unpaired bin at m // 2
        spectrum[m // 2] *= 2 if num < n_x else 0.5
    out = scipy.fft.irfft(spectrum / s_fac, n=num, overwrite_x=True)
    return np.asarray(out, dtype=y.dtype)


def pad_offset(*, seed: int, clip_id: str, n: int, target: int) -> int:
    """Deterministic zero-pad offset of one clip.

    A function of ``(seed, clip_id)`` only, so it does not depend on file
    order, batch size or number of workers: uniform over ``0 .. target - n``.

    Returns
    -------
    int
        Number of zeros placed before the clip (0 when ``n >= target``).
    """
    slack = target - n
    if slack <= 0:
        return 0
    digest = hashlib.blake2b(f"{seed}\x00{clip_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (slack + 1)


def pad_to(y: np.ndarray, *, target: int, offset: int) -> np.ndarray:
    """Zero-pad ``y`` to ``target`` samples with ``offset`` zeros in front.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], n <= target

    Returns
    -------
    np.ndarray [shape=(target,), dtype=y.dtype]
    """
    if y.shape[0] > target or offset < 0 or offset + y.shape[0] > target:
        raise ValueError(
            f"Expected a clip of at most {target} samples placed at offset "
            f"0..{target - y.shape[0]}. Got {y.shape[0]} samples at offset {offset}."
        )
    out = np.zeros(target, dtype=y.dtype)
    out[offset : offset + y.shape[0]] = y
    return out


class MelProjection:
    """Multiply frame power spectra by the mel filter bank, band by band.

    Slaney filters are triangles over a few neighbouring FFT bins, so the bank
    is >99% zeros. It is cut into groups of ``group`` consecutive filters, each
    kept as a small dense block over the bins the group covers; each block is
    one BLAS product on a view of the power spectra, with no copy. Measured
    here: 0.18 ms a clip against 0.54 ms for a sparse-matrix product (which
    must first transpose the spectra) and 1.4-2.3 ms dense.

    Parameters
    ----------
    basis : np.ndarray [shape=(n_mels, n_bins), dtype=float32]
    """

    def __init__(self, basis: np.ndarray, group: int = 8) -> None:
        self.n_mels, self.n_bins = basis.shape
        self._blocks = []
        for start in range(0, self.n_mels, group):
            stop = min(self.n_mels, start + group)
            used = np.flatnonzero(basis[start:stop].any(axis=0))
            if used.size:
                lo, hi = int(used[0]), int(used[-1]) + 1
                self._blocks.append((start, stop, lo, hi, np.ascontiguousarray(basis[start:stop, lo:hi].T)))

    def __call__(self, power: np.ndarray) -> np.ndarray:
        """Mel power of frame spectra.

        Parameters
        ----------
        power : np.ndarray [shape=(n_frames, n_bins), dtype=float32]

        Returns
        -------
        np.ndarray [shape=(n_mels, n_frames), dtype=float32]
        """
        out = np.zeros((power.shape[0], self.n_mels), dtype=np.float32)
        for start, stop, lo, hi, block in self._blocks:
            np.matmul(power[:, lo:hi], block, out=out[:, start:stop])
        return np.ascontiguousarray(out.T)


@functools.lru_cache(maxsize=8)
def mel_basis(*, sample_rate: int, n_fft: int, n_mels: int) -> MelProjection:
    """librosa's Slaney mel filter bank (built once per configuration), as a :class:`MelProjection`."""
    from siamese_audio.features.mel import slaney_mel

    return MelProjection(slaney_mel(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels))


def _frames(y_padded: np.ndarray, n_fft: int, hop: int, n_frames: int) -> np.ndarray:
    """View of overlapping frames [shape=(n_frames, n_fft)] without copying."""
    step = y_padded.strides[0]
    return np.lib.stride_tricks.as_strided(
        y_padded, shape=(n_frames, n_fft), strides=(hop * step, step), writeable=False
    )


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """Periodic Hann window [shape=(n_fft,), dtype=float32], librosa's STFT default.

    ``scipy.signal.get_window("hann", n_fft, fftbins=True)``: 0.5 - 0.5 cos(2 pi n / n_fft).
    """
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.flags.writeable = False
    return window


def power_spectrogram_frames(
    y: np.ndarray, *, n_fft: int, hop_length: int, workspace: np.ndarray | None = None, power: float = 2.0
) -> np.ndarray:
    """``|STFT| ** power`` of the centred, Hann-windowed STFT, frames first (power 2: the power spectrum).

    Frames come from a strided view of the zero-padded signal and are windowed
    straight into one contiguous float32 buffer (one pass, no float64 copy).

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32]
    workspace : np.ndarray [shape=(1 + n // hop_length, n_fft), dtype=float32], optional
        Reused buffer for the windowed frames. Reusing it matters: an FFT over a
        freshly mapped 3.6 MB buffer measured 3x slower here (page faults).
    power : float
        Exponent of the magnitude (librosa's ``power``): 2 for power, 1 for magnitude.

    Returns
    -------
    np.ndarray [shape=(1 + n // hop_length, 1 + n_fft // 2), dtype=float32]
    """
    y = np.asarray(y, dtype=np.float32)
    n_frames = 1 + y.shape[0] // hop_length
    half = n_fft // 2
    frames = _frames(np.pad(y, (half, half)), n_fft, hop_length, n_frames)
    if workspace is None or workspace.shape != (n_frames, n_fft):
        workspace = np.empty((n_frames, n_fft), dtype=np.float32)
    np.multiply(frames, hann_window(n_fft), out=workspace)
    spec = scipy.fft.rfft(workspace, axis=-1, workers=1)
    out = np.square(spec.real)
    out += np.square(spec.imag)
    if power != 2.0:
        np.power(out, np.float32(power / 2.0), out=out)
    return out


def power_spectrogram(y: np.ndarray, *, n_fft: int, hop_length: int) -> np.ndarray:
    """``|librosa.stft(y, n_fft=n_fft, hop_length=hop_length)| ** 2``.

    Returns
    -------
    np.ndarray [shape=(1 + n_fft // 2, 1 + n // hop_length), dtype=float32]
    """
    return np.ascontiguousarray(power_spectrogram_frames(y, n_fft=n_fft, hop_length=hop_length).T)


def power_to_db(S: np.ndarray, *, top_db: float = 80.0) -> np.ndarray:
    """``librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=top_db)``.

    The floor is the clip's own maximum minus ``top_db`` (not an absolute level).
    """
    log_spec = 10.0 * np.log10(np.maximum(S, np.float32(AMIN)))
    return np.maximum(log_spec, log_spec.max() - np.float32(top_db)).astype(np.float32, copy=False)


class LogMel:
    """Log-mel extractor for one configuration, reusing its buffers between clips.

    Not thread-safe: use one instance per thread (the pipeline makes one per task).

    Parameters
    ----------
    config : FeatureConfig
    """

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        self._basis = mel_basis(
            sample_rate=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels
        )
        self._workspace = np.empty((config.n_frames, config.n_fft), dtype=np.float32)

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """Log-mel of an already resampled and padded clip.

        Parameters
        ----------
        y : np.ndarray [shape=(config.n_samples,), dtype=float32]

        Returns
        -------
        np.ndarray [shape=(config.n_mels, config.n_frames), dtype=float32]
        """
        config = self.config
        if y.shape != (config.n_samples,):
            raise ValueError(
                f"Expected a padded clip of shape ({config.n_samples},). Got {y.shape}."
            )
        spectra = power_spectrogram_frames(
            y, n_fft=config.n_fft, hop_length=config.hop_length, workspace=self._workspace, power=config.power
        )
        return power_to_db(self._basis(spectra), top_db=config.top_db)


def logmel(y: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel spectrogram of an already resampled and padded clip.

    Parameters
    ----------
    y : np.ndarray [shape=(config.n_samples,), dtype=float32]
    config : FeatureConfig

    Returns
    -------
    np.ndarray [shape=(config.n_mels, config.n_frames), dtype=float32]
    """
    return LogMel(config)(y)
