"""The clip catalog: one Parquet row per clip of a feature version (byte-deterministic)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from siamese_audio.files import write_parquet_atomic

BASE_COLUMNS: dict[str, str] = {
    "row": "int64",            # row in the store; -1 when the clip was rejected
    "clip_id": "string",
    "class": "string",
    "source_path": "string",   # relative to the dataset root
    "source_hash": "string",   # hash of the file's bytes, hex ("" if unreadable)
    "source_hash_algorithm": "string",  # which hash: "blake3" (b3sum prints the same), "" if none
    "sample_rate": "int64",    # as read (0 if not decoded)
    "channels": "int64",       # as read (0 if not decoded)
    "n_samples": "int64",      # as read, at the file's own rate (0 if not decoded)
    "pad_offset": "int64",     # zeros placed before the clip, at the preset's rate
    "cropped": "bool",         # cut to the preset length (--crop-long)
    "status": "string",        # "stored" | "rejected"
    "reason": "string",        # why rejected, or a note (e.g. cropped); "" otherwise
}


def _arrow_type(name: str):
    import pyarrow as pa

    return {"int64": pa.int64(), "string": pa.string(), "bool": pa.bool_()}[name]


def write_catalog(path: Path, records: Iterable[dict[str, Any]], extra_columns: dict[str, str]) -> None:
    """Write catalog records to Parquet, sorted by clip id then source path.

    Nothing time-dependent goes into the file, so the same records give the same bytes.
    The table is parsed from JSON lines by Arrow's C++ reader rather than built from
    Python lists: the same table and the same bytes, without pyarrow importing pandas
    for its list conversion (half a second of the build's client).
    """
    import pyarrow as pa
    import pyarrow.json as pj

    columns = {**BASE_COLUMNS, **extra_columns}
    rows = sorted(records, key=lambda r: (r["clip_id"], r["source_path"], r["reason"]))
    schema = pa.schema([(name, _arrow_type(kind)) for name, kind in columns.items()])
    if rows:
        lines = b"".join(json.dumps({name: r.get(name) for name in columns}, ensure_ascii=False).encode() + b"\n"
                         for r in rows)
        table = pj.read_json(
            pa.BufferReader(lines), read_options=pj.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        ).combine_chunks()
    else:
        table = schema.empty_table()
    write_parquet_atomic(path, table, compression="zstd", write_statistics=False, store_schema=False)
