"""Fetch a dataset's release archive, verify it, resume broken transfers, extract it safely.

The archives are the datasets' public repositories as zip files. A transfer
that breaks leaves ``ARCHIVE.part``; the next run asks the server for the rest
(HTTP Range) and appends. The archive is checked (zip CRCs, and SHA-256 when
one is known or given) before anything is extracted; extraction goes to a
temporary folder that is renamed into place only when complete, so a bad
archive never leaves a half-extracted dataset.

Hostile or unlucky archives: what an archive unpacks to is capped (total
bytes and the ratio to the archive's size, from its directory, before anything
is decompressed: a zip bomb unpacks 1 MiB into 1 GiB); a downloaded archive is
tied to its URL (``ARCHIVE.source.json``) and checked before it is reused, and
one that fails a check is moved aside to ``ARCHIVE.bad`` so the next run
downloads it again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.files import MIB, content_hash, read_regular, write_json_atomic

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


class BadArchive(DatasetLayoutError):
    """The archive itself is unusable (not a zip, empty, over a cap, corrupt, not the release layout)."""


#: Default caps on what an archive may unpack to. The releases unpack to ~0.9 GB (ESC-50) and
#: ~1 GB (AudioMNIST) and WAV audio compresses little (ratio ~1.1-2).
MAX_EXTRACTED_BYTES = 16 * 2**30
MAX_RATIO = 50.0
MAX_ENTRIES = 1_000_000


@dataclass(frozen=True)
class Limits:
    """Caps on extraction (``download --max-extracted-gb`` and ``--max-ratio`` raise them)."""

    max_bytes: int = MAX_EXTRACTED_BYTES
    max_ratio: float = MAX_RATIO
    max_entries: int = MAX_ENTRIES

    def __post_init__(self) -> None:
        if not isinstance(self.max_bytes, int) or self.max_bytes <= 0:
            raise DatasetLayoutError(f"Expected a positive extraction cap in bytes. Got {self.max_bytes!r}.")
        if not isinstance(self.max_ratio, (int, float)) or not 1.0 <= self.max_ratio < float("inf"):
            raise DatasetLayoutError(f"Expected an extraction ratio cap of at least 1. Got {self.max_ratio!r}.")


@dataclass
class DownloadResult:
    """What ``download`` did (``--json`` prints it)."""

    dataset: str
    root: Path
    archive: Path
    sha256: str
    url: str = ""
    downloaded_bytes: int = 0
    resumed_from: int = 0
    extracted: bool = False
    actions: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "root": str(self.root), "archive": str(self.archive),
                "url": self.url, "sha256": self.sha256, "downloaded_bytes": self.downloaded_bytes,
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

    check_url(url)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the part file already holds everything
            part.replace(dest)
            return 0, start
        raise DatasetLayoutError(f"{url}: the server answered HTTP {exc.code} ({exc.reason}).") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DatasetLayoutError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}).") from exc
    with response:
        resumed = start if response.status == 206 else 0
        mode = "ab" if resumed else "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        got = 0
        try:
            out_file = open(part, mode)
        except OSError as exc:
            raise DatasetLayoutError(f"{part}: cannot write the download ({exc.strerror or exc}).") from None
        with out_file as out, tqdm(total=expected, initial=0, unit="B", unit_scale=True,
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


def check_url(url: str) -> None:
    """Refuse, at once, a URL that is not ``http(s)://HOST/...``."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise DatasetLayoutError(f"Expected an http:// or https:// URL of the archive. Got {url!r} ({exc}).") from None
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() or ord(c) < 32 for c in url):
        raise DatasetLayoutError(f"Expected an http:// or https:// URL of the archive. Got {url!r}.")


def _safe_members(archive: zipfile.ZipFile, path: Path) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for m in members:
        p = PurePosixPath(m.filename)
        if p.is_absolute() or ".." in p.parts:
            raise BadArchive(f"{path}: refuses to extract {m.filename!r} (outside the target folder).")
    return members


