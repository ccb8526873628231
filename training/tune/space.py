"""Search spaces of ``tune``: the report's Table 2.2 on top of a preset, or a TOML file of ranges and choices.

A space is a base ``(ModelConfig, TrainConfig)`` (a preset plus fixed values)
and a list of :class:`Param` (a choice list or an int/float range of one
field). A TOML file writes them as::

    preset = "tiny"                       # optional; the CLI's --preset wins

    [model]
    fc_units = { choices = [1024, 2048, 4096] }
    dropout_fc = { low = 0.0, high = 0.5 }         # a float range (uniform)
    conv_filters = { choices = [[12, 12], [32, 64, 12]] }
    batch_norm = true                              # a plain value: fixed for every trial

    [train]
    lr = { low = 1e-4, high = 1e-2, log = true }
    pos = { low = 2, high = 6, step = 2 }          # an int range
    ratio = { choices = ["1:1", "1:2", "2:1"] }
    loss = { choices = ["bce", "contrastive"] }

Besides every ModelConfig / TrainConfig field, ``[model]`` takes the derived keys
``conv_layers`` (how many conv blocks, a range or choices), ``conv_layer_filters``
and ``conv_layer_kernels`` (choices drawn for each block independently; kernels
default to the base's, its last one repeated) in place of ``conv_filters`` /
``conv_kernels``: that is Table 2.2's "1-4 conv layers, 12/32/64 filters per layer".

Parameters are conditional, following ``training.config``'s rules, so that no
trial is built that :func:`~siamese_audio.training.config.check_compatible` would
refuse: a searched ``loss`` sets ``batch`` (``LOSSES_OF_BATCH``) and ``head``
(``HEAD_OF_LOSS``); ``merge`` is drawn only for the difference head, ``pos`` and
``ratio`` only for pair batches, ``classes_per_batch`` / ``clips_per_class``
only for class batches, ``margin`` only for the contrastive loss,
``temperature`` only for ``supcon``, ``aux_weight`` only for class batches (a pair
loss trains without the preset's auxiliary classifier), a block's filters only
when the block exists.

:func:`check_space` refuses a space before any trial runs, naming the field:
unknown fields, empty choices, empty ranges, values a config refuses, and
combinations the network or the data cannot take (too many poolings for the
input, crops shorter than the network needs, more positives than a class has
clips, networks over ``max_weights``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from siamese_audio.errors import TrainingError
from siamese_audio.training.config import (
    HEAD_OF_LOSS,
    LOSSES_OF_BATCH,
    ModelConfig,
    TrainConfig,
    neg_count,
    parse_ratio,
    preset,
    read_toml,
)

SECTIONS = ("model", "train")
#: Derived [model] keys: the number of conv blocks and what each block draws.
CONV_LAYERS, LAYER_FILTERS, LAYER_KERNELS = "conv_layers", "conv_layer_filters", "conv_layer_kernels"
DERIVED = (CONV_LAYERS, LAYER_FILTERS, LAYER_KERNELS)
MAX_CONV_LAYERS = 4
#: Largest network a space may hold (weights), about 1.2 GB of float32 before the optimiser's state.
MAX_WEIGHTS = 300_000_000
#: Combinations of the structural parameters checked one by one at most (beyond: each one at its extremes).
MAX_COMBINATIONS = 20_000

#: Table 2.2 of the report (the authors' search space).
TABLE_2_2: dict[str, tuple[Any, ...]] = {
    "model.conv_layers": (1, 2, 3, 4),
    "model.conv_layer_filters": (12, 32, 64),
    "model.pooling": ("avg", "max"),
    "model.fc_units": (1024, 2048, 4096),
    "model.merge": ("abs", "squared"),
    "train.loss": ("bce", "mse", "contrastive"),
    "model.dropout_conv": (0.0, 0.25, 0.5),
    "model.dropout_fc": (0.0, 0.25, 0.5),
    "train.pos": (2, 4, 6),
    "train.ratio": ((1, 1), (1, 2), (1, 3), (2, 1), (3, 1)),
}

_TUPLE_FIELDS = ("conv_filters", "conv_kernels")
_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
#: Fields a searched loss decides.
_FOLLOW_LOSS = ("train.batch", "model.head")
#: Fields whose values decide whether a network and the data fit together (checked in combination).
_STRUCTURAL = frozenset({
    "model.conv_layers", "model.conv_layer_filters", "model.conv_layer_kernels", "model.conv_filters",
    "model.conv_kernels", "model.fc_units", "model.global_pool", "model.time_pool", "model.head",
    "train.loss", "train.batch", "train.pos", "train.ratio", "train.classes_per_batch", "train.clips_per_class",
    "train.crop_frames", "train.freq_mask_bands", "train.time_mask_frames", "train.ways",
})


def _fields(section: str) -> tuple[str, ...]:
    return _MODEL_FIELDS + DERIVED if section == "model" else _TRAIN_FIELDS


@dataclass(frozen=True)
class Param:
    """One searched field: a list of choices, or an int or float range.

    Attributes
    ----------
    key : str
        ``"model.fc_units"``, ``"train.lr"``, or a derived key (``"model.conv_layers"``).
    kind : str
        ``"choice"``, ``"int"`` or ``"float"``.
    choices : tuple
        The values of a ``"choice"`` (tuples for tuple fields, ``(p, n)`` for ratios).
    low, high : int or float
        The bounds of a range, both included.
    step : int or None
        Step of an int range (default 1).
    log : bool
        Draw a range on a log scale.
    """

    key: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float = 0
    high: float = 0
    step: int | None = None
    log: bool = False

    @property
    def section(self) -> str:
        return self.key.split(".", 1)[0]

    @property
    def name(self) -> str:
        return self.key.split(".", 1)[1]

    def candidates(self) -> tuple[Any, ...]:
        """Values to check: every choice; every value of a short int range (16 at most), else its two
        ends (the top one on the step grid); a float range's two ends."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "int":
            step = self.step or 1
            values = range(int(self.low), int(self.high) + 1, step)
            return tuple(values) if len(values) <= 16 else tuple(dict.fromkeys((values[0], values[-1])))
        return (float(self.low), float(self.high))

    def suggest(self, trial: Any, name: str | None = None) -> Any:
        """Draw this parameter in an Optuna trial (under ``name``, default ``key``); decoded value."""
        name = name or self.key
        if self.kind == "choice":
            encoded = [encode(c) for c in self.choices]
            return decode(self.name, trial.suggest_categorical(name, encoded))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def describe(self) -> str:
        if self.kind == "choice":
            return ", ".join(show_value(self.key, c) for c in self.choices)
        step = f" step {self.step}" if self.step and self.step != 1 else ""
        return f"{self.low:g} .. {self.high:g}{step}{' (log)' if self.log else ''}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "kind": self.kind}
        if self.kind == "choice":
            out["choices"] = [encode(c) for c in self.choices]
        else:
            out.update(low=self.low, high=self.high, step=self.step, log=self.log)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Param:
        name = data["key"].split(".", 1)[1]
        if data["kind"] == "choice":
            return cls(data["key"], "choice", tuple(decode(name, c) for c in data["choices"]))
        return cls(data["key"], data["kind"], low=data["low"], high=data["high"], step=data.get("step"),
                   log=bool(data.get("log")))


