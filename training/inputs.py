"""What evaluating or explaining a checkpoint starts from: its feature version, its splits, its embedder.

``evaluate``, ``explain`` and the demo all open the same three things in the same
order (the cheap refusals first: a version that is not sealed, a split file that is
not a split, then the checkpoint). Training owns the loader, so the helper lives here
and hands the evaluation stage plain inputs (evaluation never imports training).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from siamese_audio.evaluation.planning import SplitSource
from siamese_audio.features.reader import FeatureVersion, open_version
from siamese_audio.manifests.splits import read_split
from siamese_audio.training import checkpoint as _checkpoint
from siamese_audio.training.embedder import TorchEmbedder


@dataclass(frozen=True, eq=False)
class CheckpointInputs:
    """An opened feature version, the split files read from disk and the loaded checkpoint.

    Attributes
    ----------
    version : FeatureVersion
    sources : list of SplitSource
        One per split path, in the order given.
    embedder : TorchEmbedder
    meta : dict
        The checkpoint's description (``load_embedder``'s).
    """

    version: FeatureVersion
    sources: list[SplitSource]
    embedder: TorchEmbedder
    meta: dict[str, Any]


def open_inputs(
    checkpoint: str | os.PathLike[str],
    features: str | os.PathLike[str] | FeatureVersion,
    splits: Iterable[str | os.PathLike[str]] = (),
    *,
    device: str = "auto",
    precision: str = "auto",
) -> CheckpointInputs:
    """Open ``features`` (a version path, or a version already open), read ``splits``, load ``checkpoint``.

    Parameters
    ----------
    checkpoint : path
        ``best.pt`` / ``last.pt`` or a run directory.
    features : path or FeatureVersion
    splits : iterable of paths
        Split manifests (Parquet).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    precision : str
        ``load_embedder``'s: ``"auto"`` (bf16 autocast on CUDA) or ``"fp32"`` (explanations).

    Raises
    ------
    SiameseAudioError
        The version, a split file or the checkpoint refused, with the reason and the path.
    """
    version = features if isinstance(features, FeatureVersion) else open_version(features)
    sources = [SplitSource(split=read_split(path), path=str(path)) for path in splits]
    # Through the module, so that a test (or a user) patching ``checkpoint.load_embedder`` reaches here.
    embedder, meta = _checkpoint.load_embedder(checkpoint, device, precision=precision)
    return CheckpointInputs(version=version, sources=sources, embedder=embedder, meta=meta)
