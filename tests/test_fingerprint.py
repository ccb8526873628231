"""The feature format version guards the stored bytes: a golden test over fixed generated inputs.

``FEATURE_FORMAT_VERSION`` stands for the code that turns sources into stored
bytes. This test computes, on fixed inputs made of closed-form signals (no
random generator), everything ``features/`` decides: the log-mel arrays of
both presets (decoding, downmix, resampling, the pad offset, rejection and
cropping of long clips), the shard bytes, and the catalog records. Their
SHA-256 must equal the values recorded for the current format version in
``tests/golden/feature_format.json``. When a change alters them on purpose,
bump the format version and record the new values:

    .venv/bin/python tests/test_fingerprint.py --record
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from siamese_audio.features import fingerprint
from siamese_audio.features.clip import ClipTask, compute_block
from siamese_audio.features.config import preset
from siamese_audio.features.shard import encode_shard

GOLDEN = Path(__file__).parent / "golden" / "feature_format.json"

#: (clip id, sample rate, channels, seconds, tone Hz[, scale]): short clips are padded, long ones cropped or
#: rejected; a clip with a scale is a float WAV of that peak (1e20: its log-mel overflows and it is rejected).
CLIPS = {
    "audiomnist": [("0_01_0", 48_000, 1, 0.61, 220.0), ("1_01_0", 48_000, 2, 0.9, 440.0),
                   ("2_02_0", 44_100, 1, 1.0, 330.0), ("3_02_0", 22_050, 1, 0.37, 880.0),
                   ("4_03_0", 48_000, 1, 1.3, 550.0), ("5_03_0", 48_000, 1, 0.5, 660.0, 1e20)],
    "esc50": [("1-100-A-0", 44_100, 1, 3.1, 300.0), ("1-101-A-1", 48_000, 2, 5.0, 1000.0),
              ("2-102-A-2", 44_100, 1, 5.0, 2000.0), ("2-103-A-3", 44_100, 1, 7.2, 150.0),
              ("3-104-A-4", 44_100, 1, 2.0, 500.0, 1e20)],
}


def _signal(sample_rate: int, channels: int, seconds: float, tone: float) -> np.ndarray:
    """A decaying tone with a chirp, closed form (the same samples on every machine)."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    y = 0.4 * np.sin(2 * np.pi * tone * t) * np.exp(-2.0 * t) + 0.1 * np.sin(2 * np.pi * (tone * 2 + 300 * t) * t)
    if channels == 2:
        y = np.stack([y, 0.5 * y], axis=1)
    return y


def digests(root: Path, *, seed: int = 7, crop_long: bool) -> dict[str, str]:
    """SHA-256 of the arrays, shards and catalog records ``features/`` makes of :data:`CLIPS`."""
    from siamese_audio.features.records import catalog_records
    from siamese_audio.manifests.sources import ClipSource

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, clips in CLIPS.items():
        config = preset(name)
        tasks, sources = [], []
        for row, (clip_id, sr, channels, seconds, tone, *scale) in enumerate(clips):
            path = root / f"{clip_id}.wav"
            if scale:
                sf.write(path, _signal(sr, channels, seconds, tone) * scale[0], sr, subtype="FLOAT")
            else:
                sf.write(path, _signal(sr, channels, seconds, tone), sr, subtype="PCM_16")
            tasks.append(ClipTask(row, clip_id, str(path)))
            sources.append((ClipSource(clip_id=clip_id, label="c", source_path=path.name, columns={}), "h"))
        block, infos = compute_block(tuple(tasks), config, seed=seed, crop_long=crop_long, first_row=0)
        shard = encode_shard(block, chunks_per_shard=8, codec="blosc-lz4") or b""
        for info in infos:  # reasons name the temporary path; keep their wording, not the path
            info["reason"] = info["reason"].replace(str(root), "ROOT")
        records = catalog_records(sources, {i["row"]: i for i in infos}, [])
        out[f"{name}/arrays"] = hashlib.sha256(np.ascontiguousarray(block, dtype="<f4").tobytes()).hexdigest()
        out[f"{name}/shard"] = hashlib.sha256(shard).hexdigest()
        out[f"{name}/catalog"] = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    return out


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


