"""Where the Dask graph runs: a local cluster by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def pin_threads() -> None:
    """One BLAS/FFT thread per process: Dask runs one worker process per core."""
    for var in THREAD_VARS:
        os.environ[var] = "1"


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None) -> Iterator["object"]:
    """A ``distributed.Client``: on ``scheduler`` if given, else on a local cluster.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the local cluster (default: one per core), each
        with one thread.
    scheduler : str, optional
        Address of an existing scheduler, e.g. ``tcp://10.0.0.5:8786``.
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    pin_threads()
    env = {var: "1" for var in THREAD_VARS}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env,
                          "distributed.worker.daemon": False}):
        with LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.ERROR,
        ) as cluster, Client(cluster) as client:
            yield client
