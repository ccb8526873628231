"""Where a Dask graph runs: a local cluster by default, or an existing scheduler.

Shared plumbing: the feature build and the tune study both connect through :func:`dask_client`.
On an existing cluster (``dask scheduler`` / ``dask worker`` started by hand, dask-jobqueue,
Kubernetes) the build first checks its workers (``pipeline.workers.check_workers``); the task
functions settle zarr's concurrency and malloc in each worker themselves (``pipeline.tasks``), so
workers started by hand get them too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

from siamese_audio.errors import SiameseAudioError
from siamese_audio.files import MIB, read_regular

log = logging.getLogger(__name__)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_threads() -> None:
    """One BLAS/FFT thread per process: Dask runs one worker process per core."""
    for var in THREAD_VARS:
        os.environ[var] = "1"


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None) -> Iterator[object]:
    """A ``distributed.Client``: on ``scheduler`` if given, else on a local cluster.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the local cluster (default: one per core), each
        with one thread.
    scheduler : str, optional
        Address of an existing scheduler, e.g. ``tcp://10.0.0.5:8786``, or the
        path of the JSON file that ``dask scheduler --scheduler-file`` wrote.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        with _connect(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    pin_threads()
    env = {var: "1" for var in THREAD_VARS}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env,
                          "distributed.worker.daemon": False}):
        try:
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   silence_logs=logging.ERROR)
        except (RuntimeError, OSError, TimeoutError) as exc:
            reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise SiameseAudioError(
                f"Expected a local Dask cluster of {n} worker processes to start. It did not ({reason}). Local "
                "workers talk to their scheduler over TCP on 127.0.0.1: check that the loopback interface is up, "
                "or pass --scheduler with the address of a running one."
            ) from exc
        with cluster, Client(cluster) as client:
            yield client


def _connect(scheduler: str):
    """A client of the scheduler at ``scheduler`` (an address or a scheduler file)."""
    from distributed import Client

    is_file = check_scheduler(scheduler)
    try:
        if is_file:
            return Client(scheduler_file=scheduler, timeout="30s")
        return Client(scheduler, timeout="30s")
    except (OSError, ValueError) as exc:
        kind = "the scheduler named in the file" if is_file else "a Dask scheduler at"
        raise SiameseAudioError(
            f"Expected {kind} {scheduler} to answer within 30 s. It did not ({type(exc).__name__}: {exc}). "
            "Start one with `dask scheduler` and pass its address (tcp://HOST:PORT) or its --scheduler-file."
        ) from exc


def check_scheduler(scheduler: str) -> bool:
    """Whether ``scheduler`` names a scheduler file (True) or an address (False); refuse neither at once.

    An address is ``PROTOCOL://...`` or ``HOST:PORT``; anything else must be an existing JSON
    file with an ``address`` (what ``dask scheduler --scheduler-file`` writes). Nothing waits.
    """
    if "://" in scheduler or re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):[0-9]{1,5}", scheduler):
        return False
    path = Path(scheduler)
    if not path.is_file():
        raise SiameseAudioError(
            f"Expected --scheduler to be a scheduler address (tcp://HOST:PORT) or an existing scheduler file. "
            f"Got {scheduler!r}: no such file."
        )
    try:
        address = json.loads(read_regular(path, max_bytes=MIB, what="scheduler file")).get("address")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise SiameseAudioError(f"{path}: expected a Dask scheduler file (JSON with an address). "
                                f"Cannot read it ({exc}).") from None
    if not isinstance(address, str) or "://" not in address:
        raise SiameseAudioError(f"{path}: expected a Dask scheduler file (JSON with an address). "
                                f"Its address is {address!r}.")
    return True
