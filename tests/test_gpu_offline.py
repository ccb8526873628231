"""The offline GPU path (benchmarks/gpu/): the wheel list in step with pyproject.toml, the closure check,
the real-data bundle and the table, on generated audio and fake wheels; nothing here needs a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU))

import check_wheels  # noqa: E402
import make_bundle  # noqa: E402
import table  # noqa: E402


def _pins() -> dict[str, str]:
    out = {}
    for line in (GPU / "wheels.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[canonicalize_name(req.name)] = str(req.specifier)
    return out


def test_every_dependency_of_the_project_is_carried_or_on_the_device_image():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    have = set(_pins()) | check_wheels.names_in(GPU / "preinstalled.txt") | {"torch"}
    missing = [d for d in deps if canonicalize_name(Requirement(d).name) not in have]
    assert missing == [], f"add to benchmarks/gpu/wheels.txt (or preinstalled.txt): {missing}"


def test_the_wheel_pins_are_exact_and_satisfy_the_projects_ranges():
    pins = _pins()
    assert all(spec.startswith("==") for spec in pins.values()), pins
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        if name in pins:
            assert dep.specifier.contains(pins[name][2:]), f"{name}: pin {pins[name]} outside {dep.specifier}"


def test_no_carried_wheel_shadows_a_package_of_the_image():
    assert set(_pins()) & check_wheels.names_in(GPU / "preinstalled.txt") == set()


def test_torch_range_admits_the_device_images_torch():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(Requirement(d) for d in deps if Requirement(d).name == "torch")
    assert torch.specifier.contains("2.11.0")


def _fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return path


def test_the_closure_check_names_a_missing_dependency_and_ignores_other_platforms(tmp_path):
    _fake_wheel(tmp_path, "alpha", "1.0", ["numpy>=1", "beta", 'gamma; python_version < "3.12"',
                                          'delta; sys_platform == "win32"', 'eps; extra == "docs"'])
    _fake_wheel(tmp_path, "beta", "2.0", ["zeta>=1"])
    found = check_wheels.problems(tmp_path, preinstalled={"numpy"}, pinned={"alpha", "beta"})
    assert len(found) == 1 and "zeta" in found[0] and found[0].startswith("beta-2.0")


def test_the_closure_check_refuses_two_wheels_of_one_package_and_a_pin_without_wheel(tmp_path):
    _fake_wheel(tmp_path, "alpha", "1.0", [])
    _fake_wheel(tmp_path, "alpha", "1.1", [])
    found = check_wheels.problems(tmp_path, preinstalled=set(), pinned={"alpha", "omega"})
    assert any("second wheel of alpha" in f for f in found)
    assert any("pins omega" in f for f in found)


def test_a_complete_folder_passes(tmp_path):
    _fake_wheel(tmp_path, "alpha", "1.0", ["torch>=2.2", "numpy"])
    assert check_wheels.problems(tmp_path, preinstalled={"numpy"}, pinned={"alpha"}) == []


@pytest.mark.skipif(not (ROOT / ".whl").is_dir(), reason="no .whl here (benchmarks/gpu/fetch_wheels.sh makes it)")
def test_the_fetched_wheels_are_complete():
    assert check_wheels.main([str(ROOT / ".whl")]) == 0


def test_the_shell_scripts_parse():
    for script in ("fetch_wheels.sh", "install_offline.sh", "device_run.sh", "bench_bundle.sh"):
        subprocess.run(["bash", "-n", str(GPU / script)], check=True)


@pytest.fixture(scope="module")
def esc50(tmp_path_factory):
    from siamese_audio.manifests.dummies import make_esc50

    return make_esc50(tmp_path_factory.mktemp("esc50"), classes=("dog", "rain", "siren"), clips_per_class=2,
                      seconds=1.0)


def test_the_bundle_is_opus_at_48k_mono_and_scans_as_the_same_clips(esc50, tmp_path):
    from siamese_audio.manifests.datasets import scan_dataset

    summary = make_bundle.make_bundle(esc50, tmp_path / "b", level=0.9, workers=1)
    assert summary["clips"] == 6
    for ogg in (tmp_path / "b" / "audio").glob("*.ogg"):
        info = sf.info(ogg)
        assert (info.subtype, info.samplerate, info.channels) == ("OPUS", 48_000, 1)
    original = {c.clip_id: c.label for c in scan_dataset("esc50", esc50).clips}
    bundled = {c.clip_id: c.label for c in scan_dataset("esc50", tmp_path / "b").clips}
    assert bundled == original


def test_the_bundle_is_deterministic_and_close_to_the_original(esc50, tmp_path):
    make_bundle.make_bundle(esc50, tmp_path / "one", level=0.5, workers=1)
    make_bundle.make_bundle(esc50, tmp_path / "two", level=0.5, workers=1)
    for a in sorted((tmp_path / "one" / "audio").glob("*.ogg")):
        assert a.read_bytes() == (tmp_path / "two" / "audio" / a.name).read_bytes()
    d = make_bundle.measure(esc50, tmp_path / "one", n=0, workers=1)
    assert d["clips"] == 6
    assert 0.0 < d["median_db"] < 3.0, d


def test_a_folder_that_is_no_release_layout_is_refused(tmp_path):
    (tmp_path / "audio").mkdir()
    with pytest.raises(SystemExit, match="release layout"):
        make_bundle.make_bundle(tmp_path, tmp_path / "out", level=0.9, workers=1)


def test_the_table_reads_each_steps_json(tmp_path):
    timing = {"pairs_per_s": 1234.5, "epoch_s": 0.8, "peak_gpu_bytes": 3 * 2**30, "loader_share": 0.05,
              "epochs_timed": 4}
    for preset, acc in (("report-esc50", 0.71), ("cpu-esc50", 0.66)):
        (tmp_path / f"train-{preset}.json").write_text(json.dumps({
            "epochs_run": 40, "elapsed_s": 180.0, "timing": timing, "best_epoch": 30, "best_val_accuracy": 0.7}))
        (tmp_path / f"eval-{preset}.json").write_text(json.dumps({
            "accuracy": acc, "ci95": [acc - 0.03, acc + 0.03], "n_tasks": 1000, "baseline_accuracy": 0.39}))
    (tmp_path / "speed-resident-bf16.json").write_text(json.dumps({"timing": timing}))
    assert table.main([str(tmp_path), "--minutes", "3", "--device", "cpu"]) == 0
    text = (tmp_path / "gpu-table.md").read_text()
    assert "| report-esc50 | 40 |" in text and "0.710 [0.680, 0.740], 1000" in text and "0.87" in text
    assert "| resident-bf16 | 1234 |" in text
    assert json.loads((tmp_path / "gpu-table.json").read_text())["accuracy"][1]["accuracy"] == 0.66


def test_the_table_without_results_says_so(tmp_path, capsys):
    assert table.main([str(tmp_path)]) == 1
    assert "no train-" in capsys.readouterr().err


def test_bundle_level_outside_the_unit_interval_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_bundle.main([str(tmp_path), str(tmp_path / "o"), "--level", "1.5"])
    assert "--level" in capsys.readouterr().err


def test_the_wav_header_of_a_bundle_source_may_be_stereo(tmp_path):
    """A stereo 48 kHz source (a v1 oddity) becomes one mono channel."""
    src = tmp_path / "1-100000-A-0.wav"
    t = np.arange(48_000) / 48_000
    sf.write(src, np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)], axis=1) * 0.3, 48_000)
    size = make_bundle.encode_clip((src, tmp_path / "x.ogg", 0.9))
    assert size > 0 and sf.info(tmp_path / "x.ogg").channels == 1


def test_the_build_reads_each_bundled_clip_at_the_originals_length(esc50, tmp_path):
    """The build pads a short clip at an offset drawn from its length: one sample off moves the whole clip."""
    from siamese_audio.features.audio import load_resampled

    make_bundle.make_bundle(esc50, tmp_path / "b", level=0.9, workers=1)
    for wav in sorted((esc50 / "audio").glob("*.wav")):
        original, _ = load_resampled(wav, target_sr=44_100)
        bundled, _ = load_resampled(tmp_path / "b" / "audio" / f"{wav.stem}.ogg", target_sr=44_100)
        assert len(bundled) == len(original), wav.name


@pytest.mark.parametrize("n", [1, 1000, 73_124, 88_200, 220_500, 220_501])
def test_the_bundled_length_maps_back_exactly(n):
    import math

    m = make_bundle.bundled_length(n)
    assert math.ceil(m * 44_100 / 48_000) == n
