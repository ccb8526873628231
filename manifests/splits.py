"""Class-split manifests: which classes train, validate and test a few-shot model.

A split assigns every class of a dataset to exactly one of ``"train"``,
``"validation"`` and ``"test"``. It refers to a dataset's classes, not to one
feature version, so the same split applies to every version of that dataset;
:func:`manifests.split_catalog.clip_rows` joins it with one version's catalog to get store rows.

Schemes
-------
``report``
    The report's split (Table 2.3): fixed test classes, validation classes
    drawn with :data:`REPORT_VALIDATION_SEED`, sizes 50/5/5 (AudioMNIST) and
    40/5/5 (ESC-50).
``random``
    A seeded regenerated split of any sizes (default as the report's).
``metaaudio``
    ESC-50 only: the MetaAudio benchmark's 35/5/10 split.
``file``
    Explicit class lists read by :func:`manifests.split_lists.split_from_file` (CSV or JSON).

Seeded draws do not depend on NumPy's generators (whose streams may change
between releases): classes are ordered by ``blake2b("{seed}:{class}")`` and
taken from the front of that order, so a seed gives the same split on every
platform and library version.

On disk (:func:`write_split`) a split is a Parquet file with one row per
class and the columns ``dataset``, ``class``, ``split`` (rows ordered train,
validation, test, then by class); the key-value metadata hold ``scheme``,
``seed`` ("" when none) and ``split_id``. Nothing time-dependent is written,
so the same split gives the same bytes.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio.errors import SplitError
from siamese_audio.files import MIB, read_regular, refuse_inside_version, shorten, write_parquet_atomic
from siamese_audio.manifests.classes import known_classes

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SCHEMES: tuple[str, ...] = ("report", "random", "metaaudio", "file")

DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {"audiomnist": (50, 5, 5), "esc50": (40, 5, 5)}

REPORT_TEST: dict[str, tuple[str, ...]] = {
    "audiomnist": ("04", "27", "46", "55", "56"),
    "esc50": ("glass_breaking", "church_bells", "frog", "laughing", "door_wood_creaks"),
}
REPORT_VALIDATION_SEED = 0
"""Seed of the report's validation draw (the report does not name its validation classes).

The validation classes are the first 5 of the non-test classes in the seeded
order of :func:`seeded_order` with this seed. That gives AudioMNIST speakers
11, 20, 24, 44, 57 and ESC-50 car_horn, clapping, cow, crow, helicopter
(checked by the tests).
"""

METAAUDIO_VALIDATION: tuple[str, ...] = ("crackling_fire", "clock_alarm", "coughing", "hen", "breathing")
METAAUDIO_TEST: tuple[str, ...] = (
    "vacuum_cleaner", "sneezing", "thunderstorm", "crow", "glass_breaking",
    "church_bells", "cow", "dog", "airplane", "engine",
)

MIN_CLIPS = 2
"""Stored clips a class needs: a one-shot task takes a query and a support from it."""

_FORMAT = "siamese-audio-split/1"


@dataclass(frozen=True)
class Split:
    """An assignment of a dataset's classes to train / validation / test.

    Attributes
    ----------
    dataset : str
        ``"audiomnist"`` or ``"esc50"``.
    scheme : str
        One of :data:`SCHEMES`.
    seed : int or None
        Seed of the draw (``None`` for explicit class lists).
    classes : dict of str to list of str
        ``{"train": [...], "validation": [...], "test": [...]}``; each list is
        sorted, the three are disjoint.

    Raises
    ------
    SplitError
        The lists are not exactly the three splits, hold non-strings or
        duplicates, or share a class.
    """

    dataset: str
    scheme: str
    seed: int | None
    classes: dict[str, list[str]] = field(repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise SplitError(f"Expected a split scheme among {list(SCHEMES)}. Got {self.scheme!r}.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise SplitError(f"Expected the split seed to be an integer or None. Got {self.seed!r}.")
        object.__setattr__(self, "classes", _parse_classes(self.classes))

    @property
    def split_id(self) -> str:
        """Hash of the sorted (class, split) assignment: same assignment, same id."""
        text = "\n".join(f"{c}\t{s}" for c, s in self.assignment())
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Number of (train, validation, test) classes."""
        return tuple(len(self.classes[s]) for s in SPLITS)  # type: ignore[return-value]

    def assignment(self) -> list[tuple[str, str]]:
        """Sorted (class, split) pairs."""
        return sorted((c, s) for s in SPLITS for c in self.classes[s])

    def all_classes(self) -> list[str]:
        """Every class of the split, sorted."""
        return sorted(c for s in SPLITS for c in self.classes[s])

    def to_json(self) -> dict[str, Any]:
        """JSON-able summary: split_id, dataset, scheme, seed, sizes, classes."""
        return {
            "split_id": self.split_id, "dataset": self.dataset, "scheme": self.scheme,
            "seed": self.seed, "sizes": list(self.sizes),
            "classes": {s: list(self.classes[s]) for s in SPLITS},
        }


