"""Precision: ``"bf16-native"`` takes bf16 only where the hardware computes it, float32 on other CPUs.

Emulated bf16 on a CPU without AVX-512 BF16 or AMX made a ``cpu-esc50`` step ~10x slower than float32
(benchmarks/bench_precision.py), so the CPU presets ask for bf16 only where it is native.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.training import precision as precision_module
from siamese_audio.training.config import TrainConfig, preset
from siamese_audio.training.embedder import autocast_context
from siamese_audio.training.loop import fit
from siamese_audio.training.precision import cpu_flags, resolve_precision
from tests.test_training_recipes import MODEL, TRAIN, texture_data

CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    """Pretend this CPU has (True) or lacks (False) bf16 in hardware."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: value)
    return set_native


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}
    arm = tmp_path / "cpuinfo-arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert "bf16" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert cpu_flags(tmp_path) == frozenset()  # a directory: unreadable, no flags


def test_bf16_native_resolves_by_the_hardware(native):
    native(True)
    assert resolve_precision("bf16-native", CPU) == "bf16"
    native(False)
    assert resolve_precision("bf16-native", CPU) == "fp32"
    assert resolve_precision("bf16-native", "cuda") == "auto"  # bf16 autocast on CUDA
    for explicit in ("auto", "bf16", "fp32"):  # an explicit choice is kept whatever the hardware
        assert resolve_precision(explicit, CPU) == explicit
    with pytest.raises(TrainingError, match="Expected precision among .*'bf16-native'.* Got 'bf17'"):
        resolve_precision("bf17", CPU)


def test_autocast_follows_the_resolved_precision(native):
    native(False)
    with autocast_context(CPU, "bf16-native"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    native(True)
    with autocast_context(CPU, "bf16-native"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cpu_presets_ask_for_native_bf16_and_configs_check_the_value():
    for name in ("cpu-esc50", "cpu-audiomnist"):
        assert preset(name)[1].precision == "bf16-native"
    assert TrainConfig(precision="bf16-native").precision == "bf16-native"
    with pytest.raises(TrainingError, match="precision"):
        TrainConfig(precision="bf17")


def test_a_run_records_what_its_steps_ran_in(tmp_path, native):
    data, _ = texture_data()
    config = dataclasses.replace(TRAIN, max_epochs=2, eval_every=2, eval_tasks=10, precision="bf16-native")
    native(False)
    assert fit(data, MODEL, config, tmp_path / "a", device="cpu", progress=False).precision == "fp32"
    native(True)
    assert fit(data, MODEL, config, tmp_path / "b", device="cpu", progress=False).precision == "bf16"
    assert fit(data, MODEL, config, tmp_path / "c", device="cpu", progress=False, precision="fp32").precision == "fp32"
