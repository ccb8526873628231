"""The feature build's checks of the workers of an existing Dask cluster.

Before a build on a cluster, every worker is asked whether it can read the source files and write
the store at the client's paths, how many BLAS threads it runs, and whether its feature code and
libraries (what the feature version id stands for) are the client's. The connection itself is the
shared plumbing's (:mod:`siamese_audio.cluster`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from siamese_audio.errors import DatasetLayoutError, StoreError
from siamese_audio.files import probe_writable

log = logging.getLogger(__name__)

def probe_worker(source_file: str, store_dir: str) -> dict[str, Any]:
    """Run on every worker before a build: can it use the two paths, how many BLAS threads?

    Runs beside the worker's task thread (``Client.run``), so it imports nothing
    heavy and changes nothing that a running task uses.

    Parameters
    ----------
    source_file : str
        One source clip, as the client sees it: the worker must be able to read it.
    store_dir : str
        The directory that will hold the version (``STORE/DATASET``): the worker
        must be able to create files in it.

    Returns
    -------
    dict
        ``pid``; ``threads``: ``{library: threads}`` of the BLAS/OpenMP pools loaded
        in the worker; ``problems``: one sentence per path the worker cannot use
        (empty when both are fine); ``versions``: its :func:`environment`.
    """
    problems = []
    try:
        with open(source_file, "rb") as f:
            f.read(1)
    except OSError as exc:
        problems.append(f"cannot read the source file {source_file} ({exc.strerror or exc})")
    reason = probe_writable(store_dir)
    if reason is not None:
        problems.append(f"cannot create files in the store directory {store_dir} ({reason})")
    threads: dict[str, int] = {}
    try:
        from threadpoolctl import threadpool_info  # a dependency of librosa (through scikit-learn)

        threads = {f"{p['internal_api']}:{Path(p['filepath']).name}": int(p["num_threads"])
                   for p in threadpool_info()}
    except Exception:  # noqa: BLE001 - a report only; never fail a build over it
        pass
    return {"pid": os.getpid(), "threads": threads, "problems": problems, "versions": environment()}


def environment() -> dict[str, str]:
    """What the feature version id stands for in this process: the feature code and its libraries.

    The client fingerprints its own; the workers compute the bytes, so theirs must match.
    """
    from siamese_audio.features.fingerprint import FEATURE_FORMAT_VERSION, byte_library_versions, code_digest

    return {"feature_format": str(FEATURE_FORMAT_VERSION), "feature_code": code_digest(),
            **byte_library_versions()}


def check_workers(client, *, source_file: Path, store_dir: Path) -> dict[str, dict[str, Any]]:
    """Run :func:`probe_worker` on every worker; fail fast when one cannot see a path.

    Waits for a first worker when the cluster has none yet (workers of a batch
    system may still be queued). Warns (stderr) about workers whose BLAS/OpenMP
    pools have more than one thread: with one worker process per core they
    oversubscribe the machine.

    Raises
    ------
    DatasetLayoutError
        A worker cannot read the source files at the client's path.
    StoreError
        A worker cannot write into the store directory, or runs other feature code
        or library versions than the client (the version id would not describe its bytes).
    """
    if not client.scheduler_info().get("workers"):
        log.info(f"Waiting for a first Dask worker to join {client.scheduler.address} ...")
        client.wait_for_workers(1)
    reports = client.run(probe_worker, str(source_file), str(store_dir))
    bad = {addr: r["problems"] for addr, r in sorted(reports.items()) if r["problems"]}
    if bad:
        lines = [f"worker {addr}: {p}" for addr, problems in bad.items() for p in problems]
        cls = DatasetLayoutError if any("source file" in line for line in lines) else StoreError
        raise cls(
            f"Expected every Dask worker to read the dataset and write the store at the client's paths "
            f"(e.g. {source_file} and {store_dir}). {len(bad)} of {len(reports)} "
            "worker(s) do not:\n  " + "\n  ".join(lines)
            + "\nMount the same shared filesystem at the same path on the client and every worker."
        )
    ours = environment()
    differ = [f"worker {addr}: {name} {r['versions'].get(name, 'absent')} (client: {ours[name]})"
              for addr, r in sorted(reports.items()) for name in ours if r["versions"].get(name) != ours[name]]
    if differ:
        raise StoreError(
            "Expected every Dask worker to run the client's feature code and libraries (the version id "
            "stands for them). Found differences:\n  " + "\n  ".join(differ)
            + "\nInstall the same environment (same siamese-audio checkout and package versions) everywhere."
        )
    for addr, r in sorted(reports.items()):
        many = {lib: n for lib, n in r["threads"].items() if n > 1}
        if many:
            log.warning(f"worker {addr} runs {many} threads; start workers with OMP_NUM_THREADS=1 "
                        "OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 and --nthreads 1 (one process per core).")
    return reports
