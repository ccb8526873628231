"""Decoding one audio file into a mono float32 buffer, with clear reasons on failure."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from siamese_audio.errors import AudioDecodeError
from siamese_audio.features.transform import resample, to_mono

#: Sample rates a file may declare, Hz: outside them a header is damaged or hostile (a WAV that
#: claims 1 Hz asks the resampler for 44,100 output samples per input sample).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
#: Most channels a file may declare.
MAX_CHANNELS = 64
#: Most samples (frames x channels) decoded from one file: 2**25 is 128 MB as float32 (12.7 min of
#: mono at 44.1 kHz). Checked from the header, before anything is decoded.
MAX_DECODED_SAMPLES = 2**25
#: Most samples after resampling to the preset's rate (6.3 min at 44.1 kHz), also from the header.
MAX_RESAMPLED_SAMPLES = 2**24


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded clip, before resampling.

    Attributes
    ----------
    samples : np.ndarray [shape=(n,), dtype=float32]
        Mono samples (stereo averaged, as ``librosa.load`` does).
    sample_rate : int
        Rate as read from the file.
    channels : int
        Channels as read from the file.
    """

    samples: np.ndarray
    sample_rate: int
    channels: int


def wav_declared_frames(path: str) -> int | None:
    """Frames a RIFF/WAVE header declares (its ``data`` chunk size / block align).

    libsndfile quietly reads a truncated WAV up to where the bytes stop; this
    lets :func:`decode` tell such a file apart. ``None`` for other formats or
    headers that declare no usable size (streamed files write 0 or 0xFFFFFFFF).
    """
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
                if len(fmt) >= 14:
                    block_align = struct.unpack("<H", fmt[12:14])[0]
            elif cid == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), 1)


def check_header(path: str, *, sample_rate: int, channels: int, frames: int, target_sr: int | None) -> None:
    """Refuse, before decoding, a header whose rate, channels or length would exhaust memory.

    Raises
    ------
    AudioDecodeError
        Naming the file, what the header declares and the limit.
    """
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"{path}: the header declares a sample rate of {sample_rate} Hz; expected "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz.")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(f"{path}: the header declares {channels} channels; expected 1..{MAX_CHANNELS}.")
    if frames * channels > MAX_DECODED_SAMPLES:
        raise AudioDecodeError(
            f"{path}: the header declares {frames} frames x {channels} channels; expected at most "
            f"{MAX_DECODED_SAMPLES} samples.")
    if target_sr is not None and frames * target_sr > MAX_RESAMPLED_SAMPLES * sample_rate:
        resampled = -(-frames * target_sr // sample_rate)
        raise AudioDecodeError(
            f"{path}: {frames} frames at {sample_rate} Hz would be {resampled} samples at {target_sr} Hz; "
            f"expected at most {MAX_RESAMPLED_SAMPLES}.")


def decode(path: str | os.PathLike[str], *, target_sr: int | None = None) -> DecodedAudio:
    """Read an audio file that soundfile decodes (wav, flac, ogg, ...).

    Only regular files are opened. The header's rate, channels and length are
    checked (:func:`check_header`, with the resampled length when ``target_sr``
    is given) before any sample is decoded.

    Raises
    ------
    AudioDecodeError
        Naming the file and the reason: not a regular file, empty file, a header
        out of bounds, not decodable (truncated, corrupt, not audio), no samples,
        NaN or Inf samples, unreadable.
    """
    import stat

    import soundfile as sf

    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AudioDecodeError(f"{path}: cannot read the file ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(st.st_mode):
        raise AudioDecodeError(f"{path}: expected an audio file, found a directory.")
    if not stat.S_ISREG(st.st_mode):
        raise AudioDecodeError(f"{path}: expected a regular audio file, found a FIFO, device or socket.")
    if st.st_size == 0:
        raise AudioDecodeError(f"{path}: empty file (0 bytes).")
    try:
        with sf.SoundFile(path) as f:
            sample_rate = int(f.samplerate)
            channels = int(f.channels)
            check_header(path, sample_rate=sample_rate, channels=channels, frames=int(f.frames), target_sr=target_sr)
            if f.subtype == "PCM_16":
                # libsndfile scales PCM16 by 1/32768 when it returns floats; doing the
                # same scaling here gives identical samples in a quarter of the time.
                raw = f.read(dtype="int16", always_2d=False)
                data = np.multiply(raw, np.float32(1.0 / 32768.0), dtype=np.float32)
            else:
                data = f.read(dtype="float32", always_2d=False)
    except sf.LibsndfileError as exc:
        raise AudioDecodeError(f"{path}: not decodable as audio ({exc.error_string}).") from exc
    except (RuntimeError, sf.SoundFileError) as exc:
        raise AudioDecodeError(f"{path}: not decodable as audio ({exc}).") from exc
    except (OSError, MemoryError) as exc:
        raise AudioDecodeError(f"{path}: cannot read the file ({getattr(exc, 'strerror', None) or exc}).") from exc
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path}: no samples (the header says 0 frames).")
    declared = wav_declared_frames(path)
    if declared is not None and data.shape[0] < declared:
        raise AudioDecodeError(
            f"{path}: truncated: the WAV header declares {declared} frames, the file holds {data.shape[0]}."
        )
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioDecodeError(f"{path}: {bad} NaN or Inf samples; expected finite audio.")
    return DecodedAudio(samples=to_mono(data), sample_rate=sample_rate, channels=channels)


def load_resampled(path: str | os.PathLike[str], *, target_sr: int) -> tuple[np.ndarray, DecodedAudio]:
    """Decode, downmix and resample to ``target_sr`` (scipy FFT method).

    Returns
    -------
    y : np.ndarray [shape=(m,), dtype=float32]
    decoded : DecodedAudio
        What was read, before resampling.
    """
    decoded = decode(path, target_sr=target_sr)
    y = resample(decoded.samples, orig_sr=decoded.sample_rate, target_sr=target_sr)
    return y, decoded
