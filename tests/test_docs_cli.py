"""The commands README.md and docs/ show exist in the CLI: every subcommand and every flag they name.

Commands are read from fenced code blocks (with ``\\`` continuations joined) and from inline code
spans; a flag is any ``--name`` token after ``siamese-audio SUBCOMMAND`` on that command line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from siamese_audio.cli import make_parser

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"siamese-audio\s+([a-z][a-z0-9-]*)((?:\s+[^\s`|&;]+)*)")


def commands(text: str) -> list[str]:
    """Every ``siamese-audio ...`` command line in ``text``'s code blocks and inline code."""
    found: list[str] = []
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.DOTALL)
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0]
            found += [m.group(0) for m in COMMAND.finditer(line)]
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in re.findall(r"`([^`\n]+)`", prose):
        found += [m.group(0) for m in COMMAND.finditer(span)]
    return found


def problems(text: str, where: str) -> list[str]:
    """What the CLI lacks of the commands ``text`` shows (empty: nothing)."""
    parser = make_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    root_flags = set(parser._option_string_actions)
    out = []
    for command in commands(text):
        name, rest = COMMAND.match(command).groups()
        if name not in subparsers:
            out.append(f"{where}: `{command.strip()}`: no subcommand {name!r}")
            continue
        known = set(subparsers[name]._option_string_actions) | root_flags
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            if flag not in known:
                out.append(f"{where}: `{command.strip()}`: {name} has no flag {flag}")
    return out


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_docs_show_commands_to_check():
    assert len(commands((ROOT / "README.md").read_text())) >= 5


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_the_docs_show_exists(path):
    assert problems(path.read_text(), str(path.relative_to(ROOT))) == []


def test_a_missing_flag_or_subcommand_is_caught():
    doc = ("Run\n\n```bash\nsiamese-audio train --features F --split S \\\n    --no-such-flag 3\n```\n\n"
           "or `siamese-audio frobnicate --x`, but `siamese-audio --version` and `siamese-audio train --resume R` exist.")
    found = problems(doc, "doc")
    assert len(found) == 2, found
    assert "no flag --no-such-flag" in found[0] and "no subcommand 'frobnicate'" in found[1]
