"""Feature build speed: the report's per-file loop against the project's Dask build.

Measured in one invocation on the same real files: the AudioMNIST clips of
``../shared/data/audiomnist`` and the ESC-50 clips of ``../shared/data/esc50``,
each copied under new names until there are at least 1,500 (``--esc50 DIR``: a
whole real ESC-50 release instead, e.g. the 2,000 clips of ``/work/data/ESC-50``).

Prints, per dataset:
- steady-state clips per CPU-second (warm, start-up excluded): the report loop
  pinned to one thread vs the project's build with one worker (sum of task CPU
  times, each worker's first task excluded) — targets >= 2.5x (AudioMNIST), >= 3x (ESC-50);
- whole commands (imports, Dask start-up, hashing, sealing included), wall time and
  CPU time of all processes — target >= 2x;
- 1 vs 2 workers: graph wall time and whole-command wall time — target >= 1.8x;
- where a first build's time goes (listing, hashing on the workers, plan, graph, seal);
- a no-op rebuild of the sealed version (every file in the hash cache: no worker started)
  against the interpreter's start (``python -c pass``) — target <= 1 s more;
- BLAKE3 (source content ids) against SHA-256 (seals, downloads) on the same files, one core.

Each whole command is measured ``--repeats`` times (1, 2, 1, 2, ...); medians are printed.

    python benchmarks/bench_build.py [--data ../shared/data] [--min-clips 1500] [--only audiomnist]
                                     [--esc50 /work/data/ESC-50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
          "NUMEXPR_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def replicate_audiomnist(src: Path, dst: Path, min_clips: int) -> int:
    files = sorted((src / "data").glob("*/*.wav"))
    copies = -(-min_clips // len(files))
    for k in range(copies):
        for f in files:
            digit, speaker, rep = f.stem.split("_")
            out = dst / "data" / speaker / f"{digit}_{speaker}_{int(rep) + 100 * k}.wav"
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, out)
    return copies * len(files)


def replicate_esc50(src: Path, dst: Path, min_clips: int) -> int:
    rows = list(csv.DictReader(open(src / "meta" / "esc50.csv")))
    copies = -(-min_clips // len(rows))
    (dst / "audio").mkdir(parents=True)
    (dst / "meta").mkdir()
    out_rows = []
    for k in range(copies):
        for r in rows:
            fold, s, take, target = Path(r["filename"]).stem.split("-")
            name = f"{fold}-{s}{k:02d}-{take}-{target}.wav"
            shutil.copy(src / "audio" / r["filename"], dst / "audio" / name)
            out_rows.append({**r, "filename": name, "src_file": f"{s}{k:02d}"})
    with open(dst / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(out_rows)
    return len(out_rows)


def report_loop(dataset: str, root: Path, out: Path) -> None:
    """The authors' per-file loop (run in a subprocess pinned to one thread)."""
    import pickle
    import random

    import librosa
    import numpy as np

    n_target, n_fft, hop, n_mels = (44_100, 4096, 197, 224) if dataset == "audiomnist" else (220_500, 2048, 512, 128)
    files = sorted((root / "data").glob("*/*.wav")) if dataset == "audiomnist" else sorted((root / "audio").glob("*.wav"))
    random.seed(94)
    out.mkdir(parents=True, exist_ok=True)
    warm = 20
    t_cpu = None
    for i, f in enumerate(files):
        if i == warm:
            t_cpu = time.process_time()
        y, sr = librosa.load(f, sr=44_100, res_type="scipy")
        y = y[:n_target]
        off = random.randint(0, n_target - len(y))
        y = np.pad(y, (off, n_target - len(y) - off))
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
        logS = librosa.power_to_db(S, ref=1.0)
        with open(out / f"{f.stem}.pkl", "wb") as fh:
            pickle.dump(logS, fh)
    steady = (len(files) - warm) / (time.process_time() - t_cpu)
    print(json.dumps({"clips": len(files), "steady_clips_per_cpu_s": steady}))


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall, cpu


def steady_build_rate(timing: dict) -> float:
    seen: set[int] = set()
    clips = cpu = 0.0
    for t in sorted(timing["tasks"], key=lambda t: t["batch"]):
        if t["worker_pid"] not in seen:
            seen.add(t["worker_pid"])  # each worker's first task carries its warm-up
            continue
        clips += t["clips"]
        cpu += t["cpu_s"]
    return clips / cpu


