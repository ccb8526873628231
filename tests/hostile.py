"""Helpers of the hostile-input tests: damage a file in place, write a real tiny checkpoint, run the CLI."""

from __future__ import annotations

import os
from pathlib import Path

from siamese_audio.cli import main


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    """Flip bits of one byte of a (possibly read-only, sealed) file; its size stays the same."""
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the console script in-process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, command: str) -> str:
    """The one error line ``siamese-audio COMMAND: error: ...`` ending stderr (log lines may come before it).

    Fails when stderr holds a traceback or the error spans several lines.
    """
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith(f"siamese-audio {command}: error: ")]
    assert errors == [len(lines) - 1], err
    return lines[-1]


def write_checkpoint(path: Path, version, split, **changes) -> Path:
    """A real checkpoint (untrained tiny network) for ``version`` and ``split``, with payload ``changes``."""
    from siamese_audio.training.checkpoint import describe, save_checkpoint
    from siamese_audio.training.config import preset
    from siamese_audio.training.model import build_model

    model_config, train_config = preset("tiny")
    described = describe(model_config=model_config, train_config=train_config, input_shape=version.shape,
                         run_meta={"feature_version_id": version.version_id,
                                   "feature_config": dict(version.feature_config), "split_id": split.split_id,
                                   "dataset": version.dataset, "training_classes": list(split.classes["train"]),
                                   "validation_classes": list(split.classes["validation"]),
                                   "features_path": str(version.path), "split_path": ""})
    model = build_model(model_config, version.shape, seed=0)
    payload = {**described, "kind": "best", "model_state": model.state_dict(), "epoch": 0,
               "best_val_accuracy": 0.0, "best_epoch": 0, "history": []}
    payload.update(changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, payload)
    return path


def wav_bytes(*, rate: int, channels: int = 1, bits: int = 16, fmt: int = 1, data: bytes = b"",
              declared: int | None = None) -> bytes:
    """A RIFF/WAVE file with any header values (PCM ``fmt`` 1, IEEE float 3), ``data`` as its samples.

    ``declared``: the data chunk size the header claims (default ``len(data)``).
    """
    import struct

    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels & 0xFFFF, rate & 0xFFFFFFFF, (rate * block) & 0xFFFFFFFF,
                            block & 0xFFFF, bits)
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", size & 0xFFFFFFFF)
    return b"RIFF" + struct.pack("<I", (len(body) + len(data)) & 0xFFFFFFFF) + body + data
