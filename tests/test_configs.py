"""The example files configs/*.toml are the presets written out: `train --config` reads each back as its preset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from siamese_audio.training.config import PRESETS, load_config, preset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_preset_has_an_example_file():
    assert sorted(p.stem for p in CONFIGS.glob("*.toml")) == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_an_example_file_loads_as_its_preset(name):
    path = CONFIGS / f"{name}.toml"
    assert load_config(path) == preset(name)
    # every field is written out (not inherited): on another base preset the file still gives its own
    other = "tiny" if name != "tiny" else "report-esc50"
    model, train = load_config(path, preset_name=other)
    want_model, want_train = preset(name)
    for got, want in ((model, want_model), (train, want_train)):
        for field in dataclasses.fields(want):
            if getattr(want, field.name) is not None:
                assert getattr(got, field.name) == getattr(want, field.name), f"{name}: {field.name}"


def test_an_edited_example_file_changes_that_field(tmp_path):
    text = (CONFIGS / "cpu-esc50.toml").read_text().replace("\nlr = ", "\nlr = 0.001  # was ", 1)
    (tmp_path / "mine.toml").write_text(text)
    model, train = load_config(tmp_path / "mine.toml")
    assert train.lr == 0.001 and model == preset("cpu-esc50")[0]
