"""Feature build on the local default cluster vs a hand-started scheduler + 2 worker processes.

Same machine, same data, same command (``siamese-audio build``); only where the Dask
graph runs differs. The real AudioMNIST samples of ``../shared/data/audiomnist`` are
copied under new names until there are at least 1,500 clips (as in ``bench_build.py``).
The cluster is started the way users start one (``dask scheduler``, ``dask worker
--nworkers 1 --nthreads 1``), before the timed command, and stopped afterwards.

Prints, for each way, the whole command's wall time and the graph's wall time, and the
ratios cluster / local (target: the cluster at most 10% slower). Runs alternate
(local, cluster, local, cluster, ...) so a busy machine hurts both alike; the median counts.

    python benchmarks/bench_cluster.py [--data ../shared/data] [--min-clips 1500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build import PINNED, replicate_audiomnist  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def start_cluster(work: Path, n_workers: int, env: dict[str, str]) -> tuple[str, list[subprocess.Popen]]:
    """``dask scheduler`` + ``n_workers`` × ``dask worker``; returns the scheduler file and the processes."""
    sched_file = work / "scheduler.json"
    dask = [sys.executable, "-m", "dask"]
    log = open(work / "cluster.log", "ab")
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=log, stderr=log, env=env,
                              start_new_session=True, cwd=REPO)]
    deadline = time.monotonic() + 60
    while not sched_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    for i in range(n_workers):
        procs.append(subprocess.Popen([*dask, "worker", "--scheduler-file", str(sched_file), "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                                      stdout=log, stderr=log, env=env, start_new_session=True, cwd=REPO))
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout="60s") as client:
        client.wait_for_workers(n_workers, timeout=120)
    return str(sched_file), procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def timed_build(src: Path, store: Path, extra: list[str], env: dict[str, str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "siamese_audio.cli", "build", "audiomnist", str(src), "--store", str(store),
           "--json", "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--min-clips", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not (args.data / "audiomnist").is_dir():
        raise SystemExit(f"{args.data / 'audiomnist'} is absent: this benchmark needs the real samples.")
    env = {**os.environ, **PINNED}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        src = work / "audiomnist-src"
        n = replicate_audiomnist(args.data / "audiomnist", src, args.min_clips)
        print(f"== audiomnist: {n} clips (real samples copied under new names), {os.cpu_count()} cores ==",
              flush=True)
        sched_file, procs = start_cluster(work, 2, env)
        runs: dict[str, list[tuple[float, float]]] = {"local": [], "cluster": []}
        ids = set()
        try:
            for k in range(args.repeats):
                for way, extra in (("local", []), ("cluster", ["--scheduler", sched_file])):
                    out, wall = timed_build(src, work / f"store-{way}-{k}", extra, env)
                    ids.add(out["version_id"])
                    runs[way].append((wall, out["timing"]["graph_wall_s"]))
                    print(f"  run {k + 1} {way:7s}: whole command {wall:6.2f} s, graph {runs[way][-1][1]:6.2f} s",
                          flush=True)
        finally:
            stop_cluster(procs)
    med = {way: (statistics.median(w for w, _ in r), statistics.median(g for _, g in r)) for way, r in runs.items()}
    (lw, lg), (cw, cg) = med["local"], med["cluster"]
    print(f"local default (2 worker processes, started by the command): whole command {lw:.2f} s, graph {lg:.2f} s")
    print(f"scheduler + 2 hand-started workers (already running):        whole command {cw:.2f} s, graph {cg:.2f} s")
    print(f"cluster / local: whole command {cw / lw:.2f}x, graph {cg / lg:.2f}x (target <= 1.10x)")
    print(f"same version id everywhere: {len(ids) == 1}", flush=True)


if __name__ == "__main__":
    main()