def check_archive(archive_path: Path, limits: Limits = Limits()) -> list[zipfile.ZipInfo]:
    """Check a zip before extracting it: entries, sizes against ``limits``, names, then every CRC.

    Sizes come from the archive's directory, before anything is decompressed;
    extraction never writes more than an entry declares (zipfile stops there and
    the CRC then fails).

    Raises
    ------
    DatasetLayoutError
        Not a zip, empty, over a cap, an entry outside the target, or a CRC mismatch.
    """
    try:
        with zipfile.ZipFile(archive_path) as zf:
            members = _safe_members(zf, archive_path)
            if not members:
                raise BadArchive(f"{archive_path}: empty archive (no entries).")
            if len(members) > limits.max_entries:
                raise BadArchive(f"{archive_path}: {len(members)} entries; expected at most "
                                         f"{limits.max_entries}.")
            total = sum(m.file_size for m in members)
            packed = max(1, archive_path.stat().st_size)
            if total > limits.max_bytes:
                raise BadArchive(
                    f"{archive_path}: would unpack to {total:,} bytes; the cap is {limits.max_bytes:,} "
                    "(--max-extracted-gb raises it).")
            if total > limits.max_ratio * packed:
                raise BadArchive(
                    f"{archive_path}: would unpack {packed:,} bytes into {total:,} ({total / packed:.0f} times); "
                    f"the cap is {limits.max_ratio:g} times (--max-ratio raises it).")
            bad = zf.testzip()
            if bad is not None:
                raise BadArchive(f"{archive_path}: corrupt archive (CRC mismatch in {bad}).")
            return members
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, ValueError) as exc:
        if isinstance(exc, DatasetLayoutError):
            raise
        raise BadArchive(f"{archive_path}: corrupt archive ({exc}).") from None
    except OSError as exc:
        raise DatasetLayoutError(f"{archive_path}: cannot read the archive ({exc.strerror or exc}).") from None


