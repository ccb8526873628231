"""Running the graph: the write tasks (with a progress bar and timings) and the ``--strict`` pre-check."""

from __future__ import annotations

import sys
import time
from typing import Any

from siamese_audio.errors import AudioDecodeError, StoreError
from siamese_audio.features.clip import ClipTask
from siamese_audio.features.config import FeatureConfig
from siamese_audio.pipeline.tasks import BatchSpec, check_batch, write_batch


def run_batches(client, specs: list[BatchSpec], *, progress: bool) -> dict[str, Any]:
    """Run the write tasks; return timings (graph wall time, per-task CPU seconds)."""
    from distributed import as_completed
    from tqdm import tqdm

    if not specs:
        return {}
    t0 = time.perf_counter()
    tasks = []
    n_clips = sum(len(s.clips) for s in specs)
    futures = client.map(write_batch, specs, pure=False,  # one message to the scheduler for all the tasks
                         key=[f"write-batch-{s.batch_index}-{s.version_path[-20:]}" for s in specs])
    with tqdm(total=n_clips, unit="clip", desc="build", file=sys.stderr, disable=not progress) as bar:
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except OSError as exc:  # raised on a worker: a full disk, a permission
                raise StoreError(
                    f"{specs[0].version_path}: a task could not write the feature version "
                    f"({exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}). Nothing was sealed and "
                    "what was written stays valid: fix the cause (free space) and run the build again; it resumes."
                ) from None
            bar.update(len(result["clips"]))
            tasks.append({k: result[k] for k in ("batch", "cpu_s", "wall_s", "worker_pid")}
                         | {"clips": len(result["clips"])})
    return {"graph_wall_s": time.perf_counter() - t0, "tasks": sorted(tasks, key=lambda t: t["batch"])}


def strict_check(client, batches: list[tuple[ClipTask, ...]], config: FeatureConfig, crop_long: bool,
                 layout_rejects: list[dict[str, Any]]) -> None:
    """Decode every clip on the workers and refuse the build, before writing anything, if any would be rejected.

    Raises
    ------
    AudioDecodeError
        Listing the first 20 problems (file and reason) and how many there are.
    """
    from distributed import as_completed

    problems = [f"{r['source_path'] or r['clip_id']}: {r['reason']}" for r in layout_rejects]
    futures = [client.submit(check_batch, b, config, crop_long, pure=False) for b in batches]
    for fut in as_completed(futures):
        problems += [c["reason"] for c in fut.result() if c["status"] != "stored"]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise AudioDecodeError(
            f"--strict: {len(problems)} clip(s) would be rejected; nothing was written.\n  {shown}{more}"
        )