def format_digests(root: Path) -> dict[str, str]:
    """The digests the golden file records: a store built with ``crop_long`` and one that rejects long clips, under ``root``."""
    return {**digests(root / "crop", crop_long=True),
            **{f"{k}/rejecting": v for k, v in digests(root / "reject", crop_long=False).items()}}


def blas_architecture() -> str:
    """The kernel set OpenBLAS picked for this CPU at run time (e.g. ``Haswell``, ``SkylakeX``), or ``"unknown"``.

    The log-mel arrays go through BLAS (the mel projection), and OpenBLAS's DYNAMIC_ARCH builds pick
    per-CPU kernels whose float rounding differs: the same code and library versions gave other array
    bytes on an AVX2-only AMD EPYC (``Haswell`` kernels) than on the AVX-512 machines that recorded
    format 3, while numpy's own SIMD dispatch changed nothing (checked with ``NPY_DISABLE_CPU_FEATURES``).
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    names = sorted({i.get("architecture") or "" for i in threadpool_info() if i.get("internal_api") == "openblas"})
    return "+".join(n for n in names if n) or "unknown"


def expected_digests(recorded: dict, architecture: str) -> dict[str, str]:
    """The recorded digests for this BLAS ``architecture``: the format's own, with the keys its CPU changes replaced."""
    return {**recorded["digests"], **recorded.get("by_blas_architecture", {}).get(architecture, {})}


def test_stored_bytes_match_the_recorded_format_version(tmp_path):
    recorded = _golden().get(str(fingerprint.FEATURE_FORMAT_VERSION))
    assert recorded is not None, (
        f"No golden values for feature format {fingerprint.FEATURE_FORMAT_VERSION}: record them with "
        "`python tests/test_fingerprint.py --record`.")
    found = format_digests(tmp_path)
    # Compressed shard bytes also depend on the codec library (blosc inside numcodecs), whose version the id
    # covers anyway: compare them only under the recorded numcodecs, so a new release of it cannot fail CI.
    same_codec = recorded["libraries"].get("numcodecs") == fingerprint.byte_library_versions()["numcodecs"]
    architecture = blas_architecture()
    expected = expected_digests(recorded, architecture)
    checked = [k for k in expected if same_codec or "/shard" not in k]
    changed = sorted(k for k in checked if found.get(k) != expected[k])
    assert not changed, (
        f"The stored bytes changed for the same inputs ({changed}) but FEATURE_FORMAT_VERSION is still "
        f"{fingerprint.FEATURE_FORMAT_VERSION}: a version id would name two different stores. Bump it in "
        "features/fingerprint.py and record the new values (python tests/test_fingerprint.py --record). "
        f"If only the arrays and shards differ and the code did not change, this CPU's BLAS kernels "
        f"({architecture!r}) round differently from those recorded: record them with "
        "`python tests/test_fingerprint.py --record-blas`.")


def test_only_blas_kernels_may_change_array_bytes():
    """Per-CPU digests may replace array and shard digests only, never the catalog's (CPU-independent)."""
    for version, recorded in _golden().items():
        for architecture, digests_ in recorded.get("by_blas_architecture", {}).items():
            assert digests_ and all("/catalog" not in k for k in digests_), (version, architecture)
            assert set(digests_) <= set(recorded["digests"]), (version, architecture)
    recorded = {"digests": {"a/arrays": "1", "a/catalog": "2"}, "by_blas_architecture": {"Haswell": {"a/arrays": "3"}}}
    assert expected_digests(recorded, "Haswell") == {"a/arrays": "3", "a/catalog": "2"}
    assert expected_digests(recorded, "SkylakeX") == recorded["digests"]


