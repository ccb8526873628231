"""Feature build at scale: 2,000, 20,000 and 100,000 clips on a local cluster, side by side.

Generates once, outside the repository, a 100,000-clip dataset of short generated clips in the
AudioMNIST layout (100 speakers x 10 digits x 100 repetitions, 0.2-0.5 s at 48 kHz, PCM-16; about
4 GB), and the 2,000- and 20,000-clip datasets as hard links to its first files. Each size is built
by the console script (the client, a process of its own) on a scheduler and worker processes
started as users start them (``dask scheduler``, ``dask worker --nthreads 1``), fresh per size, so
every process's peak memory belongs to one build. Then the same command again: a no-op rebuild.

Prints, per size: the whole command, seconds per 1,000 clips (whole command, and the build's work
alone: listing, hashing, plan, graph, seal), each phase, the graph size (tasks), the client's,
the scheduler's and the workers' peak RSS, and the no-op rebuild; then the ratios of the largest
size to the smallest. Targets: client peak RSS <= 1 GB at 100k; per-clip time at 100k within 15%
of 2k (nothing quadratic in the number of clips).

    python benchmarks/bench_scale.py [--root /work/data/scale] [--sizes 2000 20000 100000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
          "NUMEXPR_NUM_THREADS": "1"}
SPEAKERS, DIGITS = 100, 10


def clip_names(n: int) -> list[str]:
    """The first ``n`` clips, repetition-major: every prefix spreads over all speakers and digits."""
    names = []
    for rep in range(-(-n // (SPEAKERS * DIGITS))):
        for speaker in range(SPEAKERS):
            for digit in range(DIGITS):
                names.append(f"data/{speaker:02d}/{digit}_{speaker:02d}_{rep}.wav")
    return names[:n]


def generate(root: Path, n: int) -> Path:
    """``root/src-N`` with ``n`` generated clips (skipped when already complete)."""
    import numpy as np
    import soundfile as sf

    src = root / f"src-{n}"
    done = src / ".complete"
    if done.is_file() and json.loads(done.read_text()).get("clips") == n:
        return src
    t0 = time.perf_counter()
    rng = np.random.default_rng(14)
    sr = 48_000
    for k, rel in enumerate(clip_names(n)):
        path = src / rel
        if k % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"  generating {k}/{n} clips ...", end="\r", file=sys.stderr, flush=True)
        speaker = int(rel.split("/")[1])
        length = int(sr * rng.uniform(0.2, 0.5))
        t = np.arange(length) / sr
        f0 = 90 + 3 * speaker + 20 * rng.standard_normal()
        y = np.sin(2 * np.pi * f0 * t) * np.exp(-3 * t) + 0.05 * rng.standard_normal(length)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.5 * y / np.abs(y).max()).astype(np.float32), sr, subtype="PCM_16")
    meta = {f"{s:02d}": {"accent": "generated", "age": "30", "gender": "male"} for s in range(SPEAKERS)}
    (src / "data" / "audioMNIST_meta.txt").write_text(json.dumps(meta))
    done.write_text(json.dumps({"clips": n}))
    print(f"generated {n} clips in {src} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return src


def subset(root: Path, full: Path, n: int) -> Path:
    """``root/src-N``: hard links to the first ``n`` clips of ``full`` (no extra disk)."""
    src = root / f"src-{n}"
    done = src / ".complete"
    if done.is_file() and json.loads(done.read_text()).get("clips") == n:
        return src
    for rel in clip_names(n):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (src / rel).exists():
            os.link(full / rel, src / rel)
    shutil.copy(full / "data" / "audioMNIST_meta.txt", src / "data" / "audioMNIST_meta.txt")
    done.write_text(json.dumps({"clips": n}))
    return src


# --------------------------------------------------------------------------------------------
# Processes and their peak memory


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class Cluster:
    def __init__(self, work: Path, n_workers: int, env: dict[str, str]) -> None:
        self.file = work / "scheduler.json"
        self.file.unlink(missing_ok=True)
        log = open(work / "cluster.log", "ab")
        dask = [sys.executable, "-m", "dask"]
        self.scheduler = subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                           "--no-dashboard", "--scheduler-file", str(self.file)],
                                          stdout=log, stderr=log, env=env, start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while not self.file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.workers = subprocess.Popen([*dask, "worker", "--scheduler-file", str(self.file), "--nworkers",
                                         str(n_workers), "--nthreads", "1", "--no-dashboard"],
                                        stdout=log, stderr=log, env=env, start_new_session=True, cwd=REPO)
        from distributed import Client

        with Client(scheduler_file=str(self.file), timeout="60s") as client:
            client.wait_for_workers(n_workers, timeout=120)
            self.worker_pids = sorted(client.run(os.getpid).values())

    def peaks(self) -> tuple[float, list[float]]:
        return peak_rss_mb(self.scheduler.pid), [peak_rss_mb(p) for p in self.worker_pids]

    def stop(self) -> None:
        for proc in (self.workers, self.scheduler):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.workers, self.scheduler):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def client_main(argv: list[str]) -> None:
    """The console script, then this process's peak RSS on stderr (the last line)."""
    sys.path.insert(0, str(REPO))
    from siamese_audio.cli import main

    code = main(argv)
    print(json.dumps({"client_peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)
    sys.exit(code)


def run_client(args: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--client", *args], env=env, capture_output=True, text=True,
                          cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr[-3000:]}")
    rss = json.loads(proc.stderr.strip().splitlines()[-1])["client_peak_rss_kb"] / 1024
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, rss


def measure(src: Path, n: int, store: Path, work: Path, workers: int, env: dict[str, str]) -> dict:
    shutil.rmtree(store, ignore_errors=True)
    cluster = Cluster(work, workers, env)
    try:
        load = os.getloadavg()[0]
        args = ["build", "audiomnist", str(src), "--store", str(store), "--scheduler", str(cluster.file),
                "--json", "--no-progress"]
        out, wall, client_rss = run_client(args, env)
        sched_rss, worker_rss = cluster.peaks()
        noop, noop_wall, noop_rss = run_client(args, env)
        if not noop["already_sealed"] or noop["timing"]["hash"]["hashed"]:
            raise SystemExit(f"the rebuild of {n} clips was not a cached no-op: {noop['timing']}")
    finally:
        cluster.stop()
    t = out["timing"]
    work_s = t["scan_s"] + t["hash"]["hash_s"] + t["plan_s"] + t["graph_wall_s"] + t["seal_s"]
    row = {"clips": n, "stored": out["n_stored"], "wall_s": wall, "work_s": work_s, "listing_s": t["scan_s"],
           "hash_s": t["hash"]["hash_s"], "plan_s": t["plan_s"], "graph_s": t["graph_wall_s"], "seal_s": t["seal_s"],
           "hash_tasks": t["hash"]["tasks"], "write_tasks": len(t["tasks"]), "client_rss_mb": client_rss,
           "scheduler_rss_mb": sched_rss, "worker_rss_mb": max(worker_rss), "noop_s": noop_wall,
           "noop_client_rss_mb": noop_rss, "load": load, "load_after": os.getloadavg()[0],
           "worker_cpu_ms_per_clip": 1000 * sum(x["cpu_s"] for x in t["tasks"]) / n,
           "hashed_mb": t["hash"]["hashed_bytes"] / 1e6}
    print(f"  {n:>7,} clips: whole command {wall:7.1f} s = {1000 * wall / n:.2f} s per 1,000 clips; work "
          f"{1000 * work_s / n:.2f} s per 1,000 (listing {t['scan_s']:.2f} s, hashing {row['hash_s']:.2f} s, plan "
          f"{t['plan_s']:.2f} s, graph {t['graph_wall_s']:.1f} s, seal {t['seal_s']:.2f} s); write tasks' CPU "
          f"{row['worker_cpu_ms_per_clip']:.2f} ms per clip; hashed {row['hashed_mb']:.0f} MB; graph "
          f"{row['hash_tasks']} hash + {row['write_tasks']} write tasks; peak RSS client {client_rss:.0f} MB, "
          f"scheduler {sched_rss:.0f} MB, workers {max(worker_rss):.0f} MB; no-op rebuild {noop_wall:.2f} s "
          f"(client {noop_rss:.0f} MB); load {load:.2f} -> {row['load_after']:.2f}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/work/data/scale"),
                    help="where the generated datasets (kept) and the stores (removed) go")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep-stores", action="store_true")
    ap.add_argument("--client", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        client_main(args.client)
        return
    sizes = sorted(args.sizes)
    if sizes[-1] > SPEAKERS * DIGITS * 10_000:
        raise SystemExit("at most 10,000,000 clips")
    args.root.mkdir(parents=True, exist_ok=True)
    full = generate(args.root, sizes[-1])
    sources = {n: (full if n == sizes[-1] else subset(args.root, full, n)) for n in sizes}
    env = {**os.environ, **PINNED}
    work = args.root / "work"
    work.mkdir(exist_ok=True)
    print(f"== feature build at scale: {', '.join(f'{n:,}' for n in sizes)} clips (AudioMNIST layout, generated), "
          f"{args.workers} worker processes on {os.cpu_count()} cores ==", flush=True)
    rows = []
    for n in sizes:
        store = args.root / f"store-{n}"
        rows.append(measure(sources[n], n, store, work, args.workers, env))
        if not args.keep_stores:
            shutil.rmtree(store, ignore_errors=True)
    small, large = rows[0], rows[-1]
    per = {k: (large[k] / large["clips"]) / (small[k] / small["clips"]) for k in ("wall_s", "work_s", "listing_s",
                                                                                  "hash_s", "plan_s", "graph_s",
                                                                                  "seal_s")}
    print(f"per-clip time at {large['clips']:,} / at {small['clips']:,}: whole command {per['wall_s']:.2f}x, "
          f"work {per['work_s']:.2f}x (target <= 1.15x); listing {per['listing_s']:.2f}x, hashing {per['hash_s']:.2f}x, "
          f"plan {per['plan_s']:.2f}x, graph {per['graph_s']:.2f}x, seal {per['seal_s']:.2f}x")
    print(f"client peak RSS at {large['clips']:,} clips: {large['client_rss_mb']:.0f} MB (target <= 1024 MB)")
    (work / "bench_scale.json").write_text(json.dumps(rows, indent=1))
    print(f"rows: {work / 'bench_scale.json'}", flush=True)


if __name__ == "__main__":
    main()
