"""Every ``siamese-audio`` command shown in README.md and docs/*.md names a subcommand and flags the CLI has.

The commands are taken from fenced code blocks and inline code spans; each is checked against the
argparse parsers that ``siamese-audio`` builds (no process is spawned), so the docs cannot drift
from the code.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from siamese_audio.cli import make_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]*(?:\n[^`\n]*)?)`")
COMMAND = re.compile(r"(?:^|[\s/(])siamese-audio((?:\s+-{1,2}[a-z][a-z0-9-]*)*)\s+([a-z][a-z0-9-]*|-{1,2}[a-z][a-z0-9-]*)")
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][a-zA-Z0-9-]*)")
CUT = re.compile(r"\s(?:#|&&|;|\|\s+[a-z])")


def commands(text: str) -> list[tuple[list[str], str | None, list[str]]]:
    """``(root flags, subcommand or None, flags)`` of every ``siamese-audio`` command in Markdown ``text``."""
    pieces = []
    for block in FENCE.findall(text):
        # a line ending in a backslash, or an indented line of options, continues the command above
        pieces.extend(re.sub(r"\n[ \t]+(?=[\[-])", " ", block.replace("\\\n", " ")).splitlines())
    for span in SPAN.findall(FENCE.sub("", text)):
        pieces.append(" ".join(span.split()))
    found = []
    for piece in pieces:
        for m in COMMAND.finditer(piece):
            root = FLAG.findall(m.group(1))
            word = m.group(2)
            if word.startswith("-"):
                found.append((root + [word], None, []))
                continue
            rest = piece[m.end():]
            if "python" in piece[: m.start()]:
                continue
            cut = CUT.search(rest)
            comment = rest[cut.start():] if cut and rest[cut.start():].lstrip().startswith("#") else ""
            rest = rest[: cut.start()] if cut else rest
            flags = [f for part in FLAG.findall(rest + " " + comment) for f in part.split("/")]
            found.append((root, word, flags))
    return found


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("siamese-audio has no subcommands")


def problems(text: str, where: str) -> list[str]:
    """What ``text`` names that the CLI lacks, one line each."""
    parser = make_parser()
    subs = subparsers(parser)
    out = []
    for root, sub, flags in commands(text):
        for flag in root:
            if flag not in parser._option_string_actions:
                out.append(f"{where}: siamese-audio has no option {flag}")
        if sub is None:
            continue
        if sub not in subs:
            out.append(f"{where}: siamese-audio has no subcommand {sub!r}")
            continue
        known = subs[sub]._option_string_actions
        for flag in flags:
            if flag not in known and flag not in ("-h", "--help"):
                out.append(f"{where}: siamese-audio {sub} has no option {flag}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_exists(doc):
    assert problems(doc.read_text(encoding="utf-8"), doc.name) == []


def test_the_docs_show_commands_at_all():
    shown = [c for doc in DOCS for c in commands(doc.read_text(encoding="utf-8"))]
    subs = {sub for _, sub, _ in shown if sub}
    assert {"build", "split", "train", "evaluate", "explain", "tune", "download"} <= subs
    assert sum(len(flags) for _, _, flags in shown) > 50


def test_a_missing_flag_or_subcommand_is_caught():
    doc = (
        "```bash\nsiamese-audio train --features F --split S \\\n    --no-such-flag 3 --out R\n```\n"
        "Run `siamese-audio evalute --ways 5` or `siamese-audio --no-root-flag build`.\n"
        "```bash\nsiamese-audio build esc50 D --store S   # --workers N --bogus-option\n```\n"
    )
    found = problems(doc, "doc.md")
    assert found == [
        "doc.md: siamese-audio train has no option --no-such-flag",
        "doc.md: siamese-audio build has no option --bogus-option",
        "doc.md: siamese-audio has no subcommand 'evalute'",
        "doc.md: siamese-audio has no option --no-root-flag",
    ]


def test_a_correct_doc_passes():
    doc = "```bash\nsiamese-audio evaluate CKPT --features F --split S --ways 5 --runs 60 --out R --json\n```\n"
    assert commands(doc) == [([], "evaluate", ["--features", "--split", "--ways", "--runs", "--out", "--json"])]
    assert problems(doc, "doc.md") == []


def test_every_subcommand_help_ends_with_an_example_that_parses():
    parser = make_parser()
    for name, sub in subparsers(parser).items():
        assert sub.epilog and sub.epilog.startswith("example: siamese-audio " + name + " "), name
        assert problems(f"`{sub.epilog.removeprefix('example: ')}`", name) == []
        assert "".join(sub.epilog.split()) in "".join(sub.format_help().split()), name


def test_version_prints_the_installed_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        make_parser().parse_args(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"siamese-audio {version('siamese-audio')}"