def hash_speed(files: list[Path]) -> None:
    """BLAKE3 vs SHA-256 over the same files (read from the page cache), one thread each."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from siamese_audio.files import content_hash

    total = sum(f.stat().st_size for f in files)
    for f in files:  # into the page cache, so both read the same way
        f.read_bytes()
    rates = {}
    for algorithm in ("sha256", "blake3", "sha256", "blake3"):
        t0 = time.process_time()
        for f in files:
            content_hash(f, algorithm)
        rates.setdefault(algorithm, []).append(total / 1e6 / (time.process_time() - t0))
    sha, b3 = max(rates["sha256"]), max(rates["blake3"])
    print(f"content hash of the same {len(files)} files ({total / 1e6:.0f} MB, page cache, one thread, CPU time): "
          f"SHA-256 {sha:.0f} MB/s, BLAKE3 {b3:.0f} MB/s -> BLAKE3 {b3 / sha:.2f}x faster", flush=True)


def interpreter_start(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
    return time.perf_counter() - t0


def phases(timing: dict) -> str:
    h = timing.get("hash", {})
    return (f"listing {timing.get('scan_s', 0):.2f} s, hashing {h.get('hash_s', 0):.2f} s ({h.get('hashed', 0)} files, "
            f"{h.get('hashed_bytes', 0) / 1e6:.0f} MB on the workers), plan {timing.get('plan_s', 0):.2f} s, "
            f"graph {timing.get('graph_wall_s', 0):.2f} s, seal {timing.get('seal_s', 0):.2f} s, "
            f"build() {timing.get('total_s', 0):.2f} s")


def bench(dataset: str, data: Path, work: Path, min_clips: int, repeats: int, esc50: Path | None) -> None:
    if dataset == "esc50" and esc50 is not None:
        src = esc50
        n = len(list((src / "audio").glob("*.wav")))
        what = f"the real release at {src}"
    else:
        src = work / f"{dataset}-src"
        n = (replicate_audiomnist if dataset == "audiomnist" else replicate_esc50)(data / dataset, src, min_clips)
        what = "real samples copied under new names"
    env = {**os.environ, **PINNED}
    print(f"\n== {dataset}: {n} clips ({what}); load average {os.getloadavg()[0]:.2f} ==", flush=True)
    files = sorted((src / "data").glob("*/*.wav")) if dataset == "audiomnist" else sorted((src / "audio").glob("*.wav"))
    hash_speed(files)
    loop, loop_wall, loop_cpu = run_measured(
        [sys.executable, __file__, "--report-loop", dataset, str(src), str(work / f"{dataset}-pkl")], env)
    shutil.rmtree(work / f"{dataset}-pkl", ignore_errors=True)
    exe = [sys.executable, "-m", "siamese_audio.cli", "build", dataset, str(src), "--json", "--no-progress"]
    runs: dict[int, list[tuple[dict, float, float]]] = {1: [], 2: []}
    for k in range(repeats):
        for w in (1, 2):
            store = work / f"{dataset}-w{w}-{k}"
            runs[w].append(run_measured(exe + ["--store", str(store), "--workers", str(w)], env))
            out, wall, cpu = runs[w][-1]
            print(f"  run {k + 1}, {w} worker(s): whole command {wall:.2f} s wall, {cpu:.2f} s CPU; {phases(out['timing'])}"
                  f" (load {os.getloadavg()[0]:.2f})", flush=True)
            if k < repeats - 1 or w == 2:
                shutil.rmtree(store, ignore_errors=True)
    one_wall = statistics.median(w for _, w, _ in runs[1])
    one_cpu = statistics.median(c for _, _, c in runs[1])
    two_wall = statistics.median(w for _, w, _ in runs[2])
    g1 = statistics.median(o["timing"]["graph_wall_s"] for o, _, _ in runs[1])
    g2 = statistics.median(o["timing"]["graph_wall_s"] for o, _, _ in runs[2])
    rate1 = statistics.median(steady_build_rate(o["timing"]) for o, _, _ in runs[1])
    target = 2.5 if dataset == "audiomnist" else 3.0
    print(f"steady clips per CPU-second: report loop {loop['steady_clips_per_cpu_s']:.1f}, "
          f"build (1 worker) {rate1:.1f}  -> ratio {rate1 / loop['steady_clips_per_cpu_s']:.2f}x (target >= {target}x)")
    print(f"whole command, wall: report loop {loop_wall:.1f} s, build (1 worker) {one_wall:.1f} s "
          f"-> ratio {loop_wall / one_wall:.2f}x (target >= 2x)")
    print(f"whole command, CPU of all processes: report loop {loop_cpu:.1f} s, build (1 worker) {one_cpu:.1f} s "
          f"-> ratio {loop_cpu / one_cpu:.2f}x (target >= 2x)")
    print(f"1 -> 2 workers: graph wall {g1:.1f} s -> {g2:.1f} s = {g1 / g2:.2f}x; "
          f"whole command {one_wall:.1f} s -> {two_wall:.1f} s = {one_wall / two_wall:.2f}x (target >= 1.8x)")
    ids = {o["version_id"] for w in runs for o, _, _ in runs[w]}
    print(f"1 and 2 workers give the same version id: {len(ids) == 1}", flush=True)
    store = work / f"{dataset}-w1-{repeats - 1}"
    noops, starts = [], []
    for _ in range(3):
        starts.append(interpreter_start(env))
        out, wall, _ = run_measured(exe + ["--store", str(store), "--workers", "1"], env)
        if not out["already_sealed"] or out["timing"]["hash"]["hashed"]:
            raise SystemExit(f"the rebuild was not a cached no-op: {out['timing']}")
        noops.append(wall)
    noop, start = statistics.median(noops), statistics.median(starts)
    print(f"no-op rebuild of the sealed {n}-clip version (every file in the hash cache, no worker started): "
          f"{noop:.2f} s; interpreter start {start:.2f} s -> {noop - start:.2f} s more (target <= 1 s)", flush=True)
    shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--min-clips", type=int, default=1500)
    ap.add_argument("--only", choices=["audiomnist", "esc50"])
    ap.add_argument("--esc50", type=Path, default=None, help="a whole ESC-50 release to build as is")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--report-loop", nargs=3, metavar=("DATASET", "ROOT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.report_loop:
        report_loop(args.report_loop[0], Path(args.report_loop[1]), Path(args.report_loop[2]))
        return
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} is absent: this benchmark needs the real samples.")
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        for dataset in ([args.only] if args.only else ["audiomnist", "esc50"]):
            bench(dataset, args.data, Path(tmp), args.min_clips, args.repeats, args.esc50)


if __name__ == "__main__":
    main()