def extract(archive_path: Path, release: Release, to: Path, limits: Limits = Limits()) -> Path:
    """Check the zip and extract it atomically to ``to / release.folder``.

    Raises
    ------
    DatasetLayoutError
        Corrupt archive (bad CRC, not a zip), over a cap, or without the release
        layout; nothing is left behind (no ``.FOLDER.extracting``).
    """
    target = to / release.folder
    tmp = to / f".{release.folder}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        members = check_archive(archive_path, limits)
        try:
            with zipfile.ZipFile(archive_path) as zf:
                zf.extractall(tmp, members)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise BadArchive(f"{archive_path}: corrupt archive ({exc}); nothing was extracted.") from None
        except OSError as exc:
            raise DatasetLayoutError(
                f"{to}: cannot extract the archive there ({exc.strerror or exc}); nothing was extracted.") from None
        # A GitHub snapshot has one top folder (REPO-master/); the layout lives inside it.
        entries = list(tmp.iterdir()) if tmp.is_dir() else []
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        missing = [r for r in release.required if not (root / r).exists()]
        if missing:
            raise BadArchive(
                f"{archive_path}: expected the {release.dataset} release layout with {list(release.required)}. "
                f"Missing {missing}; nothing was extracted."
            )
        try:
            root.rename(target)
        except OSError as exc:
            raise DatasetLayoutError(f"{target}: cannot move the extracted release there ({exc.strerror or exc}); "
                                     "nothing was extracted.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_folder(to: Path) -> None:
    """``--to`` must be a folder this process can create files in (made if missing)."""
    if to.exists() and not to.is_dir():
        raise DatasetLayoutError(f"{to}: expected a folder to download into (--to). It is a file.")
    try:
        to.mkdir(parents=True, exist_ok=True)
        probe = to / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DatasetLayoutError(f"{to}: expected a folder to download into (--to) that can be written. "
                                 f"Cannot ({exc.strerror or exc}).") from None


def _source_of(archive: Path) -> str | None:
    """The URL a cached archive (or its ``.part``) was downloaded from, as recorded; None if unknown."""
    try:
        return json.loads(read_regular(archive.with_name(archive.name + ".source.json"), max_bytes=MIB,
                                       what="download record")).get("url")
    except (OSError, ValueError, AttributeError):
        return None


def _set_aside(archive: Path, why: str) -> str:
    """Move ``archive`` to ``ARCHIVE.bad`` (where no run reuses it); say why."""
    bad = archive.with_name(archive.name + ".bad")
    archive.replace(bad)
    return f"{why.rstrip('.')}. Moved it to {bad}"


def download(dataset: str, to: str | os.PathLike[str], *, url: str | None = None, sha256: str | None = None,
             progress: bool = True, limits: Limits = Limits()) -> DownloadResult:
    """Fetch, verify and extract ``dataset`` under ``to``; each step is skipped when already done.

    A cached archive is reused only when it was downloaded from the same URL
    and passes the checks; otherwise it is downloaded again (a bad one is moved
    to ``ARCHIVE.bad``).
    """
    try:
        release = RELEASES[dataset]
    except KeyError:
        raise DatasetLayoutError(f"Expected a dataset among {sorted(RELEASES)}. Got {dataset!r}.") from None
    url = url or release.url
    check_url(url)
    to = Path(to)
    _check_folder(to)
    target = to / release.folder
    archive = to / f"{release.folder}.zip"
    part = archive.with_name(archive.name + ".part")
    expected = sha256 or release.sha256
    for leftover in to.glob(f".{release.folder}.extracting*"):  # of a run that was killed while extracting
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists():
        missing = [r for r in release.required if not (target / r).exists()]
        if not missing:
            digest = content_hash(archive) if archive.is_file() else ""
            result = DownloadResult(dataset, target, archive, digest, url)
            result.actions.append(f"{target} already holds the {dataset} release layout: nothing to do")
            return result
        raise DatasetLayoutError(
            f"{target}: exists but lacks {missing} of the {dataset} release layout (another folder of that "
            "name, or a copy that did not finish). Move or delete it, then run the command again.")
    result = DownloadResult(dataset, target, archive, "", url)
    source = _source_of(archive)
    if source != url:
        if part.exists():
            part.unlink()
            result.actions.append(f"discarded {part}: a transfer from {source or 'an unrecorded URL'}")
        if archive.exists():
            result.actions.append(_set_aside(archive, f"{archive} was downloaded from "
                                                      f"{source or 'an unrecorded URL'}, not {url}"))
    if archive.exists():
        try:
            check_archive(archive, limits)
            result.actions.append(f"archive {archive} already downloaded from {url}")
        except BadArchive as exc:
            result.actions.append(_set_aside(archive, f"cached archive refused ({exc})"))
    if not archive.exists():
        write_json_atomic(archive.with_name(archive.name + ".source.json"), {"url": url})
        got, resumed = fetch(url, archive, progress=progress)
        result.downloaded_bytes, result.resumed_from = got, resumed
        result.actions.append(
            f"downloaded {got} bytes from {url}" + (f" (resumed at byte {resumed})" if resumed else ""))
    result.sha256 = content_hash(archive)
    if expected and result.sha256 != expected.lower():
        bad = archive.with_name(archive.name + ".bad")
        archive.replace(bad)
        raise DatasetLayoutError(
            f"{archive}: checksum mismatch: expected sha256 {expected}, got {result.sha256}. "
            f"Moved it to {bad}; nothing was extracted."
        )
    result.actions.append(f"sha256 {result.sha256}" + (" (matches)" if expected else " (none pinned; recorded)"))
    try:
        extract(archive, release, to, limits)
    except BadArchive as exc:
        why = str(exc).rstrip(".").removesuffix("; nothing was extracted")
        raise BadArchive(f"{_set_aside(archive, why + '; nothing was extracted')}: the next run downloads it "
                         "again.") from None
    result.extracted = True
    result.actions.append(f"extracted to {target}")
    write_json_atomic(to / f"{release.folder}.download.json", result.to_json())
    return result