def _parse_classes(classes: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """Check the structure of a class assignment; return sorted copies of its lists."""
    if not isinstance(classes, Mapping):
        raise SplitError(f"Expected the split's classes as a mapping split → class list. Got {type(classes).__name__}.")
    if set(classes) != set(SPLITS):
        raise SplitError(f"Expected the splits {list(SPLITS)}. Got {sorted(map(str, classes))}.")
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name in SPLITS:
        values = classes[name]
        if isinstance(values, (str, bytes)):
            raise SplitError(f"Expected split {name!r} to be a list of class ids. Got the string {values!r}.")
        values = list(values)
        bad = [v for v in values if not isinstance(v, str) or not v]
        if bad:
            raise SplitError(
                f"Expected class ids to be non-empty strings (e.g. \"04\", \"dog\"). "
                f"Split {name!r} holds {bad[:5]!r}."
            )
        dupes = sorted(c for c, n in Counter(values).items() if n > 1)
        if dupes:
            raise SplitError(f"Split {name!r} lists these classes more than once: {dupes}.")
        shared = sorted(f"{c!r} ({seen[c]} and {name})" for c in values if c in seen)
        if shared:
            raise SplitError(f"Expected disjoint splits. These classes are in two splits: {', '.join(shared)}.")
        seen.update((c, name) for c in values)
        out[name] = sorted(values)
    return out


# --------------------------------------------------------------------------- schemes


def seeded_order(classes: Iterable[str], seed: int) -> list[str]:
    """Classes in a seeded pseudo-random order, stable across platforms and versions.

    The order sorts by ``blake2b(f"{seed}:{class}")``; it depends only on the
    set of classes and the seed.
    """
    def key(c: str) -> bytes:
        return hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=16).digest()

    return sorted(set(classes), key=lambda c: (key(c), c))


def parse_sizes(text: str | Sequence[int]) -> tuple[int, int, int]:
    """Parse ``"TRAIN/VAL/TEST"`` (e.g. ``"40/5/5"``) into three non-negative integers."""
    if isinstance(text, str):
        parts = text.split("/")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
    else:
        values = tuple(text)
    if len(values) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise SplitError(f"Expected sizes as TRAIN/VALIDATION/TEST non-negative integers (e.g. 40/5/5). Got {text!r}.")
    return values  # type: ignore[return-value]


def _check_sizes(sizes: tuple[int, int, int], n_classes: int, where: str) -> None:
    if sum(sizes) != n_classes:
        raise SplitError(
            f"Expected sizes that add up to the {n_classes} classes of {where}. "
            f"Got {'/'.join(map(str, sizes))} = {sum(sizes)}."
        )


def make_report_split(dataset: str) -> Split:
    """The report's split: 50/5/5 for AudioMNIST, 40/5/5 for ESC-50.

    Test classes are those the report names (Table 2.3): AudioMNIST speakers
    04, 27, 46, 55, 56; ESC-50 glass_breaking, church_bells, frog, laughing,
    door_wood_creaks. The report does not name its validation classes: they
    are the first 5 non-test classes of :func:`seeded_order` with
    :data:`REPORT_VALIDATION_SEED` (0), i.e. AudioMNIST 11, 20, 24, 44, 57 and
    ESC-50 car_horn, clapping, cow, crow, helicopter. The rest train. The split's ``seed`` is recorded as 0.
    """
    known = known_classes(dataset)
    test = list(REPORT_TEST[dataset])
    rest = [c for c in known if c not in test]
    validation = seeded_order(rest, REPORT_VALIDATION_SEED)[:5]
    train = [c for c in rest if c not in validation]
    return Split(dataset, "report", REPORT_VALIDATION_SEED, {"train": train, "validation": validation, "test": test})


