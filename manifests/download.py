"""Fetch a dataset's release archive, verify it, resume broken transfers, extract it safely.

The archives are the datasets' public repositories as zip files. A transfer
that breaks leaves ``ARCHIVE.part``; the next run asks the server for the rest
(HTTP Range) and appends. The archive is checked (zip CRCs, and SHA-256 when
one is known or given) before anything is extracted; extraction goes to a
temporary folder that is renamed into place only when complete, so a bad
archive never leaves a half-extracted dataset.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.files import content_hash, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """Where a dataset's release archive lives and what it must contain.

    Attributes
    ----------
    url : str
        The archive (a GitHub repository snapshot).
    sha256 : str or None
        Expected checksum, when pinned. Branch snapshots change with every
        commit upstream, so none is pinned by default: the measured checksum is
        printed and recorded, and ``--sha256`` enforces one.
    folder : str
        Name of the extracted dataset folder under ``--to``.
    required : tuple of str
        Paths (relative to the dataset root) the release layout must have.
    """

    dataset: str
    url: str
    folder: str
    required: tuple[str, ...]
    sha256: str | None = None


RELEASES = {
    "audiomnist": Release("audiomnist", "https://github.com/soerenab/AudioMNIST/archive/refs/heads/master.zip",
                          "AudioMNIST", ("data",)),
    "esc50": Release("esc50", "https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip",
                     "ESC-50", ("audio", "meta/esc50.csv")),
}


@dataclass
class DownloadResult:
    """What ``download`` did (``--json`` prints it)."""

    dataset: str
    root: Path
    archive: Path
    sha256: str
    downloaded_bytes: int = 0
    resumed_from: int = 0
    extracted: bool = False
    actions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "root": str(self.root), "archive": str(self.archive),
                "sha256": self.sha256, "downloaded_bytes": self.downloaded_bytes,
                "resumed_from": self.resumed_from, "extracted": self.extracted, "actions": self.actions}



def fetch(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0) -> tuple[int, int]:
    """Download ``url`` to ``dest``, resuming ``dest.part`` if a previous transfer broke.

    Returns
    -------
    (downloaded_bytes, resumed_from)

    Raises
    ------
    DatasetLayoutError
        The server cannot be reached or the transfer broke (the partial file
        is kept so that the next call resumes).
    """
    from tqdm import tqdm

    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the part file already holds everything
            part.replace(dest)
            return 0, start
        raise DatasetLayoutError(f"{url}: the server answered HTTP {exc.code} ({exc.reason}).") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetLayoutError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}).") from exc
    with response:
        resumed = start if response.status == 206 else 0
        mode = "ab" if resumed else "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        with open(part, mode) as out, tqdm(total=expected, initial=0, unit="B", unit_scale=True,
                                           desc="download", file=sys.stderr, disable=not progress) as bar:
            try:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            except (OSError, urllib.error.URLError, ConnectionError) as exc:
                raise DatasetLayoutError(
                    f"{url}: the transfer broke after {resumed + got} bytes ({exc}); "
                    f"run the command again to resume from {part}."
                ) from exc
            except Exception as exc:  # http.client.IncompleteRead and friends
                raise DatasetLayoutError(
                    f"{url}: the transfer broke after {resumed + got} bytes ({type(exc).__name__}); "
                    f"run the command again to resume from {part}."
                ) from exc
    if expected is not None and got < expected:
        raise DatasetLayoutError(
            f"{url}: the transfer broke after {resumed + got} of {resumed + expected} bytes; "
            f"run the command again to resume from {part}."
        )
    part.replace(dest)
    return got, resumed


def _safe_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for m in members:
        p = PurePosixPath(m.filename)
        if p.is_absolute() or ".." in p.parts:
            raise DatasetLayoutError(f"{path}: refuses to extract {m.filename!r} (outside the target folder).")
    return members


def extract(archive_path: Path, release: Release, to: Path) -> Path:
    """Check the zip and extract it atomically to ``to / release.folder``.

    Raises
    ------
    DatasetLayoutError
        Corrupt archive (bad CRC, not a zip) or an archive without the release
        layout; nothing is left behind.
    """
    target = to / release.folder
    tmp = to / f".{release.folder}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive_path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DatasetLayoutError(f"{archive_path}: corrupt archive (CRC mismatch in {bad}); nothing was extracted.")
            members = _safe_members(zf, archive_path)
            zf.extractall(tmp, members)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetLayoutError(f"{archive_path}: corrupt archive ({exc}); nothing was extracted.") from exc
    except DatasetLayoutError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # A GitHub snapshot has one top folder (REPO-master/); the layout lives inside it.
    entries = [p for p in tmp.iterdir()]
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    missing = [r for r in release.required if not (root / r).exists()]
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetLayoutError(
            f"{archive_path}: expected the {release.dataset} release layout with {list(release.required)}. "
            f"Missing {missing}; nothing was extracted."
        )
    root.rename(target) if root is not tmp else tmp.rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def download(dataset: str, to: str | os.PathLike[str], *, url: str | None = None, sha256: str | None = None,
             progress: bool = True) -> DownloadResult:
    """Fetch, verify and extract ``dataset`` under ``to``; each step is skipped when already done."""
    try:
        release = RELEASES[dataset]
    except KeyError:
        raise DatasetLayoutError(f"Expected a dataset among {sorted(RELEASES)}. Got {dataset!r}.") from None
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    target = to / release.folder
    archive = to / f"{release.folder}.zip"
    expected = sha256 or release.sha256
    if target.exists() and all((target / r).exists() for r in release.required):
        digest = content_hash(archive) if archive.exists() else ""
        result = DownloadResult(dataset, target, archive, digest)
        result.actions.append(f"{target} already holds the {dataset} release layout: nothing to do")
        return result
    result = DownloadResult(dataset, target, archive, "")
    if archive.exists():
        result.actions.append(f"archive {archive} already downloaded")
    else:
        got, resumed = fetch(url or release.url, archive, progress=progress)
        result.downloaded_bytes, result.resumed_from = got, resumed
        result.actions.append(
            f"downloaded {got} bytes from {url or release.url}" + (f" (resumed at byte {resumed})" if resumed else ""))
    result.sha256 = content_hash(archive)
    if expected and result.sha256 != expected.lower():
        bad = archive.with_name(archive.name + ".bad")
        archive.replace(bad)
        raise DatasetLayoutError(
            f"{archive}: checksum mismatch: expected sha256 {expected}, got {result.sha256}. "
            f"Moved it to {bad}; nothing was extracted."
        )
    result.actions.append(f"sha256 {result.sha256}" + (" (matches)" if expected else " (none pinned; recorded)"))
    extract(archive, release, to)
    result.extracted = True
    result.actions.append(f"extracted to {target}")
    write_json_atomic(to / f"{release.folder}.download.json", result.to_json())
    return result
