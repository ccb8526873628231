"""What a build reports: :class:`BuildResult`, read back from a sealed version's catalog."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio.features import store


@dataclass
class BuildResult:
    """What a build did; ``to_json`` is what ``build --json`` prints."""

    version_id: str
    path: Path
    n_stored: int
    n_rejected: int
    already_sealed: bool
    rejected: list[dict[str, str]]
    warnings: list[str]
    class_counts: dict[str, int]
    timing: dict[str, Any] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)  # what --repair found damaged and rewrote

    def to_json(self) -> dict[str, Any]:
        return {
            "version_id": self.version_id, "path": str(self.path), "n_stored": self.n_stored,
            "n_rejected": self.n_rejected, "already_sealed": self.already_sealed,
            "rejected": self.rejected, "warnings": self.warnings, "class_counts": self.class_counts,
            "timing": self.timing, "repaired": self.repaired,
        }


def result_from_catalog(vid: str, path: Path, *, already_sealed: bool) -> BuildResult:
    """Summary of a sealed version from its catalog (pyarrow only: pandas costs 0.3 s to import)."""
    import pyarrow.parquet as pq

    # ParquetFile, not read_table: the latter makes pyarrow import pandas (0.3-0.6 s of a no-op rebuild).
    rows = pq.ParquetFile(path / store.CATALOG).read(columns=["clip_id", "class", "source_path", "status",
                                                              "reason"]).to_pylist()
    stored = [r for r in rows if r["status"] == "stored"]
    rejected = [r for r in rows if r["status"] != "stored"]
    counts = Counter(r["class"] for r in stored)
    all_classes = sorted({r["class"] for r in rows} - {""})
    warnings = [
        f"class {c!r} has {counts.get(c, 0)} stored clip(s); one-shot needs at least 2"
        for c in all_classes if counts.get(c, 0) < 2
    ]
    return BuildResult(
        version_id=vid, path=path, n_stored=len(stored), n_rejected=len(rejected),
        already_sealed=already_sealed,
        rejected=[{"clip_id": r["clip_id"], "source_path": r["source_path"], "reason": r["reason"]}
                  for r in rejected],
        warnings=warnings, class_counts=dict(sorted(counts.items())),
    )