def test_a_one_sample_change_in_padding_fails_the_golden_test(tmp_path, monkeypatch):
    from siamese_audio.features import transform

    real = transform.pad_offset
    before = digests(tmp_path / "a", crop_long=True)

    def shifted(*, seed, clip_id, n, target):
        offset = real(seed=seed, clip_id=clip_id, n=n, target=target)
        return offset + 1 if offset + 1 <= target - n else max(0, offset - 1)

    monkeypatch.setattr(transform, "pad_offset", shifted)
    after = digests(tmp_path / "b", crop_long=True)
    assert after["audiomnist/arrays"] != before["audiomnist/arrays"]
    assert after["esc50/arrays"] != before["esc50/arrays"]
    assert after["esc50/catalog"] != before["esc50/catalog"]  # the offsets are recorded too


def _inputs(**changes):
    args = dict(dataset="esc50", sources=[("1-100-A-0", "audio/1-100-A-0.wav", "ab" * 32)],
                feature_config=preset("esc50").to_dict(), layout={"clips_per_shard": 32, "codec": "blosc-lz4"},
                seed=0, crop_long=False)
    return {**args, **changes}


def test_version_id_covers_the_format_version_not_the_source_text(monkeypatch):
    vid, inputs = fingerprint.version_id(**_inputs())
    assert inputs["feature_format"] == fingerprint.FEATURE_FORMAT_VERSION
    assert "code" not in inputs and set(inputs["libraries"]) == set(fingerprint.BYTE_LIBRARIES)
    assert fingerprint.version_id(**_inputs())[0] == vid  # a function of its inputs only
    monkeypatch.setattr(fingerprint, "FEATURE_FORMAT_VERSION", fingerprint.FEATURE_FORMAT_VERSION + 1)
    assert fingerprint.version_id(**_inputs())[0] != vid


@pytest.mark.parametrize("change", [{"seed": 1}, {"crop_long": True}, {"dataset": "audiomnist"},
                                    {"sources": [("1-100-A-0", "audio/1-100-A-0.wav", "cd" * 32)]},
                                    {"layout": {"clips_per_shard": 16, "codec": "blosc-lz4"}}])
def test_version_id_changes_with_every_byte_determining_input(change):
    assert fingerprint.version_id(**_inputs(**change))[0] != fingerprint.version_id(**_inputs())[0]


def test_the_golden_file_records_each_format_version_once():
    golden = _golden()
    assert str(fingerprint.FEATURE_FORMAT_VERSION) in golden
    assert all(int(k) <= fingerprint.FEATURE_FORMAT_VERSION for k in golden)


if __name__ == "__main__" and sys.argv[1:] == ["--record-blas"]:
    # this CPU's BLAS kernels round differently: record the array / shard digests that differ, for this format
    import tempfile

    golden = _golden()
    key = str(fingerprint.FEATURE_FORMAT_VERSION)
    with tempfile.TemporaryDirectory() as tmp:
        found = format_digests(Path(tmp))
    differ = {k: v for k, v in found.items() if v != golden[key]["digests"][k]}
    if any("/catalog" in k for k in differ):
        sys.exit(f"catalog digests differ too ({sorted(differ)}): that is the code, not BLAS; bump the format")
    architecture = blas_architecture()
    if differ:
        golden[key].setdefault("by_blas_architecture", {})[architecture] = differ
        GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"format {key}, BLAS {architecture}: {len(differ)} digests recorded")

if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    import tempfile

    golden = _golden() if GOLDEN.is_file() else {}
    key = str(fingerprint.FEATURE_FORMAT_VERSION)
    if key in golden:
        sys.exit(f"{GOLDEN} already holds format {key}; bump FEATURE_FORMAT_VERSION for new bytes.")
    with tempfile.TemporaryDirectory() as tmp:
        found = format_digests(Path(tmp))
    golden[key] = {"libraries": fingerprint.byte_library_versions(), "digests": found}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"recorded feature format {key} in {GOLDEN}")
