"""Logging for the whole tool: one ``siamese_audio`` logger tree, messages on stderr.

Library modules log through ``logging.getLogger(__name__)`` and never print;
the console script calls :func:`configure` once with the ``-v``/``-q`` count.
Progress bars stay on stderr and ``--json`` output stays alone on stdout.
"""

from __future__ import annotations

import logging
import sys

ROOT = "siamese_audio"


class _Format(logging.Formatter):
    """``message`` for INFO, ``warning: message`` / ``error: message`` above, ``debug: ...`` below."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno == logging.INFO:
            return message
        return f"{record.levelname.lower()}: {message}"


def configure(verbosity: int = 0) -> None:
    """Send the tool's log records to stderr.

    Parameters
    ----------
    verbosity : int
        0: INFO and above (the default); 1 or more (``-v``): DEBUG; -1 (``-q``):
        warnings and errors only; -2 or less (``-qq``): errors only.
    """
    level = {1: logging.DEBUG, 0: logging.INFO, -1: logging.WARNING}.get(
        max(-2, min(1, verbosity)), logging.ERROR)
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_siamese_audio", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._siamese_audio = True  # type: ignore[attr-defined]
    handler.setFormatter(_Format("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
