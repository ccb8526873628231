"""Paths the client and every worker see alike: a local path or a ``file://`` URL."""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from siamese_audio.errors import StoreError

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(/.*)$")


def local_path(value: str | os.PathLike[str], *, what: str = "store root") -> Path:
    """A local (or shared-filesystem) path from a path or a ``file://`` URL.

    Accepts ``file:///abs/path``, ``file://localhost/abs/path`` and ``file:/abs/path``
    (what :class:`pathlib.Path` makes of ``file:///abs/path``).

    Raises
    ------
    StoreError
        Another URL scheme (``s3://``, ``gs://`` ...) or a ``file://`` URL naming another host.
    """
    text = os.fspath(value)
    match = _URL.match(text)
    if not match:
        return Path(text)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme != "file":
        raise StoreError(
            f"Expected the {what} to be a path or a file:// URL that every worker sees. Got {text!r}: "
            f"{scheme}:// stores are not supported (the store writes shards through zarr's LocalStore); "
            "mount the bucket as a shared filesystem instead."
        )
    if rest.startswith("//"):
        host, _, tail = rest[2:].partition("/")
        if host not in ("", "localhost"):
            raise StoreError(
                f"Expected a file:// URL without a host (file:///path). Got {text!r}, on host {host!r}."
            )
        rest = "/" + tail
    return Path(urllib.parse.unquote(rest))
