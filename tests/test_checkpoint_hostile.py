"""Issue 15, items 10 and 13: hostile checkpoint metadata is a one-line TrainingError before any model is built;
``--resume`` removes what a kill during the ``last.pt`` write left."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from siamese_audio.errors import TrainingError
from siamese_audio.features.dummies import make_synthetic_version
from siamese_audio.features.store import open_version
from siamese_audio.manifests.splits import Split, write_split
from siamese_audio.training.checkpoint import load_checkpoint, load_embedder
from tests.hostile import cli, one_line_error, write_checkpoint

CLASSES = [f"{i:02d}" for i in range(1, 11)]
SPLIT = Split("audiomnist", "file", None, {"train": CLASSES[:5], "validation": CLASSES[5:7], "test": CLASSES[7:]})


@pytest.fixture(scope="module")
def v(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("ck")
    path = make_synthetic_version(root / "store", classes=CLASSES, clips_per_class=4, shape=(16, 20), seed=2)
    return SimpleNamespace(version=open_version(path), split_path=write_split(SPLIT, root / "split.parquet"))


def _state(v, **changes) -> dict:
    from siamese_audio.training.config import preset
    from siamese_audio.training.model import build_model

    state = build_model(preset("tiny")[0], v.version.shape, seed=0).state_dict()
    return {**state, **changes}


def _tiny(**changes) -> dict:
    from siamese_audio.training.config import preset

    return {**dataclasses.asdict(preset("tiny")[0]), **changes}


HOSTILE = {
    "fc_units 1e9 (int)": (lambda v: {"model_config": _tiny(fc_units=10**9)}, r"describes [\d,]+ parameters"),
    "fc_units 1e9 (float)": (lambda v: {"model_config": _tiny(fc_units=1e9)}, "expected fc_units to be a positive"),
    "conv filters 2**40": (lambda v: {"model_config": _tiny(conv_filters=[2**40, 12])}, "parameters for input"),
    "model config a list": (lambda v: {"model_config": [1, 2]}, "expected model_config to be a table"),
    "unknown model key": (lambda v: {"model_config": _tiny(heads=3)}, r"unknown \['heads'\]"),
    "input shape zero": (lambda v: {"input_shape": [0, 20]}, "expected input_shape to be two sizes"),
    "input shape huge": (lambda v: {"input_shape": [2**40, 20]}, "expected input_shape to be two sizes"),
    "input shape text": (lambda v: {"input_shape": "16x20"}, "expected input_shape to be two sizes"),
    "input shape float": (lambda v: {"input_shape": [16.0, 20]}, "expected input_shape to be two sizes"),
    "input shape pooled away": (lambda v: {"input_shape": [3, 20]}, "pool the input"),
    "input shape of other weights": (lambda v: {"input_shape": [32, 40]}, r"weight encoder.layers.\d+.weight has shape"),
    "wrong tensor shape": (lambda v: {"model_state": _state(v, **{"head.weight": torch.zeros(1, 7)})},
                           r"weight head.weight has shape \(1, 7\); its model config and input shape make it \(1, 64\)"),
    "missing tensor": (lambda v: {"model_state": {k: t for k, t in _state(v).items() if k != "head.bias"}},
                       r"missing \['head.bias'\]"),
    "extra tensor": (lambda v: {"model_state": _state(v, extra=torch.zeros(2))}, r"unexpected \['extra'\]"),
    "integer tensor": (lambda v: {"model_state": _state(v, **{"head.bias": torch.zeros(1, dtype=torch.int64)})},
                       "expected weight head.bias to be a float tensor"),
    "NaN weights": (lambda v: {"model_state": _state(v, **{"head.bias": torch.tensor([float("nan")])})},
                    "weight head.bias holds NaN or Inf"),
    "model state a list": (lambda v: {"model_state": [1]}, "expected model_state to map weight names"),
    "classes not text": (lambda v: {"training_classes": [1, 2]}, "expected training_classes to be a list"),
    "bad kind": (lambda v: {"kind": "worst"}, "expected kind 'best' or 'last'"),
    "bad history": (lambda v: {"history": [{"epoch": "x"}]}, "expected history to be a list of validation"),
    "bad train config": (lambda v: {"train_config": {"loss": "hinge"}}, "expected loss in"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_checkpoint_metadata_is_one_training_error(v, tmp_path, case):
    changes, match = HOSTILE[case]
    path = write_checkpoint(tmp_path / "best.pt", v.version, SPLIT, **changes(v))
    with pytest.raises(TrainingError, match=match) as err:
        load_embedder(path, "cpu")
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_evaluate_with_a_hostile_checkpoint_is_one_line(v, tmp_path, capsys):
    path = write_checkpoint(tmp_path / "best.pt", v.version, SPLIT, model_config=_tiny(fc_units=10**9))
    code, out, err = cli(capsys, "evaluate", str(path), "--features", str(v.version.path), "--split",
                         str(v.split_path), "--device", "cpu", "--out", str(tmp_path / "rep"))
    assert code == 2 and "parameters" in one_line_error(err, "evaluate")


def _train(run_dir: Path, v, *, resume: bool = False):
    from siamese_audio.training.config import preset
    from siamese_audio.training.data import open_training_inputs
    from siamese_audio.training.loop import fit, run_data_from_inputs

    model, train = preset("tiny")
    train = dataclasses.replace(train, max_epochs=4, eval_every=2, eval_tasks=6, ways=2)
    data = run_data_from_inputs(open_training_inputs(v.version.path, v.split_path))
    return fit(data, model, train, run_dir, device="cpu", progress=False, resume=resume)


def test_resume_refuses_a_last_checkpoint_with_a_hostile_resume_state(v, tmp_path):
    run = tmp_path / "run"
    _train(run, v)
    payload = load_checkpoint(run / "last.pt")
    payload["optimizer_state"] = {"state": {}, "param_groups": [{"params": [0], "lr": 1.0}]}
    torch.save(payload, run / "last.pt")
    with pytest.raises(TrainingError, match=r"last.pt: its optimizer lists parameters \[0\]; the network has"):
        _train(run, v, resume=True)
    payload["rng_states"] = {"numpy": {"state": 1}, "torch": torch.zeros(3)}
    torch.save(payload, run / "last.pt")
    with pytest.raises(TrainingError, match="expected rng_states with a 'numpy' table and a 'torch' byte tensor"):
        _train(run, v, resume=True)


def _killed_while_writing(path: Path) -> None:
    """SIGKILL a process in the middle of ``write_atomic(path, ...)``, after its bytes hit the temporary file."""
    script = ("import os, signal, sys\n"
              "from siamese_audio import files\n"
              "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
              "files.write_atomic(sys.argv[1], b'x' * 100000)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd="/")
    assert proc.returncode == -9


def test_resume_removes_what_a_kill_during_the_last_checkpoint_write_left(v, tmp_path):
    run = tmp_path / "run"
    _train(run, v)
    before = (run / "last.pt").read_bytes()
    _killed_while_writing(run / "last.pt")
    left = [p.name for p in run.iterdir() if p.name.startswith(".last.pt.tmp-")]
    assert len(left) == 1 and (run / "last.pt").read_bytes() == before
    _train(run, v, resume=True)
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]


def test_a_fresh_run_removes_temporaries_of_a_killed_first_write(v, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _killed_while_writing(run / "last.pt")
    assert not (run / "last.pt").exists() and any(p.name.startswith(".last.pt.tmp-") for p in run.iterdir())
    _train(run, v)
    assert not [p for p in run.iterdir() if ".tmp-" in p.name]
    assert os.path.getsize(run / "last.pt") > 0
