"""Write configs/<preset>.toml for every training preset (run again when a preset changes; tests/test_configs.py
checks that the files and the presets agree): ``.venv/bin/python configs/write_presets.py``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from siamese_audio.training.config import PRESETS
from siamese_audio.training.tune.outputs import _toml_value


def preset_toml(name: str) -> str:
    """Every non-None field of preset ``name`` as a ``train --config`` file."""
    model, train = PRESETS[name]
    lines = [f"# The {name} preset written out: copy this file, edit any field, then",
             f"#   siamese-audio train --config configs/{name}.toml --features VERSION --split SPLIT --out RUN_DIR",
             "# (fields are those of training/config.py's ModelConfig and TrainConfig; docs/training.md explains them).",
             f"preset = {_toml_value(name)}", ""]
    for section, config in (("model", model), ("train", train)):
        lines.append(f"[{section}]")
        for key, value in dataclasses.asdict(config).items():
            if value is None:
                lines.append(f"# {key} is unset")
                continue
            if key == "ratio":
                value = f"{value[0]}:{value[1]}"
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    for preset_name in PRESETS:
        (Path(__file__).resolve().parent / f"{preset_name}.toml").write_text(preset_toml(preset_name))