def make_random_split(
    dataset: str,
    *,
    seed: int,
    sizes: tuple[int, int, int] | str | None = None,
    classes: Iterable[str] | None = None,
) -> Split:
    """A seeded regenerated split.

    Parameters
    ----------
    dataset : str
    seed : int
        Same seed and classes → same split.
    sizes : (train, validation, test) or "TRAIN/VAL/TEST", optional
        Default :data:`DEFAULT_SIZES` of the dataset; must add up to the number of classes.
    classes : iterable of str, optional
        The classes to split (e.g. those stored in a feature version); default
        the dataset's known classes.

    Raises
    ------
    SplitError
        Unknown dataset, a non-integer seed, non-string classes, sizes that do
        not add up, or fewer than 2 train or test classes (validation: 0 or >= 2).

    Notes
    -----
    Test classes are the first ``sizes[2]`` of :func:`seeded_order`, validation
    the next ``sizes[1]``, train the rest.
    """
    known = known_classes(dataset)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SplitError(f"Expected an integer seed for a random split. Got {seed!r}.")
    given = list(known if classes is None else classes)
    bad = [c for c in given if not isinstance(c, str) or not c]
    if bad:
        raise SplitError(f"Expected class ids to be non-empty strings (e.g. \"04\"). Got {bad[:5]!r}.")
    pool = sorted(set(given))
    sizes = DEFAULT_SIZES[dataset] if sizes is None else parse_sizes(sizes)
    where = dataset if classes is None else "the given class list"
    _check_sizes(sizes, len(pool), where)
    order = seeded_order(pool, seed)
    _, n_val, n_test = sizes
    split = Split(dataset, "random", seed, {
        "test": order[:n_test], "validation": order[n_test : n_test + n_val], "train": order[n_test + n_val :],
    })
    validate(split, classes=pool)
    return split


def make_metaaudio_split(dataset: str = "esc50") -> Split:
    """The MetaAudio benchmark's ESC-50 split (35/5/10), to compare with published numbers.

    Validation: crackling_fire, clock_alarm, coughing, hen, breathing. Test:
    vacuum_cleaner, sneezing, thunderstorm, crow, glass_breaking, church_bells,
    cow, dog, airplane, engine. Train: the other 35 categories.
    """
    if dataset != "esc50":
        raise SplitError(f"Expected dataset 'esc50' for the metaaudio scheme (it is an ESC-50 split). Got {dataset!r}.")
    held = set(METAAUDIO_VALIDATION) | set(METAAUDIO_TEST)
    train = [c for c in known_classes(dataset) if c not in held]
    return Split(dataset, "metaaudio", None, {
        "train": train, "validation": list(METAAUDIO_VALIDATION), "test": list(METAAUDIO_TEST),
    })


# --------------------------------------------------------------------------- validation


def validate(
    split: Split,
    *,
    classes: Iterable[str] | None = None,
    sizes: tuple[int, int, int] | str | None = None,
) -> None:
    """Check that ``split`` covers exactly the dataset's classes.

    Parameters
    ----------
    split : Split
        Already disjoint (checked when a :class:`Split` is made).
    classes : iterable of str, optional
        The classes it must cover; default the dataset's known classes.
    sizes : (train, validation, test) or "TRAIN/VAL/TEST", optional
        Expected sizes; they must add up to the number of classes.

    Raises
    ------
    SplitError
        A class is unknown (the message names the closest known ones), a class
        is missing, the sizes do not add up or differ, or train or test has
        fewer than 2 classes (validation: 0 or at least 2).
    """
    universe = sorted(set(known_classes(split.dataset) if classes is None else classes))
    where = split.dataset if classes is None else "the given class list"
    known = set(universe)
    unknown = [c for c in split.all_classes() if c not in known]
    if unknown:
        hints = []
        for c in unknown[:10]:
            c = shorten(c, 80)
            close = difflib.get_close_matches(c, universe, n=3, cutoff=0.5)
            hints.append(f"{c!r} (closest: {', '.join(close)})" if close else f"{c!r} (no close match)")
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise SplitError(f"Unknown classes for {where}: {'; '.join(hints)}{more}.")
    missing = sorted(known - set(split.all_classes()))
    if missing:
        raise SplitError(
            f"Expected the split to cover all {len(universe)} classes of {where}. "
            f"{len(missing)} are in no split: {missing[:20]}{' ...' if len(missing) > 20 else ''}."
        )
    if sizes is not None:
        sizes = parse_sizes(sizes)
        _check_sizes(sizes, len(universe), where)
        if sizes != split.sizes:
            raise SplitError(
                f"Expected sizes {'/'.join(map(str, sizes))}. Got {'/'.join(map(str, split.sizes))}."
            )
    n_train, n_val, n_test = split.sizes
    if n_train < 2 or n_test < 2 or n_val == 1:
        raise SplitError(
            "Expected at least 2 train and 2 test classes, and 0 or at least 2 validation classes "
            f"(a one-shot task needs 2 ways). Got {n_train}/{n_val}/{n_test}."
        )


