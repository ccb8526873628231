"""Issue 15, item 11 (and the download part of 12): zip bombs capped, cached archives tied to their URL and
checked before reuse, empty or half-present archives, a bad --to or --url: one-line errors, nothing left behind."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.manifests.download import download
from tests.hostile import cli, one_line_error
from tests.test_download import Server, esc50_zip


def bomb_zip(tmp_path: Path, zeros: int = 32 << 20) -> bytes:
    """A valid ESC-50 release archive plus one entry of ``zeros`` zero bytes (~1000x compression)."""
    buf = io.BytesIO(esc50_zip(tmp_path))
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ESC-50-master/zeros.bin", bytes(zeros))
    return buf.getvalue()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".extracting"))


def test_a_zip_bomb_is_refused_before_extraction_unless_the_cap_is_raised(tmp_path, capsys):
    payload = bomb_zip(tmp_path)
    with Server(payload) as server:
        code, out, err = cli(capsys, "download", "esc50", "--to", str(tmp_path / "dl"), "--url", server.url,
                             "--no-progress")
        line = one_line_error(err, "download")
        assert code == 2 and "would unpack" in line and "--max-ratio raises it" in line
        assert not (tmp_path / "dl" / "ESC-50").exists() and leftovers(tmp_path / "dl") == []
        code, out, err = cli(capsys, "download", "esc50", "--to", str(tmp_path / "dl2"), "--url", server.url,
                             "--no-progress", "--max-extracted-gb", "0.01")
        assert code == 2 and "the cap is 10,737,418 (--max-extracted-gb raises it)" in one_line_error(err, "download")
        code, out, err = cli(capsys, "download", "esc50", "--to", str(tmp_path / "dl3"), "--url", server.url,
                             "--no-progress", "--max-ratio", "100000")
    assert code == 0, err
    assert (tmp_path / "dl3" / "ESC-50" / "zeros.bin").stat().st_size == 32 << 20


def test_a_bad_cached_archive_is_set_aside_and_downloaded_again(tmp_path):
    good = esc50_zip(tmp_path)
    damaged = bytearray(good)
    damaged[len(damaged) // 3] ^= 0xFF
    with Server(bytes(damaged)) as bad_server, Server(good) as good_server:
        with pytest.raises(DatasetLayoutError, match=r"corrupt archive .*nothing was extracted. Moved it to "
                                                     r".*ESC-50.zip.bad: the next run downloads it again"):
            download("esc50", tmp_path / "dl", url=bad_server.url, progress=False)
        assert (tmp_path / "dl" / "ESC-50.zip.bad").is_file() and not (tmp_path / "dl" / "ESC-50.zip").exists()
        result = download("esc50", tmp_path / "dl", url=good_server.url, progress=False)
    assert result.extracted and good_server.ranges == [None]


def test_a_cached_archive_is_tied_to_its_url(tmp_path):
    from siamese_audio.manifests.dummies import make_esc50

    first = esc50_zip(tmp_path / "a")
    root = make_esc50(tmp_path / "b" / "src" / "ESC-50-master", classes=("cow", "frog"), clips_per_class=2,
                      seconds=0.5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root.parent).as_posix())
    second = buf.getvalue()
    with Server(first) as a, Server(second) as b:
        download("esc50", tmp_path / "dl", url=a.url, progress=False)
        import shutil

        shutil.rmtree(tmp_path / "dl" / "ESC-50")  # the dataset folder is gone; the archive of a stays
        again = download("esc50", tmp_path / "dl", url=a.url, progress=False)
        assert a.ranges == [None] and "already downloaded from" in " ".join(again.actions)
        shutil.rmtree(tmp_path / "dl" / "ESC-50")
        other = download("esc50", tmp_path / "dl", url=b.url, progress=False)
    assert b.ranges == [None] and any("was downloaded from" in a for a in other.actions)
    assert "cow" in (tmp_path / "dl" / "ESC-50" / "meta" / "esc50.csv").read_text()


def test_an_empty_zip_is_a_one_line_error(tmp_path, capsys):
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    with Server(buf.getvalue()) as server:
        code, out, err = cli(capsys, "download", "esc50", "--to", str(tmp_path / "dl"), "--url", server.url,
                             "--no-progress")
    assert code == 2 and "empty archive (no entries)" in one_line_error(err, "download")
    assert leftovers(tmp_path / "dl") == []


def test_a_half_present_target_folder_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys):
    (tmp_path / "dl" / "ESC-50" / "audio").mkdir(parents=True)
    with Server(esc50_zip(tmp_path)) as server:
        code, out, err = cli(capsys, "download", "esc50", "--to", str(tmp_path / "dl"), "--url", server.url,
                             "--no-progress")
    line = one_line_error(err, "download")
    assert code == 2 and "ESC-50: exists but lacks ['meta/esc50.csv']" in line and "Move or delete it" in line
    assert leftovers(tmp_path / "dl") == []


def test_leftover_extracting_folders_of_a_killed_run_are_removed(tmp_path):
    with Server(esc50_zip(tmp_path)) as server:
        download("esc50", tmp_path / "dl", url=server.url, progress=False)
        (tmp_path / "dl" / ".ESC-50.extracting" / "ESC-50-master").mkdir(parents=True)
        download("esc50", tmp_path / "dl", url=server.url, progress=False)
    assert not (tmp_path / "dl" / ".ESC-50.extracting").exists()


@pytest.mark.parametrize("to,match", [
    ("file", "expected a folder to download into .--to.. It is a file"),
    ("/proc/siamese-audio-test", "expected a folder to download into .--to. that can be written"),
])
def test_to_a_file_or_an_unwritable_place_is_a_one_line_error(tmp_path, capsys, to, match):
    if to == "file":
        to = str(tmp_path / "file")
        Path(to).write_text("x")
    code, out, err = cli(capsys, "download", "esc50", "--to", to, "--url", "http://127.0.0.1:9/x.zip")
    assert code == 2
    assert __import__("re").search(match, one_line_error(err, "download"))


@pytest.mark.parametrize("url", ["notaurl", "ftp://example.org/x.zip", "http://", "http://[::1/x.zip",
                                 "http://example.org/a b.zip"])
def test_a_malformed_url_is_refused_at_once(tmp_path, capsys, url):
    code, out, err = cli(capsys, "download", "esc50", "--to", str(tmp_path / "dl"), "--url", url)
    assert code == 2 and "Expected an http:// or https:// URL of the archive" in one_line_error(err, "download")
    assert not (tmp_path / "dl").exists()


def test_limits_are_validated():
    from siamese_audio.manifests.download import Limits

    with pytest.raises(DatasetLayoutError, match="ratio cap of at least 1"):
        Limits(max_ratio=0.5)
