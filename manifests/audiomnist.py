"""AudioMNIST adapter: ``ROOT/data/NN/{digit}_{NN}_{rep}.wav`` → clip sources.

Class = speaker id as a two-digit string ("04"); digit and repetition are kept
as columns. ``ROOT/data/audioMNIST_meta.txt`` (JSON keyed by speaker) is
optional; when present it must parse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.manifests.sources import (
    AUDIO_EXTENSIONS,
    INT64_MAX,
    ClipSource,
    DatasetScan,
    Rejection,
    file_problem,
    file_stat,
    is_hidden,
    name_problem,
)

#: A whole file stem (fullmatch: "0_01_0\n" is not a clip id).
NAME = re.compile(r"(?P<digit>[0-9])_(?P<speaker>[0-9]{2})_(?P<rep>[0-9]+)")
COLUMN_TYPES = {"digit": "int64", "rep": "int64"}


def read_meta(path: Path) -> dict:
    """Parse ``audioMNIST_meta.txt``; a malformed file is an error naming it."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetLayoutError(
            f"{path}: expected AudioMNIST's meta file (JSON keyed by speaker id). "
            f"Could not parse it: {exc}."
        ) from exc
    if not isinstance(meta, dict):
        raise DatasetLayoutError(
            f"{path}: expected a JSON object keyed by speaker id. Got {type(meta).__name__}."
        )
    return meta


def scan(root: str | Path) -> DatasetScan:
    """Find AudioMNIST clips under ``root`` (the folder that holds ``data/``).

    Raises
    ------
    DatasetLayoutError
        When ``root/data`` is missing or the meta file is malformed.
    """
    root = Path(root)
    data = root / "data"
    if not data.is_dir():
        raise DatasetLayoutError(
            f"{root}: expected the AudioMNIST release layout ROOT/data/NN/{{digit}}_{{NN}}_{{rep}}.wav. "
            f"Found no folder {data}."
        )
    meta_path = data / "audioMNIST_meta.txt"
    if meta_path.exists() or meta_path.is_symlink():
        problem = file_problem(meta_path)
        if problem is not None:
            raise DatasetLayoutError(f"expected AudioMNIST's meta file, a regular file. {problem}.")
        read_meta(meta_path)
    clips: dict[str, ClipSource] = {}
    rejections: list[Rejection] = []
    for speaker_dir in sorted(p for p in data.iterdir() if not is_hidden(p.name)):
        if not speaker_dir.is_dir():
            if speaker_dir.name != meta_path.name:
                rejections.append(Rejection(
                    speaker_dir.stem, "", speaker_dir.relative_to(root).as_posix(),
                    "not in a speaker folder data/NN/"))
            continue
        for path in sorted(p for p in speaker_dir.iterdir() if not is_hidden(p.name)):
            rel = path.relative_to(root).as_posix()
            problem = name_problem(path.name)
            match = NAME.fullmatch(path.stem) if problem is None else None
            if problem is None and (path.suffix.lower() not in AUDIO_EXTENSIONS or match is None):
                problem = "name does not fit the layout {digit}_{NN}_{rep}.wav"
            elif match is not None and match["speaker"] != speaker_dir.name:
                problem = f"speaker {match['speaker']} in the name but the file is in folder {speaker_dir.name}"
            elif match is not None and int(match["rep"]) > INT64_MAX:
                problem = f"repetition {match['rep']} in the name does not fit a 64-bit integer"
            stat = None
            if problem is None:
                stat, problem = file_stat(path)
            if problem is not None:
                rejections.append(Rejection(path.stem, speaker_dir.name, rel, problem))
                continue
            columns = {"digit": int(match["digit"]), "rep": int(match["rep"])}
            if path.stem in clips:
                rejections.append(Rejection(
                    path.stem, match["speaker"], rel,
                    f"duplicate clip id: {clips[path.stem].source_path} has the same id", columns))
                continue
            clips[path.stem] = ClipSource(path.stem, match["speaker"], rel, columns, stat)
    return DatasetScan(
        dataset="audiomnist", root=root,
        clips=tuple(sorted(clips.values(), key=lambda c: c.clip_id)),
        rejections=tuple(rejections), column_types=COLUMN_TYPES,
    )
