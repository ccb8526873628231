"""Benchmark tables that write themselves: one Markdown file per benchmark under ``docs/results/``.

Every benchmark ends with :func:`write_results`, which stamps its table with the date, the machine
(cores, CPU model, load average), the git revision and the exact command, so that README.md and
the docs can link measured figures instead of hand-copied ones.

    from results import write_results          # benchmarks/ is on sys.path when a script runs
    write_results("accuracy", table_markdown, title="Accuracy on real ESC-50")
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "docs" / "results"


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` where that is absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_revision() -> str:
    """Short git revision of the checkout, with ``+dirty`` when tracked files differ from it."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_line() -> str:
    """``N cores, <CPU model>, load a/b/c`` for the machine this runs on."""
    try:
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return f"{os.cpu_count()} cores, {cpu_model()}, load {load} (1/5/15 min)"


def header(title: str, argv: list[str] | None = None) -> str:
    """The stamp every results file starts with (title, date, machine, revision, command)."""
    argv = list(sys.argv if argv is None else argv)
    command = " ".join(shlex.quote(a) for a in argv)
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"# {title}\n\n"
            f"- date: {now}\n- machine: {machine_line()}\n- revision: {git_revision()}\n"
            f"- command: `{command}`\n\n")


def write_results(name: str, body: str, *, title: str | None = None, argv: list[str] | None = None,
                  results_dir: Path | None = None) -> Path:
    """Write ``docs/results/<name>.md``: the stamp of :func:`header`, then ``body`` (Markdown).

    Parameters
    ----------
    name : str
        File stem, e.g. ``"accuracy"``; letters, digits, ``-`` and ``_`` only.
    body : str
        The benchmark's table(s) and notes, in Markdown.
    title : str, optional
        First heading (default: ``name``).
    argv : list of str, optional
        The command to record (default: ``sys.argv``).
    results_dir : Path, optional
        Where to write (default: ``docs/results`` of this checkout; tests pass a temporary folder).

    Returns
    -------
    Path
        The file written (atomically: a temporary beside it, then renamed).
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"results name must be letters, digits, '-' or '_': got {name!r}")
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(header(title or name, argv) + body.rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, path)
    print(f"results written to {path}", file=sys.stderr)
    return path