# --------------------------------------------------------------------------- Parquet

#: A manifest holds one row per class: 64 MiB is some million classes.
MAX_MANIFEST_BYTES = 64 * MIB


def write_split(split: Split, path: str | os.PathLike[str]) -> Path:
    """Write ``split`` as Parquet (same split → same bytes); return the path.

    Written to a temporary sibling and renamed, so a failed write leaves nothing.
    """
    import pyarrow as pa

    path = Path(path)
    refuse_inside_version(path, option="split manifest", error=SplitError)
    rows = [(split.dataset, c, s) for s in SPLITS for c in split.classes[s]]
    schema = pa.schema(
        [("dataset", pa.string()), ("class", pa.string()), ("split", pa.string())],
        metadata={
            b"format": _FORMAT.encode(),
            b"scheme": split.scheme.encode(),
            b"seed": ("" if split.seed is None else str(split.seed)).encode(),
            b"split_id": split.split_id.encode(),
        },
    )
    table = pa.table({name: [r[i] for r in rows] for i, name in enumerate(schema.names)}, schema=schema)
    if path.parent and not path.parent.is_dir():
        raise SplitError(f"{path}: expected an existing directory for the split manifest. {path.parent} does not exist.")
    write_parquet_atomic(path, table, compression="none", write_statistics=False)
    return path


def read_split(path: str | os.PathLike[str]) -> Split:
    """Read a split manifest written by :func:`write_split`.

    Raises
    ------
    SplitError
        The file is missing or not a split manifest, mixes datasets, or its
        recorded split id does not match its rows (the file was edited).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        data = read_regular(path, max_bytes=MAX_MANIFEST_BYTES, what="split manifest")
    except FileNotFoundError:
        raise SplitError(f"{path}: expected a split manifest (Parquet). It does not exist.") from None
    except OSError as exc:
        raise SplitError(f"{path}: expected a split manifest (Parquet). Cannot read it: "
                         f"{exc.strerror or exc}.") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise SplitError(f"{path}: expected a split manifest (Parquet). Cannot read it ({exc}).") from exc
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    columns = ("dataset", "class", "split")
    if meta.get("format") != _FORMAT or any(c not in table.column_names for c in columns):
        raise SplitError(
            f"{path}: expected a split manifest ({_FORMAT}, columns {list(columns)}). "
            f"Found format {meta.get('format')!r}, columns {table.column_names}."
        )
    data = {c: table.column(c).to_pylist() for c in columns}
    datasets = sorted(set(data["dataset"]))
    if len(datasets) != 1:
        raise SplitError(f"{path}: expected the classes of one dataset. Found {datasets}.")
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, (cls, name) in enumerate(zip(data["class"], data["split"])):
        if name not in lists:
            raise SplitError(f"{path}: row {i}: expected a split among {list(SPLITS)}. Got {name!r}.")
        lists[name].append(cls)
    seed_text = meta.get("seed", "")
    try:
        seed = int(seed_text) if seed_text else None
    except ValueError:
        raise SplitError(f"{path}: expected an integer seed in the metadata. Got {seed_text!r}.") from None
    try:
        split = Split(datasets[0], meta.get("scheme", ""), seed, lists)
    except SplitError as exc:
        raise SplitError(f"{path}: {exc}") from None
    if meta.get("split_id") != split.split_id:
        raise SplitError(
            f"{path}: the recorded split id {meta.get('split_id')!r} does not match its rows "
            f"({split.split_id}); the file was edited. Regenerate it with `siamese-audio split`."
        )
    return split
