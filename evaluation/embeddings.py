"""Embeddings of a feature version's clips, written for use in other tools.

One idea: choose the stored clips (all, a split's partition, or named classes), embed each once
with an :class:`~siamese_audio.evaluation.embedder.Embedder`, and write them with an index that
names every row. Two formats:

- ``parquet``: ``embeddings.parquet`` with the index columns and an ``embedding`` column
  (a fixed-size list of float32, one per clip);
- ``npy``: ``embeddings.npy`` (float32, ``(N, D)``) and ``index.parquet`` whose row ``i`` names
  row ``i`` of the matrix.

Both come with ``embeddings.json`` (checkpoint, feature version, dimension, count, selection).
Every file is written atomically, so a failed run leaves no half-written output.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siamese_audio.errors import EvaluationError
from siamese_audio.evaluation.embedder import Embedder
from siamese_audio.evaluation.evaluator import embed_rows
from siamese_audio.files import first_names, write_atomic, write_json_atomic, write_parquet_atomic

#: Output formats of :func:`write_embeddings`.
FORMATS: tuple[str, ...] = ("parquet", "npy")

#: Catalog columns copied into the index (those present in the version's catalog).
INDEX_COLUMNS: tuple[str, ...] = ("row", "clip_id", "class", "source_path", "fold", "src_file")


@dataclass(frozen=True)
class EmbedSelection:
    """Which stored clips to embed.

    Attributes
    ----------
    classes : tuple of str
        Only these classes (empty: no class filter).
    split_path : str or None
        A split manifest; with ``partition``, only the classes of that partition.
    partition : str or None
        ``train``, ``validation`` or ``test`` of ``split_path``.
    """

    classes: tuple[str, ...] = ()
    split_path: str | None = None
    partition: str | None = None


def select_rows(stored: pd.DataFrame, selection: EmbedSelection, split_classes: Sequence[str] | None = None
                ) -> pd.DataFrame:
    """The catalog rows to embed, in store-row order.

    Parameters
    ----------
    stored : pandas.DataFrame
        The version's stored clips (``FeatureVersion.stored()``).
    selection : EmbedSelection
        The class filter.
    split_classes : sequence of str, optional
        Classes of the chosen split partition (``None``: no split filter).

    Raises
    ------
    EvaluationError
        A named class the version does not hold, or a selection that leaves no clip.
    """
    known = set(stored["class"].unique().tolist())
    frame = stored
    if selection.classes:
        unknown = sorted(set(selection.classes) - known)
        if unknown:
            raise EvaluationError(f"--classes: expected classes of this feature version. Unknown: "
                                  f"{first_names(unknown)}.")
        frame = frame[frame["class"].isin(selection.classes)]
    if split_classes is not None:
        unknown = sorted(set(split_classes) - known)
        if unknown:
            raise EvaluationError(f"{selection.split_path}: its {selection.partition} classes are not all in this "
                                  f"feature version. Missing: {first_names(unknown)}.")
        frame = frame[frame["class"].isin(list(split_classes))]
    if frame.empty:
        raise EvaluationError("Expected at least one stored clip to embed. The selection leaves none.")
    return frame.sort_values("row").reset_index(drop=True)


def embed_selected(embedder: Embedder, read: Any, frame: pd.DataFrame, *, batch_size: int = 64,
                   progress: bool = True) -> np.ndarray:
    """Embed the clips of ``frame`` once each.

    Parameters
    ----------
    embedder : Embedder
        Spectrograms ``(B, n_mels, n_frames)`` → embeddings ``(B, D)``.
    read : callable
        ``read(rows) -> float32 (len(rows), n_mels, n_frames)`` (``FeatureVersion.read``).
    frame : pandas.DataFrame
        Rows to embed (a ``row`` column of store rows).
    batch_size : int
        Clips per read and per ``embed`` call.
    progress : bool
        A tqdm bar on stderr.

    Returns
    -------
    np.ndarray [shape=(len(frame), D), dtype=float32]
    """
    from tqdm import tqdm

    rows = frame["row"].to_numpy(dtype=np.int64)
    parts: list[np.ndarray] = []
    with tqdm(total=rows.shape[0], desc="embed", unit="clip", file=sys.stderr, disable=not progress,
              dynamic_ncols=True) as bar:
        step = max(int(batch_size), 1) * 8
        for start in range(0, rows.shape[0], step):
            part = rows[start:start + step]
            parts.append(embed_rows([embedder], read, part, batch_size=batch_size)[0])
            bar.update(part.shape[0])
    out = np.concatenate(parts).astype(np.float32, copy=False)
    if not np.all(np.isfinite(out)):
        bad = int((~np.isfinite(out).all(axis=1)).sum())
        raise EvaluationError(f"Expected finite embeddings. {bad} of {out.shape[0]} clips gave NaN or infinity.")
    return out


def index_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The index columns of ``frame`` (those of :data:`INDEX_COLUMNS` it has)."""
    return frame[[c for c in INDEX_COLUMNS if c in frame.columns]].reset_index(drop=True)


def write_embeddings(out_dir: str | os.PathLike[str], index: pd.DataFrame, matrix: np.ndarray, *, fmt: str,
                     info: Mapping[str, Any]) -> list[Path]:
    """Write ``matrix`` (``(N, D)`` float32) and its ``index`` (N rows) in ``fmt``; returns the files.

    Raises
    ------
    EvaluationError
        An unknown format, or an index and a matrix of different lengths.
    """
    import pyarrow as pa

    if fmt not in FORMATS:
        raise EvaluationError(f"Expected --format one of {list(FORMATS)}. Got {fmt!r}.")
    if matrix.ndim != 2 or matrix.shape[0] != len(index):
        raise EvaluationError(f"Expected one embedding per index row ({len(index)}). Got shape {matrix.shape}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if fmt == "parquet":
        table = pa.Table.from_pandas(index, preserve_index=False)
        flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
        column = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
        table = table.append_column("embedding", column)
        write_parquet_atomic(out / "embeddings.parquet", table)
        written.append(out / "embeddings.parquet")
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
        write_atomic(out / "embeddings.npy", buffer.getvalue())
        write_parquet_atomic(out / "index.parquet", pa.Table.from_pandas(index, preserve_index=False))
        written += [out / "embeddings.npy", out / "index.parquet"]
    payload = {**dict(info), "format": fmt, "n_clips": int(matrix.shape[0]), "dimension": int(matrix.shape[1]),
               "files": [p.name for p in written]}
    write_json_atomic(out / "embeddings.json", json.loads(json.dumps(payload, default=str)))
    written.append(out / "embeddings.json")
    return written


def selection_info(selection: EmbedSelection) -> dict[str, Any]:
    """The selection as a JSON-ready dict (for ``embeddings.json``)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(selection).items()}
