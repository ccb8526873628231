"""Check that a folder of wheels, with the device image's packages, is everything the project needs.

    python benchmarks/gpu/check_wheels.py WHEEL_DIR

Reads each wheel's METADATA, evaluates its ``Requires-Dist`` markers for CPython 3.12 on Linux
x86-64 (extras off), and fails naming every requirement that is neither among the wheels, nor in
``benchmarks/gpu/preinstalled.txt``, nor torch (the image's own). It also fails when two wheels
hold the same package (pip's ``--no-deps --target`` install stops on that) or when a pin of
``wheels.txt`` has no wheel. Exit status 0 when complete, 1 otherwise, with one line per problem.
"""

from __future__ import annotations

import email.parser
import sys
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent

#: The device machines' interpreter, for evaluating environment markers (python 3.12, Linux x86-64).
DEVICE_ENVIRONMENT = {
    **default_environment(),
    "implementation_name": "cpython", "platform_python_implementation": "CPython",
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_version": "3.12.3",
    "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
    "extra": "",
}


def names_in(path: Path) -> set[str]:
    """Canonical package names listed one per line in ``path`` (``#`` comments, ``==`` pins allowed)."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(canonicalize_name(Requirement(line).name))
    return out


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The ``Requires-Dist`` entries of ``wheel`` that apply on the device (markers evaluated)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.parser.Parser().parsestr(z.read(meta).decode("utf-8"))
    out = []
    for text in message.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(DEVICE_ENVIRONMENT):
            out.append(req)
    return out


def problems(wheel_dir: Path, preinstalled: set[str], pinned: set[str]) -> list[str]:
    """Every reason the wheels in ``wheel_dir`` would not install or import on the device."""
    found: list[str] = []
    wheels: dict[str, Path] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        name = canonicalize_name(parse_wheel_filename(wheel.name)[0])
        if name in wheels:
            found.append(f"{wheel.name}: a second wheel of {name} (also {wheels[name].name}); keep one")
        wheels[name] = wheel
    have = set(wheels) | preinstalled | {"torch"}
    for _name, wheel in sorted(wheels.items()):
        for req in wheel_requirements(wheel):
            dep = canonicalize_name(req.name)
            if dep not in have:
                found.append(f"{wheel.name}: needs {req} which is neither a wheel here nor preinstalled")
    for name in sorted(pinned - set(wheels)):
        found.append(f"wheels.txt pins {name} but {wheel_dir} holds no wheel of it")
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: check_wheels.py WHEEL_DIR", file=sys.stderr)
        return 2
    wheel_dir = Path(args[0])
    found = problems(wheel_dir, names_in(HERE / "preinstalled.txt"), names_in(HERE / "wheels.txt"))
    for line in found:
        print(line)
    n = len(list(wheel_dir.glob("*.whl")))
    print(f"{n} wheels in {wheel_dir}: " + ("complete for the device image" if not found else f"{len(found)} problems"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
