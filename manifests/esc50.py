"""ESC-50 adapter: ``ROOT/audio/{fold}-{src}-{take}-{target}.wav`` + ``ROOT/meta/esc50.csv``.

Class = ``category`` ("glass_breaking"); fold, target, esc10, src_file and take
are kept as columns. Files and CSV rows are matched by clip id (the file stem),
so a clip re-encoded as .flac or .ogg still finds its row.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.manifests.sources import (
    AUDIO_EXTENSIONS,
    ClipSource,
    DatasetScan,
    Rejection,
    file_problem,
    file_stat,
    is_hidden,
    name_problem,
    parse_int64,
    printable,
)

#: A whole file stem (fullmatch: a trailing newline is not part of a clip id).
NAME = re.compile(r"(?P<fold>[0-9]+)-(?P<src>[^-]+)-(?P<take>[A-Za-z0-9]+)-(?P<target>[0-9]+)")
REQUIRED = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
COLUMN_TYPES = {"fold": "int64", "target": "int64", "esc10": "bool", "src_file": "string", "take": "string"}


def _parse_bool(value: str) -> bool | None:
    return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower())


def read_csv(path: Path) -> tuple[dict[str, tuple[int, dict]], list[tuple[int, str, str]]]:
    """Parse ``esc50.csv``.

    Returns
    -------
    rows : dict
        clip id → (CSV line number, parsed row).
    bad : list of (line, clip id, reason)
        Rows that cannot be used (bad values, duplicates).

    Raises
    ------
    DatasetLayoutError
        The file is missing, unreadable, or lacks required columns.
    """
    if not path.exists() and not path.is_symlink():
        raise DatasetLayoutError(
            f"{path}: expected ESC-50's metadata file meta/esc50.csv. It is missing."
        )
    problem = file_problem(path)
    if problem is not None:
        raise DatasetLayoutError(f"expected ESC-50's metadata file meta/esc50.csv, a regular file. {problem}.")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise DatasetLayoutError(
                    f"{path}: expected columns {list(REQUIRED)}. Missing {missing} (header: {header})."
                )
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetLayoutError(f"{path}: cannot parse as CSV ({exc}).") from exc
    rows: dict[str, tuple[int, dict]] = {}
    bad: list[tuple[int, str, str]] = []
    for i, row in enumerate(raw, start=2):
        name = (row.get("filename") or "").strip()
        clip_id = Path(name).stem
        if not clip_id:
            bad.append((i, f"row{i}", f"esc50.csv line {i}: empty filename"))
            continue
        parsed = {
            "category": (row["category"] or "").strip(),
            "fold": parse_int64(row["fold"] or ""), "target": parse_int64(row["target"] or ""),
            "esc10": _parse_bool(row["esc10"] or ""),
            "src_file": (row["src_file"] or "").strip(), "take": (row["take"] or "").strip(),
        }
        if parsed["fold"] is None or parsed["target"] is None:
            got = printable(f"fold {row['fold']!r}, target {row['target']!r}")[:200]
            bad.append((i, clip_id, f"esc50.csv line {i}: expected integer fold and target within 64 bits "
                                    f"(got {got})"))
            continue
        if not parsed["category"] or parsed["esc10"] is None:
            bad.append((i, clip_id, f"esc50.csv line {i}: expected a category and esc10 True/False"))
            continue
        texts = [k for k in ("category", "src_file", "take") if name_problem(parsed[k]) is not None]
        if texts or name_problem(clip_id) is not None:
            bad.append((i, clip_id, f"esc50.csv line {i}: expected printable text in "
                                    f"{texts or ['filename']} (control characters found)"))
            continue
        if clip_id in rows:
            bad.append((i, clip_id, f"esc50.csv line {i}: duplicate of line {rows[clip_id][0]}"))
            continue
        rows[clip_id] = (i, parsed)
    return rows, bad


def scan(root: str | Path) -> DatasetScan:
    """Find ESC-50 clips under ``root`` (the folder that holds ``audio/`` and ``meta/``).

    Raises
    ------
    DatasetLayoutError
        When ``audio/`` or ``meta/esc50.csv`` is missing or the CSV is malformed.
    """
    root = Path(root)
    audio = root / "audio"
    if not audio.is_dir():
        raise DatasetLayoutError(
            f"{root}: expected the ESC-50 release layout ROOT/audio/*.wav + ROOT/meta/esc50.csv. "
            f"Found no folder {audio}."
        )
    rows, bad_rows = read_csv(root / "meta" / "esc50.csv")
    rejections = [Rejection(cid, "", "", reason) for _, cid, reason in bad_rows]
    bad_ids = {cid for _, cid, _ in bad_rows}
    clips: dict[str, ClipSource] = {}
    unreadable: set[str] = set()
    for path in sorted(p for p in audio.iterdir() if not is_hidden(p.name)):
        rel = path.relative_to(root).as_posix()
        stem = path.stem
        problem = name_problem(path.name)
        if problem is None and (path.is_dir() or path.suffix.lower() not in AUDIO_EXTENSIONS
                                or NAME.fullmatch(stem) is None):
            problem = "name does not fit the layout {fold}-{src}-{take}-{target}.wav"
        if problem is not None:
            rejections.append(Rejection(stem, "", rel, problem))
            continue
        if stem not in rows:
            if stem not in bad_ids:
                rejections.append(Rejection(stem, "", rel, "no row for this file in meta/esc50.csv"))
            continue
        line, row = rows[stem]
        columns = {k: row[k] for k in COLUMN_TYPES}
        stat, problem = file_stat(path)
        if problem is not None:
            rejections.append(Rejection(stem, row["category"], rel, problem, columns))
            unreadable.add(stem)
            continue
        if stem in clips:
            rejections.append(Rejection(
                stem, row["category"], rel,
                f"duplicate clip id: {clips[stem].source_path} has the same id", columns))
            continue
        clips[stem] = ClipSource(stem, row["category"], rel, columns, stat)
    for clip_id, (line, row) in sorted(rows.items()):
        if clip_id not in clips and clip_id not in unreadable:
            columns = {k: row[k] for k in COLUMN_TYPES}
            rejections.append(Rejection(
                clip_id, row["category"], f"audio/{clip_id}.wav",
                f"esc50.csv line {line} lists it but there is no such file in audio/", columns))
    return DatasetScan(
        dataset="esc50", root=root,
        clips=tuple(sorted(clips.values(), key=lambda c: c.clip_id)),
        rejections=tuple(rejections), column_types=COLUMN_TYPES,
    )