def encode(value: Any) -> Any:
    """A value as Optuna stores a categorical choice: tuples as ``"64,32,12"``, ratios as ``"1:2"``."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def decode(name: str, value: Any) -> Any:
    """Inverse of :func:`encode` for field ``name``."""
    if name == "ratio" and isinstance(value, str):
        return parse_ratio(value.replace(",", ":"))
    if name in _TUPLE_FIELDS and isinstance(value, str):
        return tuple(int(v) for v in value.split(","))
    return value


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, value)) + ")"
    return str(value)


def show_value(key: str, value: Any) -> str:
    """A value as people write it: ratios ``1:2``, tuples ``(64, 32, 12)``."""
    if key.endswith(".ratio") and isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    return _show(value)


def layer_key(kind: str, index: int) -> str:
    """Optuna name of block ``index``'s draw (0-based): ``model.conv_layer1_filters``."""
    return f"model.conv_layer{index + 1}_{kind}"


@dataclass(frozen=True)
class Space:
    """A search space: the base configs and the searched parameters.

    Attributes
    ----------
    preset : str
        The preset the base configs start from.
    model, train : ModelConfig, TrainConfig
        The base: the preset with the space's fixed values.
    params : tuple[Param, ...]
        The searched fields, drawn in this order (a searched loss first).
    fixed : dict
        ``"model.field" -> value`` set for every trial (as written in the file).
    source : str
        ``"Table 2.2"`` or the TOML file's path.
    notes : tuple[str, ...]
        What the default space left out for this data, and why.
    """

    preset: str
    model: ModelConfig
    train: TrainConfig
    params: tuple[Param, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = "Table 2.2"
    notes: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)

    def param(self, key: str) -> Param | None:
        return next((p for p in self.params if p.key == key), None)

    def _ordered(self) -> list[Param]:
        first = [p for p in self.params if p.key in ("train.loss", "model.conv_layers")]
        return first + [p for p in self.params if p not in first]

    def suggest(self, trial: Any) -> tuple[ModelConfig, TrainConfig]:
        """Draw one trial's configs (define-by-run: conditional parameters only when they apply)."""
        values: dict[str, Any] = {}
        for param in self._ordered():
            if param.key in (f"model.{LAYER_FILTERS}", f"model.{LAYER_KERNELS}"):
                kind = "filters" if param.key.endswith("filters") else "kernels"
                for i in range(self._layers(values)):
                    values[layer_key(kind, i)] = param.suggest(trial, layer_key(kind, i))
            elif self._applies(param.key, values):
                values[param.key] = param.suggest(trial)
        return self.configs(values)

    def _layers(self, values: Mapping[str, Any]) -> int:
        return int(values.get("model.conv_layers", len(self.model.conv_filters)))

    def _loss(self, values: Mapping[str, Any]) -> str:
        return values.get("train.loss", self.train.loss)

    def _applies(self, key: str, values: Mapping[str, Any]) -> bool:
        """Whether field ``key`` is used by a trial whose loss (and layers) ``values`` holds."""
        loss = self._loss(values)
        batch = _batch_of(loss)
        head = HEAD_OF_LOSS[loss] if "train.loss" in values else self.model.head
        rule = {"model.merge": head == "difference", "train.pos": batch == "pairs", "train.ratio": batch == "pairs",
                "train.margin": loss == "contrastive", "train.temperature": loss == "supcon",
                "train.classes_per_batch": batch == "classes", "train.clips_per_class": batch == "classes",
                "train.aux_weight": batch == "classes"}
        return rule.get(key, True)

    def configs(self, values: Mapping[str, Any]) -> tuple[ModelConfig, TrainConfig]:
        """The configs of one point: the base, the drawn values, and what a drawn loss or layer count implies.

        ``values`` maps keys to decoded values (Optuna's ``trial.params`` are decoded here too);
        keys a trial did not draw keep the base's value.

        Raises
        ------
        TrainingError
            A value a config refuses (the message names the field).
        """
        values = {k: decode(k.split(".", 1)[1], v) for k, v in values.items()}
        model: dict[str, Any] = {}
        train: dict[str, Any] = {}
        for key, value in values.items():
            section, name = key.split(".", 1)
            if name.startswith("conv_layer") and name != CONV_LAYERS:
                continue
            if name != CONV_LAYERS:
                (model if section == "model" else train)[name] = value
        if "model.conv_layers" in values or any(k.startswith("model.conv_layer") for k in values):
            n = self._layers(values)
            filters = self.model.conv_filters
            kernels = self.model.conv_kernels
            model["conv_filters"] = tuple(int(values.get(layer_key("filters", i), filters[min(i, len(filters) - 1)]))
                                          for i in range(n))
            model["conv_kernels"] = tuple(int(values.get(layer_key("kernels", i), kernels[min(i, len(kernels) - 1)]))
                                          for i in range(n))
        if "train.loss" in values:
            train["batch"] = _batch_of(values["train.loss"])
            model["head"] = HEAD_OF_LOSS[values["train.loss"]]
            if train["batch"] != "classes" and "train.aux_weight" not in values:
                train["aux_weight"] = 0.0  # the auxiliary classifier needs class batches (pair losses train without it)
        try:
            return dataclasses.replace(self.model, **model), dataclasses.replace(self.train, **train)
        except TrainingError as exc:
            raise TrainingError(f"{_name_values(values)}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``tune.json`` keeps, so that ``--resume`` draws from the same space)."""
        return {"preset": self.preset, "model": _jsonable(dataclasses.asdict(self.model)),
                "train": _jsonable(dataclasses.asdict(self.train)), "params": [p.to_dict() for p in self.params],
                "fixed": _jsonable(self.fixed), "source": self.source, "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Space:
        from siamese_audio.training.config import model_config_from_dict, train_config_from_dict

        return cls(preset=data["preset"], model=model_config_from_dict(data["model"]),
                   train=train_config_from_dict(data["train"]),
                   params=tuple(Param.from_dict(p) for p in data["params"]), fixed=dict(data.get("fixed", {})),
                   source=data.get("source", ""), notes=tuple(data.get("notes", ())))

    def describe(self) -> list[str]:
        """One line per searched parameter (and per fixed value)."""
        lines = [f"{p.key}: {p.describe()}" for p in self.params]
        lines += [f"{k} = {v!r} (fixed)" for k, v in self.fixed.items()]
        return lines


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def _batch_of(loss: str) -> str:
    return next(b for b, losses in LOSSES_OF_BATCH.items() if loss in losses)


def _name_values(values: Mapping[str, Any]) -> str:
    shown = ", ".join(f"[{k.split('.', 1)[0]}] {k.split('.', 1)[1]} = {show_value(k, v)}" for k, v in values.items())
    return f"space point {shown}" if shown else "space base"


# ----------------------------------------------------------------------------- the default space


def default_space(preset_name: str, *, shape: tuple[int, int], train_rows: Mapping[str, Any] | None = None,
                  max_weights: int = MAX_WEIGHTS) -> Space:
    """Table 2.2 on top of preset ``preset_name``, for inputs of ``shape`` and these training classes.

    The loss choices are Table 2.2's (pair batches, difference head) plus the preset's own (the CPU
    presets' class-batch ``supcon`` with its cosine head). What the input or the data cannot take
    is left out and said in :attr:`Space.notes`: conv layer counts whose poolings the input cannot
    hold (or whose largest network exceeds ``max_weights``); positives a training class has too few
    clips for; ratios needing more negative classes than the split has.
    """
    model, train = preset(preset_name)
    table = dict(TABLE_2_2)
    notes: list[str] = []
    losses = tuple(table["train.loss"]) + ((train.loss,) if train.loss not in table["train.loss"] else ())
    table["train.loss"] = losses
    layers = []
    for n in table["model.conv_layers"]:
        kernels = tuple(model.conv_kernels[min(i, len(model.conv_kernels) - 1)] for i in range(n))
        candidate = dataclasses.replace(model, conv_filters=(max(table["model.conv_layer_filters"]),) * n,
                                        conv_kernels=kernels, fc_units=max(table["model.fc_units"]))
        try:
            candidate.embedding_input_shape(shape)
        except TrainingError:
            notes.append(f"conv_layers {n}: {n} poolings do not fit the input {tuple(shape)}"
                         + (f" (time-pooled by {model.time_pool})" if model.time_pool > 1 else ""))
            continue
        if train.crop_frames and candidate.min_frames() > train.crop_frames:
            notes.append(f"conv_layers {n}: needs crops of {candidate.min_frames()} frames, the preset crops "
                         f"{train.crop_frames}")
            continue
        weights = count_weights(candidate, shape)
        if weights > max_weights:
            notes.append(f"conv_layers {n}: its largest network holds {weights:,} weights (> {max_weights:,})")
            continue
        layers.append(n)
    if not layers:
        raise TrainingError(f"Default space on preset {preset_name!r}: no number of conv layers (1-4) fits inputs "
                            f"of shape {tuple(shape)}: " + "; ".join(notes))
    table["model.conv_layers"] = tuple(layers)
    if train_rows is not None:
        fewest = min(len(r) for r in train_rows.values())
        n_classes = len(train_rows)
        pos = tuple(p for p in table["train.pos"] if p + 1 <= fewest)
        if len(pos) < len(table["train.pos"]):
            notes.append(f"pos {sorted(set(table['train.pos']) - set(pos))}: a training class has only {fewest} clips")
        if not pos:
            pos = (max(1, fewest - 1),)
        ratios = tuple(r for r in table["train.ratio"] if neg_count(max(pos), r) + 1 <= n_classes)
        if len(ratios) < len(table["train.ratio"]):
            left = [f"{p}:{n}" for p, n in table["train.ratio"] if (p, n) not in ratios]
            notes.append(f"ratio {left}: with pos {max(pos)} they need more than the {n_classes} training classes")
        table["train.pos"], table["train.ratio"] = pos, ratios or ((1, 1),)
    params = [Param("model.conv_layers", "int", low=min(layers), high=max(layers)) if len(layers) > 1 else
              Param("model.conv_layers", "choice", tuple(layers))]
    params += [Param(key, "choice", tuple(values)) for key, values in table.items() if key != "model.conv_layers"]
    return Space(preset=preset_name, model=model, train=train, params=tuple(params), source="Table 2.2",
                 notes=tuple(notes))


def count_weights(model: ModelConfig, shape: tuple[int, int]) -> int:
    """Weights of the network of ``model`` on inputs of ``shape`` (built on the meta device: no memory)."""
    import torch

    from siamese_audio.training.model import SiameseNet

    with torch.device("meta"):
        net = SiameseNet(model, tuple(shape))
    return int(sum(p.numel() for p in net.parameters()))


# ----------------------------------------------------------------------------- TOML files


def load_space(path: str | Path, *, preset_name: str | None = None) -> Space:
    """Read a space file (see the module docstring); ``preset_name`` wins over the file's ``preset``.

    Raises
    ------
    TrainingError
        Unreadable file, unknown table or field, an empty choice or range, a value of the wrong
        kind; each message names the field.
    """
    path = Path(path)
    data = read_toml(path, "Space file")
    unknown = sorted(set(data) - {"preset", *SECTIONS})
    if unknown:
        raise TrainingError(f"Space file {path}: expected top-level keys among ['model', 'preset', 'train']. "
                            f"Got unknown {unknown}.")
    name = preset_name or data.get("preset", "report-audiomnist")
    model, train = preset(name)
    params: list[Param] = []
    fixed: dict[str, Any] = {}
    for section in SECTIONS:
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise TrainingError(f"Space file {path}: expected [{section}] to be a table.")
        for field_name, spec in table.items():
            key = f"{section}.{field_name}"
            where = f"Space file {path} [{section}] {field_name}"
            if field_name not in _fields(section):
                raise TrainingError(f"{where}: unknown field; expected one of {sorted(_fields(section))}.")
            if isinstance(spec, dict):
                params.append(parse_param(key, spec, where))
            elif field_name in DERIVED:
                raise TrainingError(f"{where}: expected a table of choices or a range, e.g. "
                                    "{ choices = [12, 32, 64] }.")
            else:
                fixed[key] = spec
    _check_keys(params, fixed, path)
    try:
        model = _apply_fixed(model, {k.split(".", 1)[1]: v for k, v in fixed.items() if k.startswith("model.")})
        train = _apply_fixed(train, {k.split(".", 1)[1]: v for k, v in fixed.items() if k.startswith("train.")})
    except TrainingError as exc:
        raise TrainingError(f"Space file {path}: {exc}") from None
    return Space(preset=name, model=model, train=train, params=tuple(params), fixed=fixed, source=str(path))


def _apply_fixed(base: Any, values: Mapping[str, Any]) -> Any:
    out = {}
    for name, value in values.items():
        if name == "ratio":
            value = parse_ratio(value)
        elif isinstance(value, list):
            value = tuple(value)
        out[name] = value
    return dataclasses.replace(base, **out)


def parse_param(key: str, spec: Mapping[str, Any], where: str) -> Param:
    """One searched field from its TOML table: ``{choices = [...]}`` or ``{low, high[, step][, log]}``."""
    name = key.split(".", 1)[1]
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise TrainingError(f"{where}: a choice takes only 'choices'. Got also {extra}.")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise TrainingError(f"{where}: expected a non-empty list of choices. Got {choices!r}.")
        values = tuple(_choice_value(name, c, where) for c in choices)
        if len(set(map(encode, values))) < len(values):
            raise TrainingError(f"{where}: choices repeat a value: {choices!r}.")
        return Param(key, "choice", values)
    if "low" in spec or "high" in spec:
        extra = sorted(set(spec) - {"low", "high", "step", "log"})
        if extra or "low" not in spec or "high" not in spec:
            raise TrainingError(f"{where}: a range takes 'low' and 'high' (and optionally 'step', 'log'). "
                                f"Got {sorted(spec)}.")
        low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
        if not numbers or not all(math.isfinite(v) for v in (low, high)):
            raise TrainingError(f"{where}: expected numbers for low and high. Got {low!r} and {high!r}.")
        if not isinstance(log, bool):
            raise TrainingError(f"{where}: expected log = true or false. Got {log!r}.")
        kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
        if name in (*_TUPLE_FIELDS, "ratio") or (name in DERIVED and kind == "float"):
            raise TrainingError(f"{where}: a range cannot draw a {name}; give {{ choices = [...] }}.")
        if kind == "int" and high < low or kind == "float" and not high > low:
            raise TrainingError(f"{where}: empty range: expected low < high. Got low {low!r}, high {high!r}.")
        if step is not None and (kind == "float" or not isinstance(step, int) or isinstance(step, bool) or step < 1):
            raise TrainingError(f"{where}: expected step to be a positive integer on an int range. Got {step!r}.")
        if log and (low <= 0 or step not in (None, 1)):
            raise TrainingError(f"{where}: a log range needs low > 0 and no step. Got low {low!r}, step {step!r}.")
        return Param(key, kind, low=low, high=high, step=step, log=log)
    raise TrainingError(f"{where}: expected {{ choices = [...] }} or {{ low = ..., high = ... }}. Got {dict(spec)!r}.")


def _choice_value(name: str, value: Any, where: str) -> Any:
    if name == "ratio":
        try:
            return parse_ratio(value)
        except TrainingError as exc:
            raise TrainingError(f"{where}: {exc}") from None
    if name in _TUPLE_FIELDS:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise TrainingError(f"{where}: expected each choice to be a list of integers, e.g. [64, 32, 12]. "
                                f"Got {value!r}.")
        return tuple(value)
    if isinstance(value, (list, dict)):
        raise TrainingError(f"{where}: expected each choice to be a single value. Got {value!r}.")
    return value


def _check_keys(params: list[Param], fixed: Mapping[str, Any], path: Path) -> None:
    keys = {p.key for p in params}
    derived = {f"model.{d}" for d in DERIVED} & keys
    if derived and ({"model.conv_filters", "model.conv_kernels"} & (keys | set(fixed))):
        raise TrainingError(
            f"Space file {path} [model]: conv_layers / conv_layer_filters / conv_layer_kernels draw the blocks; "
            "expected no conv_filters or conv_kernels beside them.")
    if derived - {"model.conv_layers"} and "model.conv_layers" not in keys:
        raise TrainingError(f"Space file {path} [model] {sorted(derived)[0].split('.')[1]}: expected "
                            "conv_layers beside it (how many blocks draw it).")
    if "train.loss" in keys:
        clash = [k for k in _FOLLOW_LOSS if k in keys or k in fixed]
        if clash:
            raise TrainingError(
                f"Space file {path} [{clash[0].split('.')[0]}] {clash[0].split('.')[1]}: the searched loss sets "
                "batch and head (each loss trains one batch kind and one head); remove it from the space.")


# ----------------------------------------------------------------------------- validation


def check_space(space: Space, data: Any, *, max_weights: int = MAX_WEIGHTS) -> None:
    """Refuse a space some trial of which could not be built or trained on ``data``, before any trial runs.

    First every value of every parameter must make valid configs (each config's own checks);
    then every combination of the structural parameters' values (choices, range ends, a
    layer draw's smallest and largest) goes through
    :func:`~siamese_audio.training.loop.check_run_data` (which calls ``check_compatible``)
    and the weight bound. A failing combination is blamed on the parameter whose other
    values would pass, else on the base (the preset and the fixed values).

    Parameters
    ----------
    data : training.loop.RunData
        The training and validation classes (their rows are counted, never read).

    Raises
    ------
    TrainingError
        Naming the field (and value) at fault.
    """
    from siamese_audio.training.loop import check_run_data

    weights: dict[ModelConfig, int] = {}

    def check(values: Mapping[str, Any]) -> None:
        model, train = space.configs(_point(space, values))
        check_run_data(data, model, train)
        if model not in weights:
            weights[model] = count_weights(model, data.shape)
        if weights[model] > max_weights:
            raise TrainingError(f"the network holds {weights[model]:,} weights; expected at most {max_weights:,} "
                                "(few poolings leave large maps to flatten into the FC layer)")

    loss = space.param("train.loss")
    losses = loss.candidates() if loss is not None else (space.train.loss,)
    for param in space.params:
        if not any(space._applies(param.key, {"train.loss": v} if loss is not None else {}) for v in losses):
            raise TrainingError(f"Space {space.source} [{param.section}] {param.name}: no trial would use it (the "
                                f"loss {', '.join(map(repr, losses))} does not); search a loss that does, or "
                                "remove it.")
        for value in param.candidates():
            try:
                space.configs(_point(space, {param.key: value}))
            except TrainingError as exc:
                raise TrainingError(f"Space {space.source} [{param.section}] {param.name} = "
                                    f"{show_value(param.key, value)}: {_strip(exc)}") from None
    structural = [p for p in space.params if p.key in _STRUCTURAL]
    for values in _combinations(structural):
        try:
            check(values)
        except TrainingError as exc:
            raise TrainingError(_blame(space, structural, values, exc, check)) from None


def _blame(space: Space, params: list[Param], values: dict[str, Any], exc: Exception, check: Any) -> str:
    """Name the parameter(s) of a failing combination whose other values pass; else the base."""
    culprits = []
    for param in params:
        if param.key not in values:
            continue
        for other in _axis(param):
            if other == values[param.key]:
                continue
            try:
                check({**values, param.key: other})
            except TrainingError:
                continue
            culprits.append(param.key)
            break
    named = ", ".join(f"[{k.split('.', 1)[0]}] {k.split('.', 1)[1]} = {show_value(k, values[k])}" for k in culprits)
    reason = _strip(exc)
    if len(culprits) == 1:
        others = {k: v for k, v in values.items() if k != culprits[0]}
        context = f" (with {_name_values(others).removeprefix('space point ')})" if others else ""
        return f"Space {space.source} {named}: cannot train on this data{context}: {reason}"
    if culprits:
        return f"Space {space.source}: {named} cannot train together on this data: {reason}"
    return (f"Space {space.source}: no value of the searched fields helps; the base (preset {space.preset!r} "
            f"with the fixed values) cannot train on this data: {reason}")


def _strip(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("space point ") else text


def _point(space: Space, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values a trial would draw: layer draws for every block, a loss for loss-only fields, nothing
    that does not apply (``merge`` without the difference head, ``pos`` without pair batches, ...)."""
    values = dict(values)
    loss = space.param("train.loss")
    for key in list(values):
        if key.startswith("model.conv_layer") or key == "train.loss" or space._applies(key, values):
            continue
        fitting = [v for v in (loss.candidates() if loss else ()) if space._applies(key, {"train.loss": v})]
        if fitting and "train.loss" not in values:
            values["train.loss"] = fitting[0]
    out: dict[str, Any] = {}
    layers = space.param("model.conv_layers")
    for key, value in values.items():
        if key in (f"model.{LAYER_FILTERS}", f"model.{LAYER_KERNELS}"):
            kind = "filters" if key.endswith("filters") else "kernels"
            n = values.get("model.conv_layers", max(layers.candidates()) if layers else len(space.model.conv_filters))
            out["model.conv_layers"] = n
            out.update({layer_key(kind, i): value for i in range(int(n))})
        elif space._applies(key, values):
            out[key] = value
    return out


def _axis(param: Param) -> tuple[Any, ...]:
    values = param.candidates()
    if param.key in (f"model.{LAYER_FILTERS}", f"model.{LAYER_KERNELS}"):
        values = tuple(dict.fromkeys((min(values), max(values))))
    return values


def _combinations(params: list[Param]) -> Iterator[dict[str, Any]]:
    """Every combination of the parameters' candidate values; when there are too many, each parameter's
    values with the others at their first value. With no parameter: the base alone."""
    axes = [[(p.key, v) for v in _axis(p)] for p in params]
    if math.prod(len(a) for a in axes) <= MAX_COMBINATIONS:
        for combo in itertools.product(*axes):
            yield dict(combo)
        return
    first = {p.key: _axis(p)[0] for p in params}
    for p in params:
        for value in _axis(p):
            yield {**first, p.key: value}


__all__ = ["CONV_LAYERS", "DERIVED", "LAYER_FILTERS", "LAYER_KERNELS", "MAX_WEIGHTS", "TABLE_2_2", "Param", "Space",
           "check_space", "count_weights", "decode", "default_space", "encode", "layer_key", "load_space",
           "parse_param", "show_value"]
